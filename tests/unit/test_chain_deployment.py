"""The deployment file is validated like any untrusted input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from allmende.chain.deployment import Deployment
from allmende.errors import ConfigError

REGISTRY = "0x5fbdb2315678afecb367f032d93f642f64180aa3"
JOBS = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"


def valid() -> dict:
    return {
        "chain_id": 31337,
        "rpc_url": "http://127.0.0.1:8545",
        "deploy_block": 1,
        "registry": {"address": REGISTRY, "abi": []},
        "jobs": {"address": JOBS, "abi": [{"type": "function", "name": "withdraw"}]},
    }


def write(tmp_path: Path, payload: object) -> Path:
    path = tmp_path / "deployment.json"
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return path


def test_round_trip_checksums_addresses(tmp_path: Path) -> None:
    deployment = Deployment.load(write(tmp_path, valid()))
    assert deployment.registry.address == "0x5FbDB2315678afecb367f032d93F642f64180aa3"
    deployment.save(tmp_path / "copy" / "deployment.json")
    assert Deployment.load(tmp_path / "copy" / "deployment.json") == deployment


def test_missing_file_says_to_run_devnet_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="allmende devnet up"):
        Deployment.load(tmp_path / "nope.json")


def test_not_json_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not JSON"):
        Deployment.load(write(tmp_path, "{oops"))


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda d: d.update(surprise=1), "surprise"),
        (lambda d: d["registry"].update(address="0x1234"), "registry.address"),
        (lambda d: d.pop("jobs"), "jobs"),
        (lambda d: d.update(chain_id="main"), "chain_id"),
        (lambda d: d["jobs"].update(abi="not a list"), "jobs.abi"),
    ],
)
def test_invalid_files_name_the_bad_field(tmp_path: Path, change, where: str) -> None:
    payload = valid()
    change(payload)
    with pytest.raises(ConfigError, match=rf"invalid at {where}"):
        Deployment.load(write(tmp_path, payload))
