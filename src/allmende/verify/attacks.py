"""Cheating providers, as code: each fakes some segments of its trace in its own way.

The test suite and ``benchmarks/verification.py`` run these against the verifier of
:mod:`allmende.verify.check`. A provider fakes the segments in ``faked`` (the others it trains
honestly, from whatever state it reached) and commits the trace it made; the attacks:

- ``skip``: trains only ``k // 2`` of a faked segment's ``k`` steps (``k = 1``: none);
- ``replay``: replays its previous segment's update instead of computing a new one;
- ``noise``: trains honestly, then adds Gaussian noise with 10% of the update's norm;
- ``data``: trains on other batches than the plan assigns, but commits the assigned batch hash;
- ``interpolate``: forges a run of faked segments by one real step, extrapolated, and the
  checkpoints in between interpolated linearly;
- ``checkpoint``: trains honestly but serves, for a faked segment's first checkpoint, bytes that
  do not hash to its leaf (it did not keep the checkpoint).

Each is caught when the verifier samples one of its faked segments; ``honest`` never is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from allmende.errors import ConfigError
from allmende.store.blobs import BlobStore
from allmende.store.codec import encode_state
from allmende.verify.plan import batch_plan, n_items
from allmende.verify.trace import ComputeRound, State, Stepper, Trace, train_traced

ATTACKS = ("skip", "replay", "noise", "data", "interpolate", "checkpoint")
NOISE_SHARE = 0.1


@dataclass
class ProviderRun:
    """What a provider committed and how it serves checkpoints."""

    update: State
    trace: Trace
    store: BlobStore
    bad_blobs: dict[str, bytes]  # checkpoint name -> the bytes served instead

    def fetch(self, digest: str) -> bytes:
        if digest in self.bad_blobs:
            return self.bad_blobs[digest]
        return self.store.read_bytes(digest)


def faked_segments(segments: int, fraction: float, *, seed: int) -> set[int]:
    """``max(1, round(fraction * segments))`` segments drawn with ``seed`` (none at 0)."""
    if not 0 <= fraction <= 1:
        raise ConfigError(f"A fake fraction is in [0, 1], not {fraction}.")
    if fraction == 0:
        return set()
    count = max(1, round(fraction * segments))
    order = torch.randperm(segments, generator=torch.Generator().manual_seed(seed))
    return {int(i) for i in order[:count]}


def _add(a: State, b: State, scale: float) -> State:
    return {key: a[key] + scale * b[key] for key in a}


def _sub(a: State, b: State) -> State:
    return {key: a[key] - b[key] for key in a}


def run_provider(
    job: ComputeRound,
    start: State,
    store: BlobStore,
    *,
    attack: str = "honest",
    faked: set[int] | None = None,
    seed: int = 0,
) -> ProviderRun:
    """A provider's round under ``attack`` (``"honest"`` or one of :data:`ATTACKS`)."""
    if attack != "honest" and attack not in ATTACKS:
        raise ConfigError(f"Unknown attack '{attack}'; use honest or one of {', '.join(ATTACKS)}.")
    faked = set() if attack == "honest" else set(faked or ())
    stepper = Stepper(job)
    noise = torch.Generator().manual_seed(seed)
    other = batch_plan(seed + 1, items=n_items(job.data), steps=job.steps,
                       batch_size=int(job.plan.shape[1]))  # fmt: skip
    last_delta: dict[str, State] = {"delta": {k: torch.zeros_like(v) for k, v in start.items()}}
    # interpolate: a run of faked segments' first index -> (start, forged end, length)
    runs: dict[int, tuple[State, State, int]] = {}

    def segment(i: int, state: State, batches: torch.Tensor) -> State:
        if i not in faked or attack == "checkpoint":
            end = stepper.run(state, batches)
        elif attack == "skip":
            end = stepper.run(state, batches[: job.k // 2]) if job.k > 1 else dict(state)
        elif attack == "replay":
            end = _add(state, last_delta["delta"], 1.0)
        elif attack == "noise":
            end = stepper.run(state, batches)
            update = _sub(end, state)
            norm = math.sqrt(sum(float((v.double() ** 2).sum()) for v in update.values()))
            size = sum(v.numel() for v in update.values())
            std = NOISE_SHARE * norm / math.sqrt(size)
            end = {
                k: v + std * torch.randn(v.shape, generator=noise, dtype=v.dtype)
                for k, v in end.items()
            }
        elif attack == "data":
            end = stepper.run(state, other[i * job.k : (i + 1) * job.k])
        else:  # interpolate
            first = i
            while first - 1 in faked:
                first -= 1
            if first == i:
                length = 1
                while i + length in faked:
                    length += 1
                one = stepper.run(state, batches[:1])
                runs[first] = (state, _add(state, _sub(one, state), job.k * length), length)
            begin, finish, length = runs[first]
            t = (i - first + 1) / length
            end = {k: begin[k] + t * (finish[k] - begin[k]) for k in begin}
        last_delta["delta"] = _sub(end, state)
        return end

    update, trace = train_traced(job, start, store, segment_fn=segment)
    bad: dict[str, bytes] = {}
    if attack == "checkpoint":
        for i in faked:
            name = trace.leaves[i].params.hex()
            wrong = {k: v + 1e-3 for k, v in update.items()}
            bad[name] = encode_state(wrong)
    return ProviderRun(update=update, trace=trace, store=store, bad_blobs=bad)
