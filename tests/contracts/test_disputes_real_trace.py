"""A dispute over a real digits-mlp trace: a verifier finds the faked segment, bisection and a
committee that re-executes the last step slash the cheater; a false challenge loses its bond."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boa
import pytest
from contract_helpers import CONTRACTS, MIN_STAKE, funded
from disputes_helpers import CHALLENGER_BOND, PROVIDER_BOND, Court, deploy, pool, provider

from allmende.learn.digits import DigitsMLP
from allmende.learn.task import seeded_state
from allmende.store.blobs import BlobStore
from allmende.store.codec import decode_state
from allmende.verify.attacks import ProviderRun, run_provider
from allmende.verify.check import check_segment
from allmende.verify.dispute import agrees, state_at, step_replays
from allmende.verify.merkle import merkle_proof
from allmende.verify.plan import batch_plan, digits_shards, join_shards, n_items, plan_seed
from allmende.verify.trace import (
    ComputeRound,
    checkpoint_hash,
    deterministic,
    trace_blob,
    trace_from_blob,
)

JOB, ROUND, K = 11, 0, 4
PROVIDER_LOST, CHALLENGER_LOST = 4, 5


@pytest.fixture(scope="module")
def job() -> ComputeRound:
    data = join_shards(digits_shards(8)[:2])
    plan = batch_plan(plan_seed(5, ROUND, "p"), items=n_items(data), steps=6 * K, batch_size=8)
    return ComputeRound(task=DigitsMLP(), data=data, plan=plan, k=K, lr=0.1)


def dispute(
    d: Any, job: ComputeRound, court: Court, run: ProviderRun, segment: int, *, honest_answers: bool
) -> int:
    """Challenge ``segment``, bisect (the provider posts honest replays of its own segment
    start; the challenger answers by its own replay, or always disagrees), let the committee
    replay the last step and vote; the challenge id."""
    leaves = run.trace.leaves
    start = decode_state(run.fetch(leaves[segment].params.hex()))
    challenger = funded()
    with boa.env.prank(challenger):
        cid = d.open_challenge(
            JOB, ROUND, court.provider, segment, leaves[segment].params, leaves[segment].batches,
            merkle_proof(leaves, segment), leaves[segment + 1].params,
            leaves[segment + 1].batches, merkle_proof(leaves, segment + 1),
            value=CHALLENGER_BOND,
        )  # fmt: skip
    states = {segment * K: start}
    while d.challenges(cid)[9] != 3:  # until VOTING
        lo, hi = d.challenges(cid)[4], d.challenges(cid)[5]
        mid = (lo + hi) // 2
        states[mid] = state_at(job, start, segment, mid)
        with boa.env.prank(court.provider):
            d.post_midpoint(cid, checkpoint_hash(states[mid]))
        answer = agrees(job, start, segment, mid, checkpoint_hash(states[mid]))
        with boa.env.prank(challenger):
            d.answer_midpoint(cid, answer if honest_answers else False)
    c = d.challenges(cid)
    lo, hi_hash = c[4], c[7]
    assert checkpoint_hash(states[lo]) == c[6]  # the agreed state is one both parties hold
    for member in d.committee_of(cid):
        with boa.env.prank(member):
            d.vote(cid, step_replays(job, states[lo], lo, hi_hash))
        if d.challenges(cid)[9] != 3:
            break
    return int(cid)


def manifest(run: ProviderRun) -> bytes:
    return bytes.fromhex(run.store.put_bytes(trace_blob(run.trace)))


def setup(registry: Any, admin: str) -> tuple[Any, Court]:
    d = deploy(boa.load_partial(str(CONTRACTS / "Disputes.vy")), registry, admin)
    verifiers = pool(d, registry, 5)
    return d, Court(d, registry, provider(registry), verifiers, [])


def test_a_provider_that_skipped_steps_is_found_bisected_and_slashed(
    job: ComputeRound, registry: Any, admin: str, tmp_path: Path
) -> None:
    d, court = setup(registry, admin)
    start = seeded_state(job.task, seed=3)
    run = run_provider(job, start, BlobStore(tmp_path), attack="skip", faked={4})
    court.leaves = run.trace.leaves
    with boa.env.prank(court.provider):
        d.commit_trace(JOB, ROUND, run.trace.root, manifest(run), run.trace.segments, K)
    # The verifier reads the leaves from the manifest blob the chain names.
    named = d.trace_of(JOB, ROUND, court.provider)[1]
    assert trace_from_blob(run.fetch(named.hex())) == run.trace
    with deterministic():
        failing = [
            i for i in range(job.segments) if not check_segment(job, run.trace, i, run.fetch).ok
        ]
    assert failing == [4]
    cid = dispute(d, job, court, run, 4, honest_answers=True)
    assert d.challenges(cid)[9] == PROVIDER_LOST
    assert registry.stake_of(court.provider) == 2 * MIN_STAKE - PROVIDER_BOND


def test_a_false_challenge_of_honest_work_loses_its_bond(
    job: ComputeRound, registry: Any, admin: str, tmp_path: Path
) -> None:
    d, court = setup(registry, admin)
    start = seeded_state(job.task, seed=3)
    run = run_provider(job, start, BlobStore(tmp_path))
    court.leaves = run.trace.leaves
    with boa.env.prank(court.provider):
        d.commit_trace(JOB, ROUND, run.trace.root, manifest(run), run.trace.segments, K)
    cid = dispute(d, job, court, run, 2, honest_answers=False)
    assert d.challenges(cid)[9] == CHALLENGER_LOST
    assert registry.stake_of(court.provider) == 2 * MIN_STAKE
    assert d.owed(court.provider) > 0
