"""Round logic: when aggregators may aggregate, the included bitmap, the order of inputs."""

from __future__ import annotations

import dataclasses

import pytest

from allmende.chain import Commit, Job
from allmende.chain.jobs import (
    MAX_TRAINERS,
    from_bitmap,
    from_words,
    included_words,
    to_bitmap,
)
from allmende.node.roles.rounds import (
    aggregation_readiness,
    by_address,
    committed,
    deadline_passed,
    round_deadline,
)

START = 1_000
DEADLINE = 60
A, B, C = (
    "0xBBbb000000000000000000000000000000000001",
    "0xaaAA000000000000000000000000000000000002",
    "0xCccc000000000000000000000000000000000003",
)
DONE = Commit(update_hash=b"\x01" * 32, weight=10)
NOT_YET = Commit(update_hash=bytes(32), weight=0)


def make_job(**changes: int) -> Job:
    job = Job(
        owner=A, spec_hash=b"\x02" * 32, model_hash=b"\x03" * 32, rounds=5,
        reward_per_round=10, min_trainers=2, max_trainers=3, quorum=1,
        round_deadline=DEADLINE, escrow=50, current_round=1, round_start=START, status=1,
        n_trainers=3, n_aggregators=1, committee_size=1, signup_end=0, sealed=True,
        trainer_stake=0, aggregator_stake=0, weight_cap=0, attempt=1, reopens=0,
        n_active_trainers=3, n_volunteers=0, paid=0,
    )  # fmt: skip
    if "n_trainers" in changes:  # no trainer evicted unless a test says so
        changes.setdefault("n_active_trainers", changes["n_trainers"])
    return dataclasses.replace(job, **changes)


def test_the_deadline_is_inclusive() -> None:
    job = make_job()
    assert round_deadline(job) == START + DEADLINE
    assert not deadline_passed(job, START + DEADLINE)
    assert deadline_passed(job, START + DEADLINE + 0.5)


def test_ready_when_every_trainer_committed() -> None:
    readiness = aggregation_readiness(make_job(), {A: DONE, B: DONE, C: DONE}, START + 1)
    assert readiness.ready and "all 3" in readiness.reason


def test_waits_for_a_missing_commit_before_the_deadline() -> None:
    readiness = aggregation_readiness(make_job(), {A: DONE, B: DONE, C: NOT_YET}, START + 1)
    assert not readiness.ready and "2 of 3" in readiness.reason


def test_after_the_deadline_min_trainers_commits_suffice() -> None:
    late = START + DEADLINE + 1
    assert aggregation_readiness(make_job(), {A: DONE, B: DONE, C: NOT_YET}, late).ready
    stalled = aggregation_readiness(make_job(), {A: DONE, B: NOT_YET, C: NOT_YET}, late)
    assert not stalled.ready and "stalled" in stalled.reason


def test_round_zero_waits_for_the_job_to_fill_up() -> None:
    job = make_job(current_round=0, n_trainers=2)
    early = aggregation_readiness(job, {A: DONE, B: DONE}, START + 1)
    assert not early.ready and "2 of 3 trainers joined" in early.reason
    assert aggregation_readiness(job, {A: DONE, B: DONE}, START + DEADLINE + 1).ready
    full = make_job(current_round=0)
    assert aggregation_readiness(full, {A: DONE, B: DONE, C: DONE}, START + 1).ready


def test_a_later_round_does_not_wait_for_max_trainers() -> None:
    job = make_job(current_round=2, n_trainers=2)
    assert aggregation_readiness(job, {A: DONE, B: DONE}, START + 1).ready


def test_no_trainers_is_never_ready_before_the_deadline() -> None:
    job = make_job(current_round=1, n_trainers=0, min_trainers=1)
    assert not aggregation_readiness(job, {}, START + 1).ready


def test_committed_keeps_only_nonzero_weights() -> None:
    assert committed({A: DONE, B: NOT_YET}) == {A: DONE}


def test_inputs_are_ordered_by_lower_cased_address() -> None:
    assert by_address([A, C, B]) == [B, A, C]  # 0xaaaa < 0xbbbb < 0xcccc


def test_bitmaps_round_trip() -> None:
    assert to_bitmap([0, 2, 5]) == 0b100101
    assert from_bitmap(0b100101) == [0, 2, 5]
    assert to_bitmap([]) == 0 and from_bitmap(0) == []
    assert from_bitmap(to_bitmap(range(256))) == list(range(256))


def test_bitmaps_refuse_negative_values() -> None:
    with pytest.raises(ValueError):
        to_bitmap([-1])
    with pytest.raises(ValueError):
        from_bitmap(-4)


def test_included_goes_to_the_contract_as_four_words_of_256_trainers() -> None:
    assert included_words(0b101) == [0b101, 0, 0, 0]
    assert included_words(1 << 256 | 1) == [1, 1, 0, 0]  # trainer 256 opens the second word
    everyone = to_bitmap(range(MAX_TRAINERS))
    assert included_words(everyone) == [2**256 - 1] * 4
    for bitmap in (0, 0b1011, 1 << 700, everyone, to_bitmap([3, 255, 256, 511, 1023])):
        assert from_words(included_words(bitmap)) == bitmap


def test_included_words_refuse_what_does_not_fit_the_contract() -> None:
    with pytest.raises(ValueError, match="1024 trainers"):
        included_words(1 << MAX_TRAINERS)  # trainer 1,024: the 1,025th
    with pytest.raises(ValueError):
        included_words(-1)


def test_a_jobs_end_and_final_model_are_derived_from_its_status() -> None:
    running = make_job(round_start=START + 5)
    assert (running.ended_at, running.final_model_hash) == (0, bytes(32))
    finished = make_job(status=2, current_round=5, round_start=START + 5)
    assert (finished.ended_at, finished.final_model_hash) == (START + 5, b"\x03" * 32)
    cancelled = make_job(status=3, round_start=START + 7)
    assert (cancelled.ended_at, cancelled.final_model_hash) == (START + 7, bytes(32))


def test_with_sampling_the_drawn_trainers_committing_is_enough() -> None:
    job = make_job()
    commits = {A: DONE, B: DONE}  # C was not drawn into the round (privacy.sample_rate)
    assert not aggregation_readiness(job, commits, START + 1).ready
    ready = aggregation_readiness(job, commits, START + 1, drawn=2)
    assert ready.ready and ready.reason == "all 2 trainers committed"
    assert not aggregation_readiness(job, {A: DONE, B: NOT_YET}, START + 1, drawn=2).ready
