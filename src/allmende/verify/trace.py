"""Deterministic training with a trace: a checkpoint every ``k`` steps, committed by a Merkle root.

A provider's round in compute mode is fixed by a :class:`ComputeRound`: the task, the data it was
assigned, the batch plan (:func:`~allmende.verify.plan.batch_plan`) and plain SGD settings. With
``torch.use_deterministic_algorithms`` and a fixed number of intra-op threads
(:func:`deterministic`), ``steps`` steps from the same checkpoint give the same bytes on the same
CPU and torch build, so anyone can re-execute any segment and compare hashes exactly.

The optimizer is SGD without momentum: it keeps no state between steps, so a checkpoint is the
model's parameters alone and any segment can be re-run from its first checkpoint. (Momentum or
Adam would need their buffers in every checkpoint; compute mode refuses them for now.)

:func:`train_traced` runs a round and stores checkpoint ``i`` (after ``i * k`` steps) as a
canonical tensor blob; leaf ``i`` binds the step, the blob's SHA-256 and the hash of the batches
trained since checkpoint ``i - 1`` (see :mod:`allmende.verify.merkle`). The provider commits the
root and serves the checkpoints for the challenge window.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from allmende.errors import CodecError, ConfigError, TaskError
from allmende.learn.optim import LocalOptimizer
from allmende.learn.task import LocalData, Task, state_of
from allmende.learn.train import TORCH_LOCK, _use_deterministic_algorithms
from allmende.store.blobs import BlobStore
from allmende.store.codec import encode_state
from allmende.verify.merkle import MAX_DEPTH, Leaf, merkle_root
from allmende.verify.plan import batch_hash

State = dict[str, Tensor]
MAX_STEPS = 1_000_000


@contextmanager
def deterministic(threads: int = 1) -> Iterator[None]:
    """``threads`` intra-op threads and deterministic algorithms (restored on exit), under
    :data:`~allmende.learn.train.TORCH_LOCK`. Every machine that compares hashes exactly must
    use the same ``threads`` (the job spec fixes 1)."""
    with TORCH_LOCK, torch.random.fork_rng(devices=[]):
        before = torch.get_num_threads()
        was_deterministic = torch.are_deterministic_algorithms_enabled()
        torch.manual_seed(0)
        torch.set_num_threads(threads)
        _use_deterministic_algorithms(True)
        try:
            yield
        finally:
            _use_deterministic_algorithms(was_deterministic)
            torch.set_num_threads(before)


@dataclass(frozen=True)
class ComputeRound:
    """What one provider must compute in one round; every verifier builds the same one."""

    task: Task
    data: LocalData
    plan: Tensor  # (steps, batch_size) item indices
    k: int  # steps between checkpoints
    lr: float
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        steps = int(self.plan.shape[0])
        if not 1 <= self.k <= steps <= MAX_STEPS or steps % self.k:
            raise ConfigError(
                f"compute.k ({self.k}) must divide the round's steps ({steps}, at most "
                f"{MAX_STEPS}); fix the job spec's compute table."
            )

    @property
    def steps(self) -> int:
        return int(self.plan.shape[0])

    @property
    def segments(self) -> int:
        return self.steps // self.k

    def batches(self, segment: int) -> Tensor:
        """``(k, batch_size)``: the batches of segment ``segment`` (checkpoint i to i + 1)."""
        return self.plan[segment * self.k : (segment + 1) * self.k]


class Stepper:
    """Runs SGD steps of a :class:`ComputeRound` from any state (one model, reused)."""

    def __init__(self, job: ComputeRound) -> None:
        self.job = job
        with TORCH_LOCK, torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.model = job.task.model()
        self.model.train()

    def run(self, state: State, batches: Tensor) -> State:
        """The state after one SGD step per row of ``batches`` ``(m, batch_size)``, starting
        from ``state``. Call inside :func:`deterministic`."""
        try:
            self.model.load_state_dict(state, strict=True)
        except (RuntimeError, TypeError) as exc:
            raise TaskError(
                f"A checkpoint does not fit task '{self.job.task.name}' ({exc}); it is not a "
                "checkpoint of this job."
            ) from None
        opt = LocalOptimizer(
            "sgd", list(self.model.parameters()), lr=self.job.lr, momentum=0.0,
            weight_decay=self.job.weight_decay,
        )  # fmt: skip
        for row in batches:
            loss = self.job.task.loss(self.model, self.job.data.batch(row))
            opt.zero_grad()
            loss.backward()
            opt.step()
        return state_of(self.model)


@dataclass(frozen=True)
class Trace:
    """A provider's committed trace: ``segments + 1`` leaves and their root."""

    k: int
    leaves: list[Leaf]

    @property
    def root(self) -> bytes:
        return merkle_root(self.leaves)

    @property
    def segments(self) -> int:
        return len(self.leaves) - 1


TRACE_MAGIC = b"allmende-trace/1"
LEAF_BYTES = 8 + 32 + 32


def trace_blob(trace: Trace) -> bytes:
    """The trace's *manifest*: the blob a provider stores and commits the hash of, from which
    a verifier reads the leaves (``magic, k, then step | params | batches`` per leaf)."""
    body = b"".join(
        leaf.step.to_bytes(8, "big") + leaf.params + leaf.batches for leaf in trace.leaves
    )
    return TRACE_MAGIC + trace.k.to_bytes(8, "big") + body


def max_trace_bytes(segments: int) -> int:
    """The exact size of the manifest of a trace of ``segments`` segments (a fetch limit)."""
    return len(TRACE_MAGIC) + 8 + (segments + 1) * LEAF_BYTES


def trace_from_blob(data: bytes) -> Trace:
    """A manifest's trace; CodecError unless it is well formed (leaf ``i`` at step ``i * k``,
    at least two leaves, at most ``2**20``)."""
    head = len(TRACE_MAGIC) + 8
    if not data.startswith(TRACE_MAGIC) or (len(data) - head) % LEAF_BYTES:
        raise CodecError("The trace manifest is malformed (bad header or length); the provider "
                         "served something else, so its trace fails.")  # fmt: skip
    k = int.from_bytes(data[len(TRACE_MAGIC) : head], "big")
    count = (len(data) - head) // LEAF_BYTES
    if not 2 <= count <= 2**MAX_DEPTH or not 1 <= k <= MAX_STEPS:
        raise CodecError(f"The trace manifest holds {count} leaves of k = {k}; out of bounds.")
    leaves = []
    for i in range(count):
        at = head + i * LEAF_BYTES
        step = int.from_bytes(data[at : at + 8], "big")
        if step != i * k:
            raise CodecError(f"Leaf {i} of the trace manifest is at step {step}, not {i * k}.")
        leaves.append(Leaf(step, data[at + 8 : at + 40], data[at + 40 : at + 72]))
    return Trace(k=k, leaves=leaves)


def checkpoint_hash(state: State) -> bytes:
    """The SHA-256 of a checkpoint's canonical blob (its name in the blob store)."""
    return hashlib.sha256(encode_state(state)).digest()


SegmentFn = Callable[[int, State, Tensor], State]
"""``(segment, start state, its (k, b) batches) -> end state``: how a provider runs a segment."""


def train_traced(
    job: ComputeRound,
    start: State,
    store: BlobStore,
    *,
    threads: int = 1,
    segment_fn: SegmentFn | None = None,
) -> tuple[State, Trace]:
    """Train the round from ``start``, storing every checkpoint in ``store``; the final state
    (the provider's update) and the trace. ``segment_fn`` replaces honest training (the attacks
    of :mod:`allmende.verify.attacks` use it)."""
    stepper = Stepper(job)
    run = segment_fn or (lambda _i, state, batches: stepper.run(state, batches))
    state = start
    with deterministic(threads):
        leaves = [Leaf(0, _put(store, state), batch_hash(job.plan[:0]))]
        for i in range(job.segments):
            batches = job.batches(i)
            state = run(i, state, batches)
            leaves.append(Leaf((i + 1) * job.k, _put(store, state), batch_hash(batches)))
    return state, Trace(k=job.k, leaves=leaves)


def _put(store: BlobStore, state: State) -> bytes:
    # Not fsynced: a checkpoint torn by a crash fails its hash check and is recomputed.
    with store.writer(durable=False) as writer:
        writer.write(encode_state(state))
        return bytes.fromhex(writer.commit())
