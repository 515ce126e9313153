"""Round logic shared by the roles, free of I/O: when to aggregate, deadlines, input order.

A round's inputs are the commits the chain accepted. Aggregators wait until every active trainer
(joined and not evicted) committed (and, in round 0, until the job is full, so they never propose
before the trainers joined), or until the round's deadline passed with at least ``min_trainers``
commits; a deadline passed with fewer stalls the round until it is reopened.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from allmende.chain import Commit, Job


@dataclass(frozen=True)
class Readiness:
    """Whether a round can be aggregated now, and a sentence saying why (not); ``stalled``
    when its deadline passed with too few commits (the round waits for a reopen)."""

    ready: bool
    reason: str
    stalled: bool = False


def round_deadline(job: Job) -> int:
    """The chain time after which the job's current round accepts no more commits."""
    return job.round_start + job.round_deadline


def deadline_passed(job: Job, now: float) -> bool:
    """The contract's rule: the deadline is inclusive, so it passed when ``now > deadline``."""
    return now > round_deadline(job)


def committed(commits: Mapping[str, Commit]) -> dict[str, Commit]:
    """The trainers (address -> commit) that committed, i.e. have a nonzero weight."""
    return {trainer: commit for trainer, commit in commits.items() if commit.weight > 0}


def aggregation_readiness(
    job: Job, commits: Mapping[str, Commit], now: float, *, drawn: int | None = None
) -> Readiness:
    """Whether the current round of ``job`` can be aggregated, given every trainer's commit.
    ``drawn``: with trainer sampling (``[privacy] sample_rate``), how many trainers were drawn
    into the round; all of them committed is then enough."""
    done = committed(commits)
    if deadline_passed(job, now):
        if len(done) >= job.min_trainers:
            return Readiness(True, f"deadline passed with {len(done)} commits")
        return Readiness(
            False,
            f"deadline passed with {len(done)} commits, fewer than min_trainers "
            f"{job.min_trainers}; the round is stalled until it is reopened",
            stalled=True,
        )
    active = job.n_active_trainers
    if job.current_round == 0 and active < job.max_trainers:
        return Readiness(
            False, f"{active} of {job.max_trainers} trainers joined; waiting for the rest"
        )
    if drawn is not None:
        active = min(active, drawn)
    if active == 0 or len(done) < active:
        return Readiness(False, f"{len(done)} of {active} trainers committed")
    return Readiness(True, f"all {active} trainers committed")


def by_address(addresses: Iterable[str]) -> list[str]:
    """Addresses in the order aggregation uses: lower-cased hex, ascending."""
    return sorted(addresses, key=str.lower)
