"""``allmende node privacy HOME``: ε spent and left per dataset, and its one-line errors."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from allmende.node.config import load_config, parse_config, write_config
from allmende.node.roles.privacy import dataset_key
from allmende.privacy.budget import PrivacyLedger


def cli(*args: str) -> int:
    from allmende.cli.main import run

    try:
        run(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_it_shows_spent_and_left_per_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    assert cli("node", "init", str(home), "--offline", "--insecure-plaintext-key") == 0
    raw = tomllib.loads((home / "node.toml").read_text())
    raw["trainer"]["privacy"] = {"budget_epsilon": 10.0}
    write_config(home, parse_config(raw))
    declared = dataset_key(load_config(home).trainer.dataset)
    ledger = PrivacyLedger.open(home / "state.sqlite")
    ledger.charge(declared, "0xjobs:1", 0, job_epsilon=1.5, delta=1e-5)
    ledger.charge(declared, "0xjobs:1", 1, job_epsilon=2.25, delta=1e-5)
    ledger.charge("old-data", "0xjobs:2", 0, job_epsilon=4.0, delta=1e-5)
    ledger.close()
    capsys.readouterr()
    assert cli("node", "privacy", str(home), "--json") == 0
    rows = json.loads(capsys.readouterr().out)["datasets"]
    assert [r["dataset"] for r in rows] == [declared, "old-data"]  # the declared one first
    assert rows[0]["epsilon_spent"] == 2.25 and rows[0]["epsilon_left"] == 7.75
    assert rows[0]["jobs"] == [{"job": "0xjobs:1", "rounds": 2, "epsilon": 2.25, "delta": 1e-5}]
    assert not rows[1]["declared"] and rows[1]["epsilon_left"] == 6.0
    assert cli("node", "privacy", str(home)) == 0
    out = capsys.readouterr().out
    assert "spent ε 2.25" in out and "7.75 left of 10" in out and "job 0xjobs:1: 2 rounds" in out


def test_a_missing_home_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("node", "privacy", str(tmp_path / "nowhere")) != 0
    err = capsys.readouterr().err.strip()
    assert "No node config" in err and "allmende node init" in err and "\n" not in err
