"""The verification benchmark's cells measure real re-execution outcomes."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from allmende.learn.digits import DigitsMLP
from allmende.learn.task import seeded_state
from allmende.verify.plan import batch_plan, digits_shards, join_shards, n_items
from allmende.verify.trace import ComputeRound
from verification import detection_cell, drift, overhead


def small_round() -> ComputeRound:
    data = join_shards(digits_shards(8)[:1])
    plan = batch_plan(1, items=n_items(data), steps=20, batch_size=8)
    return ComputeRound(task=DigitsMLP(), data=data, plan=plan, k=2, lr=0.1)


def test_cells_flag_cheats_and_never_honest_work(tmp_path: Path) -> None:
    job = small_round()
    start = seeded_state(job.task, seed=1)
    honest = detection_cell(job, start, "honest", 0.0, traces=1, beacons=3, workdir=tmp_path)
    assert honest["detection"] == 0.0 and honest["trials"] == 3
    # 10 segments, 36 samples: every segment is checked, so every cheat is caught.
    cheat = detection_cell(job, start, "noise", 0.1, traces=1, beacons=3, workdir=tmp_path)
    assert cheat["detection"] == 1.0 and cheat["faked_segments"] == 1 and cheat["formula"] == 1.0
    assert cheat["min_distance"] > 0.01


def test_overhead_and_drift_are_measured(tmp_path: Path) -> None:
    job = small_round()
    start = seeded_state(job.task, seed=1)
    cost = overhead(job, start, repeats=1, workdir=tmp_path)
    assert cost["provider_seconds"] > 0 and cost["verifier_seconds"] > 0
    measured = drift(job, start, segments=2)
    assert measured["same_threads_exact"] and measured["max_relative_l2"] < 1e-4
