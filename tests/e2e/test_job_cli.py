"""`allmende job submit`: refusals before any ether is escrowed, and submitting through the
owner's running node (its control socket) or, when none listens, in the command itself."""

from __future__ import annotations

import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_nodes import CLI_TIMEOUT, init_node
from nodes import NodeFactory, allmende

from allmende.node.control import socket_path

SPEC = """
task = "digits-mlp"
rounds = 2
min_trainers = 1
max_trainers = 2
quorum = 1
reward_per_round = "0.01 ether"
[optimizer]
name = "sgd"
lr = 0.1
[aggregation]
rule = "fedavg"
"""


def test_submit_refuses_until_the_owners_node_is_registered(devnet, tmp_path: Path) -> None:
    home = init_node(
        tmp_path / "owner", deployment=devnet.devnet.deployment_path, key=devnet.new_key(),
        roles=["aggregator"],
    )  # fmt: skip
    spec = tmp_path / "job.toml"
    spec.write_text(SPEC)
    jobs = devnet.contracts().jobs
    before = jobs.next_job_id()

    result = allmende("job", "submit", str(spec), "--home", str(home), timeout=CLI_TIMEOUT)

    assert result.returncode == 1
    assert "is not registered, so nobody could fetch the job's spec" in result.stderr
    assert "allmende node run" in result.stderr
    assert jobs.next_job_id() == before  # nothing was created, nothing escrowed


def test_submit_refuses_a_malformed_spec(devnet, tmp_path: Path) -> None:
    home = init_node(
        tmp_path / "owner", deployment=devnet.devnet.deployment_path, key=devnet.new_key(),
        roles=["aggregator"],
    )  # fmt: skip
    spec = tmp_path / "job.toml"
    spec.write_text(SPEC.replace("rounds = 2", "rouns = 2"))

    result = allmende("job", "submit", str(spec), "--home", str(home), timeout=CLI_TIMEOUT)

    assert result.returncode == 2
    assert "did you mean 'rounds'" in result.stderr


# -- through the running node's control socket ------------------------------------------------

# Runs the CLI in-process and reports afterwards whether it imported torch.
CLI_REPORTING_TORCH = (
    "import atexit, sys\n"
    "atexit.register(lambda: print('torch imported:', 'torch' in sys.modules, file=sys.stderr))\n"
    "from allmende.cli.main import run\n"
    "run(sys.argv[1:])\n"
)


def submit_reporting_torch(spec: Path, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CLI_REPORTING_TORCH, "job", "submit", str(spec),
         "--home", str(home)],
        capture_output=True, text=True, timeout=CLI_TIMEOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[NodeFactory]:
    factory = NodeFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.close()


def test_submit_through_the_running_node_creates_the_job_without_torch(
    devnet, node_factory, tmp_path: Path
) -> None:
    home = init_node(
        tmp_path / "owner", deployment=devnet.devnet.deployment_path, key=devnet.new_key(),
        roles=["aggregator"],
    )  # fmt: skip
    owner = node_factory.start(home)
    assert (home / "node.sock").is_socket()
    assert stat.S_IMODE((home / "node.sock").stat().st_mode) == 0o600  # the owner's only
    spec = tmp_path / "job.toml"
    spec.write_text(SPEC)
    jobs = devnet.contracts().jobs

    result = submit_reporting_torch(spec, home)

    assert result.returncode == 0, result.stderr
    assert "torch imported: False" in result.stderr  # the node did the heavy part
    job_id = int(result.stdout.strip())
    job = jobs.job(job_id)
    assert job.owner == owner.address and job.rounds == 2
    spec_hash, model_hash = "0x" + job.spec_hash.hex(), "0x" + job.model_hash.hex()
    assert f"spec {spec_hash.removeprefix('0x')}" in result.stderr
    state = owner.state()
    try:
        pins = state.pinned()
    finally:
        state.close()
    assert {spec_hash.removeprefix("0x"), model_hash.removeprefix("0x")} <= pins
    assert owner.store.read_bytes(model_hash.removeprefix("0x"))  # served to trainers from here

    owner.stop()
    assert not (home / "node.sock").exists()  # removed on a clean stop


def test_submit_with_a_stale_socket_does_the_work_itself(devnet, tmp_path: Path) -> None:
    home = init_node(
        tmp_path / "owner", deployment=devnet.devnet.deployment_path, key=devnet.new_key(),
        roles=["aggregator"],
    )  # fmt: skip
    # a killed node leaves its socket file behind
    with socket.socket(socket.AF_UNIX) as stale, socket_path(home) as path:
        stale.bind(path)
    spec = tmp_path / "job.toml"
    spec.write_text(SPEC)

    result = submit_reporting_torch(spec, home)

    assert result.returncode == 1
    assert "is not registered" in result.stderr  # the in-process path's own check ran
    # and refused before it built the initial model: the task code (torch) was never loaded
    assert "torch imported: False" in result.stderr
