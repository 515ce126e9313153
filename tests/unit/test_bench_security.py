"""The security benchmark's attacks run on the real contracts and its figures are measured: each
row has its fields, and a defence taken away (no reopen, no eviction) or an input changed (the
weight cap, the slash) changes the figure the row reports."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import security

FIELDS = {"name", "defence", "wei_taken", "rounds_stalled"}


@pytest.fixture(autouse=True)
def _rollback(boa_anchor: None) -> None:
    """Every attack runs on a chain rolled back after it (see ``boa_anchor``)."""


def test_every_attack_gives_one_measured_row_and_none_succeeds() -> None:
    lines: list[str] = []
    rows = security.run_all(4, progress=lines.append)
    assert len(rows) == len(lines) == 1 + len(security.ATTACKS)
    assert len({row["name"] for row in rows}) == len(rows)
    for row in rows:
        assert row.keys() >= FIELDS
        assert isinstance(row["wei_taken"], int) and isinstance(row["rounds_stalled"], int)
        assert row["defence"]
        assert (row["wei_taken"], row["rounds_stalled"]) == (0, 0), row
    assert "draws" in rows[0]["note"]


def test_weight_grab_under_declared_weights_is_exactly_capped() -> None:
    for cap in (1_000, 500):
        grab = security.weight_grab(cap, others=(100, 100))
        assert grab["refused"] == "jobs: weight must be between 1 and the job's weight cap"
        assert grab["share"] == pytest.approx(cap / (cap + 200), abs=1e-12)
        assert grab["excess_wei"] == 0
    equal = security.weight_grab(0, others=(100, 100, 100))
    assert equal["share"] == pytest.approx(1 / 4, abs=1e-12)  # weights 100 ignored: all weigh 1


def test_dead_round_stalls_every_deadline_without_reopen() -> None:
    assert security.dead_round(reopen=False)["rounds_stalled"] == security.MAX_REOPENS + 1
    assert security.dead_round(reopen=True)["rounds_stalled"] == 0


def test_squatter_left_unevicted_makes_every_later_round_wait() -> None:
    kept = security.squatting_trainer(rounds=5, evict=False)
    assert (kept["rounds_waited"], kept["rounds_stalled"]) == (5, 2)
    evicted = security.squatting_trainer(rounds=5)
    assert (evicted["rounds_waited"], evicted["rounds_stalled"]) == (3, 0)
    assert evicted["attacker_net_wei"] == -security.TRAINER_STAKE  # its bond went to the owner


def test_slash_beyond_the_lock_takes_exactly_the_lock() -> None:
    row = security.slash_beyond_lock(100 * security.ETHER)
    assert row["slashed_wei"] == security.AGGREGATOR_STAKE
    small = security.slash_beyond_lock(security.AGGREGATOR_STAKE // 4)
    assert small["slashed_wei"] == security.AGGREGATOR_STAKE // 4


def test_sybils_with_a_majority_do_steal() -> None:
    """The theft the row counts 0 for is real: where the sybils win a draw it pays them."""
    row = security.sybil_open_committee(4)
    assert row["wei_taken"] == 0
    assert row["capture_rate_at_equal_stake"] > 0
    assert row["theft_wei_with_majority"] > 0


def test_main_writes_the_json_and_exits_1_when_an_attack_took_wei(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [security.dead_round(), security.dead_round(reopen=False)]
    monkeypatch.setattr(security, "run_all", lambda draws, progress: rows[:1])
    monkeypatch.setattr(security, "describe_machine", lambda: {"cpu_model": "test"})
    out = tmp_path / "security.json"
    assert security.main(["--draws", "2", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["machine"] == {"cpu_model": "test"}
    assert [row.keys() >= FIELDS for row in result["attacks"]] == [True]
    monkeypatch.setattr(security, "run_all", lambda draws, progress: rows)
    assert security.main(["--json", str(out)]) == 1
