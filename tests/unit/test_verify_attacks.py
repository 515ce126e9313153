"""Every cheating provider of allmende.verify.attacks is caught when its segment is sampled."""

from __future__ import annotations

from pathlib import Path

import pytest

from allmende.errors import ConfigError
from allmende.learn.digits import DigitsMLP
from allmende.learn.task import load_task, seeded_state
from allmende.store.blobs import BlobStore
from allmende.verify.attacks import ATTACKS, faked_segments, run_provider
from allmende.verify.check import check_segment, verify_trace
from allmende.verify.plan import (
    assign_shards,
    batch_plan,
    digits_shards,
    join_shards,
    n_items,
    plan_seed,
    stdlib_shards,
)
from allmende.verify.trace import ComputeRound, checkpoint_hash, deterministic, train_traced

PROVIDER = "0x" + "cd" * 20
FAKED = {2, 5, 6}  # one alone, and a run of two (the interpolation forges runs)
EXPECTED_REASON = {"data": "mismatch", "checkpoint": "checkpoint"}


@pytest.fixture(scope="module")
def job() -> ComputeRound:
    shards = digits_shards(8)
    data = join_shards([shards[i] for i in assign_shards(9, 2, PROVIDER, num_shards=8, count=2)])
    plan = batch_plan(plan_seed(9, 2, PROVIDER), items=n_items(data), steps=16, batch_size=16)
    return ComputeRound(task=DigitsMLP(), data=data, plan=plan, k=2, lr=0.1)


@pytest.mark.parametrize("attack", ATTACKS)
def test_each_attack_fails_exactly_its_faked_segments(
    attack: str, job: ComputeRound, tmp_path: Path
) -> None:
    start = seeded_state(job.task, seed=4)
    run = run_provider(job, start, BlobStore(tmp_path), attack=attack, faked=FAKED, seed=1)
    with deterministic():
        checks = [check_segment(job, run.trace, i, run.fetch) for i in range(job.segments)]
    assert {c.segment for c in checks if not c.ok} == FAKED
    assert {c.reason for c in checks if not c.ok} == {EXPECTED_REASON.get(attack, "mismatch")}
    # The committed update still hashes to the last leaf: the fake is only in the work.
    assert run.trace.leaves[-1].params == checkpoint_hash(run.update)


@pytest.mark.parametrize("attack", ATTACKS)
def test_the_verifier_catches_a_trace_whose_faked_segment_it_samples(
    attack: str, job: ComputeRound, tmp_path: Path
) -> None:
    start = seeded_state(job.task, seed=4)
    run = run_provider(job, start, BlobStore(tmp_path), attack=attack, faked=FAKED, seed=1)
    verdict = verify_trace(
        job, run.trace, root=run.trace.root, start_hash=checkpoint_hash(start),
        update_hash=checkpoint_hash(run.update), beacon=b"after the window",
        provider=PROVIDER, samples=job.segments, fetch=run.fetch,
    )  # fmt: skip
    assert not verdict.ok
    assert {c.segment for c in verdict.failed} == FAKED


def test_an_honest_provider_passes_every_beacon(job: ComputeRound, tmp_path: Path) -> None:
    start = seeded_state(job.task, seed=4)
    run = run_provider(job, start, BlobStore(tmp_path), attack="honest", faked=FAKED)
    for beacon in (b"a", b"b", b"c", b"d"):
        verdict = verify_trace(
            job, run.trace, root=run.trace.root, start_hash=checkpoint_hash(start),
            update_hash=checkpoint_hash(run.update), beacon=beacon, provider=PROVIDER,
            samples=3, fetch=run.fetch,
        )  # fmt: skip
        assert verdict.ok, verdict


def test_a_provider_that_serves_nothing_fails(job: ComputeRound, tmp_path: Path) -> None:
    start = seeded_state(job.task, seed=4)
    _, trace = train_traced(job, start, BlobStore(tmp_path))

    def refuse(digest: str) -> bytes:
        raise ConnectionError("provider offline")

    with deterministic():
        assert check_segment(job, trace, 0, refuse).reason == "checkpoint"


def test_honest_byte_gpt_passes_and_skipping_is_caught(tmp_path: Path) -> None:
    task = load_task("byte-gpt", data={"n_layer": 1, "n_head": 2, "n_embd": 32, "context": 16})
    shards = stdlib_shards(8, context=16, limit_bytes=20_000)
    data = join_shards([shards[i] for i in assign_shards(3, 0, PROVIDER, num_shards=8, count=2)])
    plan = batch_plan(plan_seed(3, 0, PROVIDER), items=n_items(data), steps=8, batch_size=4)
    gpt = ComputeRound(task=task, data=data, plan=plan, k=2, lr=0.1)
    start = seeded_state(task, seed=5)
    honest = run_provider(gpt, start, BlobStore(tmp_path / "h"))
    cheat = run_provider(gpt, start, BlobStore(tmp_path / "c"), attack="skip", faked={1})
    with deterministic():
        assert all(check_segment(gpt, honest.trace, i, honest.fetch).ok for i in range(4))
        assert [check_segment(gpt, cheat.trace, i, cheat.fetch).ok for i in range(4)] == [
            True, False, True, True,
        ]  # fmt: skip


def test_fake_fractions_and_unknown_attacks() -> None:
    assert faked_segments(100, 0.0, seed=1) == set()
    assert len(faked_segments(100, 0.1, seed=1)) == 10
    assert len(faked_segments(320, 0.01, seed=1)) == 3
    assert len(faked_segments(10, 0.01, seed=1)) == 1
    with pytest.raises(ConfigError, match="fake fraction"):
        faked_segments(10, 1.5, seed=1)
    with pytest.raises(ConfigError, match="Unknown attack"):
        run_provider(None, {}, None, attack="bribe")  # type: ignore[arg-type]
