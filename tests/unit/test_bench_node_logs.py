"""Round phases read from node logs: train, aggregate, finalize."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from node_logs import finalized_at, phase_summary, round_events, round_phases

PREFIX = "2026-11-22 03:27:{} INFO allmende.node.roles.{}: Job {} round {}: {}"
LOG = [
    PREFIX.format("10,000", "trainer", 1, 0, "trained on 180 examples (loss 2.3), committed x."),
    PREFIX.format("10,500", "trainer", 1, 0, "trained on 180 examples (loss 2.3), committed y."),
    PREFIX.format("11,500", "aggregator", 1, 0, "proposed model ab with 2 of 2 trainers."),
    PREFIX.format("11,750", "aggregator", 1, 0, "finalized model ab."),
    PREFIX.format("12,000", "trainer", 1, 1, "trained on 180 examples (loss 2.2), committed z."),
    PREFIX.format("12,250", "trainer", 1, 1, "trained on 180 examples (loss 2.2), committed w."),
    PREFIX.format("13,250", "aggregator", 1, 1, "proposed model cd with 2 of 2 trainers."),
    PREFIX.format("13,500", "aggregator", 1, 1, "finalized model cd."),
    PREFIX.format("14,000", "trainer", 2, 1, "trained on 9 examples, committed v."),  # other job
    "2026-11-22 03:27:14,100 INFO httpx: HTTP Request: GET http://127.0.0.1:1/v1/blobs/ab",
    PREFIX.format("15,000", "trainer", 1, 2, "trained on 180 examples, committed u."),  # unfinished
]


def test_phases_per_round_from_the_last_commit_and_first_proposal() -> None:
    phases = round_phases(round_events(LOG, job_id=1))
    assert set(phases) == {0, 1}  # round 2 never finished
    assert phases[0] == pytest.approx({"aggregate": 1.0, "finalize": 0.25})  # no train phase
    assert phases[1] == pytest.approx({"train": 0.5, "aggregate": 1.0, "finalize": 0.25})


def test_other_jobs_and_other_lines_are_ignored(tmp_path: Path) -> None:
    assert round_events(LOG, job_id=3) == {}
    (tmp_path / "a.log").write_text("\n".join(LOG[:4]))
    (tmp_path / "b.log").write_text("\n".join(LOG[4:]))
    summary = phase_summary([tmp_path / "a.log", tmp_path / "b.log"], job_id=1)
    assert summary == pytest.approx({"train": 0.5, "aggregate": 1.0, "finalize": 0.25})


def test_round_ends_are_the_first_finalized_lines_up_to_the_first_missing_round(
    tmp_path: Path,
) -> None:
    (tmp_path / "a.log").write_text("\n".join(LOG))
    ends = finalized_at([tmp_path / "a.log"], job_id=1)
    assert len(ends) == 2 and ends[1] - ends[0] == pytest.approx(1.75)
    # round 2 never finished, so it has no end
    assert finalized_at([tmp_path / "a.log"], job_id=3) == []
