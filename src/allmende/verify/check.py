"""The verifier's check of a committed trace: sample segments, re-execute them, compare hashes.

The segments are sampled with a *beacon* the provider could not know when it committed: the hash
of a block mined after the round's commit window closed (:func:`sample_segments`). For each
sampled segment ``i`` the verifier

1. checks that leaf ``i + 1`` commits to the batches the plan assigns to the segment (training
   on other data than assigned shows here without any re-execution);
2. fetches checkpoint ``i`` from the provider and checks it hashes to leaf ``i`` (a checkpoint
   that is not served, or not the one committed, fails the segment);
3. re-executes the ``k`` steps and compares the SHA-256 of the result with leaf ``i + 1``.

Step 3 is exact on the same CPU platform and thread count. Across platforms a verifier may pass
``tolerance``: the relative L2 distance ``|ours - theirs| / |ours - start|`` (the segment's
own update as the scale) up to which a differing checkpoint ``i + 1`` is accepted; see the
README's "Verified compute" section for the measured drift and the threshold.

The detection rule: a provider that faked ``b`` of ``n`` segments escapes ``s`` samples drawn
without replacement with probability ``C(n - b, s) / C(n, s) <= (1 - b/n)^s``
(:func:`escape_probability`); :func:`samples_needed` gives the smallest ``s`` for a target.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from allmende.errors import CodecError, ConfigError, TaskError
from allmende.store.codec import decode_state
from allmende.verify.merkle import merkle_root
from allmende.verify.plan import batch_hash
from allmende.verify.trace import (
    ComputeRound,
    State,
    Stepper,
    Trace,
    checkpoint_hash,
    deterministic,
)

Fetch = Callable[[str], bytes]
"""Fetch a checkpoint blob by its hex SHA-256 from the provider. The bytes are not trusted (they
are hashed and decoded here); the fetch itself must bound their size, to
:func:`~allmende.store.codec.encoded_size` of the round's model, as the node's peer fetch does."""


def sample_segments(beacon: bytes, provider: str, *, segments: int, count: int) -> list[int]:
    """``min(count, segments)`` distinct segment indices, drawn from SHA-256 of the beacon and
    the provider's address (sorted)."""
    if segments < 1 or count < 1:
        raise ConfigError("A verifier samples at least one of at least one segment.")
    chosen: set[int] = set()
    counter = 0
    while len(chosen) < min(count, segments):
        word = hashlib.sha256(
            b"allmende/sample/" + beacon + provider.lower().encode() + counter.to_bytes(8, "big")
        ).digest()
        chosen.add(int.from_bytes(word, "big") % segments)
        counter += 1
    return sorted(chosen)


def escape_probability(segments: int, faked: int, samples: int) -> float:
    """The chance that ``samples`` distinct segments miss all ``faked`` of ``segments``."""
    samples = min(samples, segments)
    if faked > segments - samples:
        return 0.0
    return math.comb(segments - faked, samples) / math.comb(segments, samples)


def samples_needed(fake_fraction: float, detection: float) -> int:
    """The smallest ``s`` with ``1 - (1 - f)^s >= detection`` (sampling with replacement,
    which never overstates detection)."""
    if not 0 < fake_fraction < 1 or not 0 < detection < 1:
        raise ConfigError("fake_fraction and detection are probabilities strictly in (0, 1).")
    return math.ceil(math.log(1 - detection) / math.log(1 - fake_fraction))


def relative_l2(ours: State, theirs: State, start: State) -> float:
    """``|ours - theirs| / |ours - start|`` over all tensors (inf when the update is zero and
    the states differ)."""
    diff = sum(float(((ours[k].double() - theirs[k].double()) ** 2).sum()) for k in ours)
    scale = sum(float(((ours[k].double() - start[k].double()) ** 2).sum()) for k in ours)
    if diff == 0:
        return 0.0
    return math.sqrt(diff / scale) if scale > 0 else math.inf


@dataclass(frozen=True)
class SegmentCheck:
    segment: int
    ok: bool
    reason: str  # "ok", "batches", "checkpoint", "mismatch"
    distance: float = 0.0


@dataclass
class Verdict:
    """What a verifier checked of one trace, and what failed."""

    ok: bool
    reason: str
    checks: list[SegmentCheck] = field(default_factory=list)

    @property
    def failed(self) -> list[SegmentCheck]:
        return [check for check in self.checks if not check.ok]


def _load(fetch: Fetch, digest: bytes) -> State | None:
    """The checkpoint named ``digest``, or None when the provider does not serve exactly it."""
    try:
        data = fetch(digest.hex())
    except Exception:  # a provider that fails to serve fails the segment, whatever the cause
        return None
    if hashlib.sha256(data).digest() != digest:
        return None
    try:
        return decode_state(data, allowed_dtypes=frozenset({"F32"}))
    except CodecError:
        return None


def check_segment(
    job: ComputeRound,
    trace: Trace,
    segment: int,
    fetch: Fetch,
    *,
    stepper: Stepper | None = None,
    tolerance: float = 0.0,
) -> SegmentCheck:
    """Re-execute segment ``segment`` of ``trace`` (see the module docstring); call inside
    :func:`~allmende.verify.trace.deterministic`."""
    first, last = trace.leaves[segment], trace.leaves[segment + 1]
    batches = job.batches(segment)
    if last.batches != batch_hash(batches) or last.step != (segment + 1) * job.k:
        return SegmentCheck(segment, False, "batches")
    start = _load(fetch, first.params)
    if start is None:
        return SegmentCheck(segment, False, "checkpoint")
    try:
        ours = (stepper or Stepper(job)).run(start, batches)
    except TaskError:
        return SegmentCheck(segment, False, "checkpoint")
    if checkpoint_hash(ours) == last.params:
        return SegmentCheck(segment, True, "ok")
    if tolerance > 0:
        theirs = _load(fetch, last.params)
        if theirs is not None and theirs.keys() == ours.keys():
            distance = relative_l2(ours, theirs, start)
            return SegmentCheck(segment, distance <= tolerance, "ok" if distance <= tolerance
                                else "mismatch", distance)  # fmt: skip
    return SegmentCheck(segment, False, "mismatch")


def verify_trace(
    job: ComputeRound,
    trace: Trace,
    *,
    root: bytes,
    start_hash: bytes,
    update_hash: bytes,
    beacon: bytes,
    provider: str,
    samples: int,
    fetch: Fetch,
    threads: int = 1,
    tolerance: float = 0.0,
    stepper: Stepper | None = None,
) -> Verdict:
    """Check a provider's trace against its committed ``root``, the round's model
    (``start_hash``, leaf 0) and its committed update (``update_hash``, the last leaf), then
    re-execute ``samples`` segments drawn from ``beacon``."""
    if trace.k != job.k or trace.segments != job.segments:
        return Verdict(False, "shape")
    if merkle_root(trace.leaves) != root:
        return Verdict(False, "root")
    if trace.leaves[0].params != start_hash or trace.leaves[-1].params != update_hash:
        return Verdict(False, "ends")
    chosen = sample_segments(beacon, provider, segments=job.segments, count=samples)
    stepper = stepper or Stepper(job)
    with deterministic(threads):
        checks = [
            check_segment(job, trace, i, fetch, stepper=stepper, tolerance=tolerance)
            for i in chosen
        ]
    failed = [check for check in checks if not check.ok]
    return Verdict(not failed, failed[0].reason if failed else "ok", checks)
