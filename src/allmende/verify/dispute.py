"""The off-chain half of a dispute (``contracts/Disputes.vy``): what each party computes.

A challenge narrows one disputed segment to one step by bisection. Each party computes states at
any step of the segment by replaying from the segment's first checkpoint
(:func:`state_at`); the provider posts its hash at the midpoint, the challenger answers whether its
own replay agrees (:func:`agrees`), and once one step is left each committee member replays that
step from the agreed state and votes whether it gives the provider's hash (:func:`step_replays`).
"""

from __future__ import annotations

from allmende.errors import ConfigError
from allmende.verify.trace import ComputeRound, State, Stepper, checkpoint_hash, deterministic


def state_at(job: ComputeRound, segment_start: State, segment: int, step: int) -> State:
    """The state after absolute step ``step`` (within segment ``segment``), replayed from the
    segment's first checkpoint."""
    first = segment * job.k
    if not first <= step <= first + job.k:
        raise ConfigError(f"Step {step} is not in segment {segment} (steps {first} .. "
                          f"{first + job.k}).")  # fmt: skip
    with deterministic():
        return Stepper(job).run(segment_start, job.plan[first:step])


def agrees(
    job: ComputeRound, segment_start: State, segment: int, step: int, claimed: bytes
) -> bool:
    """The challenger's answer: does its own replay to ``step`` hash to the provider's claim?"""
    return checkpoint_hash(state_at(job, segment_start, segment, step)) == claimed


def step_replays(job: ComputeRound, lo_state: State, lo: int, hi_hash: bytes) -> bool:
    """A committee member's vote: one step from ``lo_state`` (after step ``lo``) on the plan's
    batch of that step gives ``hi_hash``."""
    with deterministic():
        return checkpoint_hash(Stepper(job).run(lo_state, job.plan[lo : lo + 1])) == hi_hash
