"""Deterministic training traces: assignment, Merkle commitments, honest re-execution."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from allmende.errors import CodecError, ConfigError
from allmende.learn.digits import DigitsMLP
from allmende.learn.task import load_task, seeded_state
from allmende.store.blobs import BlobStore
from allmende.verify.check import (
    escape_probability,
    relative_l2,
    sample_segments,
    samples_needed,
    verify_trace,
)
from allmende.verify.merkle import Leaf, merkle_proof, merkle_root, verify_proof
from allmende.verify.plan import (
    assign_shards,
    batch_hash,
    batch_plan,
    digits_shards,
    join_shards,
    n_items,
    plan_seed,
    stdlib_shards,
)
from allmende.verify.trace import (
    ComputeRound,
    Stepper,
    checkpoint_hash,
    deterministic,
    max_trace_bytes,
    trace_blob,
    trace_from_blob,
    train_traced,
)

PROVIDER = "0x" + "ab" * 20


def _leaves(n: int) -> list[Leaf]:
    return [Leaf(i, hashlib.sha256(b"p%d" % i).digest(), hashlib.sha256(b"b").digest())
            for i in range(n)]  # fmt: skip


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 9])
def test_every_leaf_proves_against_the_root(n: int) -> None:
    leaves = _leaves(n)
    root = merkle_root(leaves)
    for i, leaf in enumerate(leaves):
        assert verify_proof(root, leaf, i, merkle_proof(leaves, i))


def test_a_wrong_leaf_index_or_proof_fails() -> None:
    leaves = _leaves(6)
    root = merkle_root(leaves)
    proof = merkle_proof(leaves, 2)
    assert not verify_proof(root, leaves[2], 3, proof)
    assert not verify_proof(root, Leaf(2, leaves[2].params, leaves[3].params), 2, proof)
    assert not verify_proof(root, leaves[2], 2, proof[:-1])
    assert not verify_proof(root, leaves[2], 2 + (1 << len(proof)), proof)
    with pytest.raises(ConfigError, match="no leaf 6"):
        merkle_proof(leaves, 6)
    with pytest.raises(ConfigError, match="at least one leaf"):
        merkle_root([])


def test_shards_and_batches_are_a_function_of_seed_round_and_provider() -> None:
    one = assign_shards(7, 0, PROVIDER, num_shards=16, count=4)
    assert one == assign_shards(7, 0, PROVIDER.upper().replace("0X", "0x"), num_shards=16, count=4)
    assert len(set(one)) == 4 and all(0 <= i < 16 for i in one)
    others = {tuple(assign_shards(7, r, PROVIDER, num_shards=16, count=4)) for r in range(1, 6)}
    assert others - {tuple(one)}
    with pytest.raises(ConfigError, match="shards_per_provider"):
        assign_shards(7, 0, PROVIDER, num_shards=4, count=5)
    seed = plan_seed(7, 0, PROVIDER)
    assert seed != plan_seed(7, 1, PROVIDER)
    plan = batch_plan(seed, items=100, steps=6, batch_size=4)
    assert plan.shape == (6, 4) and int(plan.max()) < 100
    assert torch.equal(plan, batch_plan(seed, items=100, steps=6, batch_size=4))
    assert batch_hash(plan) != batch_hash(batch_plan(seed + 1, items=100, steps=6, batch_size=4))
    with pytest.raises(ConfigError, match="compute table"):
        batch_plan(seed, items=0, steps=6, batch_size=4)


def digits_round(steps: int = 16, k: int = 2) -> ComputeRound:
    shards = digits_shards(8)
    data = join_shards([shards[i] for i in assign_shards(7, 0, PROVIDER, num_shards=8, count=2)])
    plan = batch_plan(plan_seed(7, 0, PROVIDER), items=n_items(data), steps=steps, batch_size=16)
    return ComputeRound(task=DigitsMLP(), data=data, plan=plan, k=k, lr=0.1)


def test_k_must_divide_the_steps() -> None:
    with pytest.raises(ConfigError, match=r"compute\.k"):
        digits_round(steps=10, k=4)


def test_training_twice_gives_the_same_trace_and_stores_every_checkpoint(tmp_path: Path) -> None:
    job = digits_round()
    start = seeded_state(job.task, seed=1)
    store = BlobStore(tmp_path / "a")
    update, trace = train_traced(job, start, store)
    again_update, again = train_traced(job, start, BlobStore(tmp_path / "b"))
    assert again.leaves == trace.leaves and again.root == trace.root
    assert checkpoint_hash(update) == checkpoint_hash(again_update) == trace.leaves[-1].params
    assert [leaf.step for leaf in trace.leaves] == list(range(0, 17, 2))
    assert all(store.has(leaf.params.hex()) for leaf in trace.leaves)
    assert trace.leaves[0].params == checkpoint_hash(start)
    assert trace.leaves[3].batches == batch_hash(job.plan[4:6])


def test_the_trace_manifest_round_trips_and_refuses_garbage(tmp_path: Path) -> None:
    job = digits_round()
    _, trace = train_traced(job, seeded_state(job.task, seed=1), BlobStore(tmp_path))
    blob = trace_blob(trace)
    assert len(blob) == max_trace_bytes(trace.segments)
    assert trace_from_blob(blob) == trace
    for bad in (blob[:-1], b"x" + blob[1:], blob[:24] + blob[24 + 72 :], blob[:24] + blob[24:96]):
        with pytest.raises(CodecError):
            trace_from_blob(bad)
    shifted = bytearray(blob)
    shifted[24 + 72 + 7] ^= 1  # leaf 1's step
    with pytest.raises(CodecError, match="Leaf 1"):
        trace_from_blob(bytes(shifted))


def test_an_honest_trace_passes_and_a_wrong_commitment_fails(tmp_path: Path) -> None:
    job = digits_round()
    start = seeded_state(job.task, seed=1)
    store = BlobStore(tmp_path)
    update, trace = train_traced(job, start, store)
    common = {
        "start_hash": checkpoint_hash(start), "update_hash": checkpoint_hash(update),
        "provider": PROVIDER, "samples": 8, "fetch": store.read_bytes,
    }  # fmt: skip
    verdict = verify_trace(job, trace, root=trace.root, beacon=b"block", **common)
    assert verdict.ok and len(verdict.checks) == 8
    assert verify_trace(job, trace, root=b"\0" * 32, beacon=b"block", **common).reason == "root"
    wrong_ends = {**common, "update_hash": checkpoint_hash(start)}
    assert verify_trace(job, trace, root=trace.root, beacon=b"b", **wrong_ends).reason == "ends"


def test_byte_gpt_on_stdlib_shards_replays_exactly_with_one_thread() -> None:
    task = load_task("byte-gpt", data={"n_layer": 1, "n_head": 2, "n_embd": 32, "context": 16})
    shards = stdlib_shards(8, context=16, limit_bytes=20_000)
    data = join_shards([shards[i] for i in assign_shards(3, 1, PROVIDER, num_shards=8, count=2)])
    plan = batch_plan(plan_seed(3, 1, PROVIDER), items=n_items(data), steps=4, batch_size=8)
    job = ComputeRound(task=task, data=data, plan=plan, k=4, lr=0.1)
    start = seeded_state(task, seed=2)
    stepper = Stepper(job)
    results = []
    for threads in (1, 2, 1):
        with deterministic(threads):
            results.append(stepper.run(start, plan))
    assert checkpoint_hash(results[0]) == checkpoint_hash(results[2])
    assert checkpoint_hash(results[0]) != checkpoint_hash(start)
    # Two threads may round differently, but only in the last bits.
    assert relative_l2(results[0], results[1], start) < 1e-4


def test_sampling_is_distinct_bounded_and_depends_on_the_beacon() -> None:
    chosen = sample_segments(b"beacon", PROVIDER, segments=50, count=10)
    assert len(set(chosen)) == 10 and all(0 <= i < 50 for i in chosen)
    assert chosen == sample_segments(b"beacon", PROVIDER, segments=50, count=10)
    assert chosen != sample_segments(b"beacon2", PROVIDER, segments=50, count=10)
    assert sample_segments(b"b", PROVIDER, segments=3, count=10) == [0, 1, 2]
    with pytest.raises(ConfigError):
        sample_segments(b"b", PROVIDER, segments=0, count=1)


def test_the_detection_rule() -> None:
    assert samples_needed(0.1, 0.95) == 29
    assert 1 - 0.9**29 >= 0.95 > 1 - 0.9**28
    assert escape_probability(320, 32, 30) <= 0.9**30
    assert escape_probability(10, 10, 1) == 0.0
    assert escape_probability(10, 0, 3) == 1.0
    with pytest.raises(ConfigError):
        samples_needed(0.0, 0.95)
