"""Which of a round's updates are not the committing trainer's own work, free of I/O.

A trainer is paid for the round when it is in the ``included`` set the committee votes for, so an
aggregator leaves out every update that copies work instead of doing it. Three rules, applied to
the round's fetched updates by :func:`screen` in this order:

1. **Author**: an update blob names its job, round and author in its ``__metadata__``
   (:func:`~allmende.node.jobdata.update_metadata`). One that does not name exactly the trainer
   that committed it, in this job and round, is left out: the same bytes committed by a copier
   name their real author, and an update replayed from another round or job names that one.
2. **Zero update**: tensors bitwise equal to the round's global model are no work at all.
3. **Same tensors under another name**: of updates with the same tensor data (the payload hash,
   which ignores the header), only the one committed first in chain order (block number, then
   log index of its ``UpdateCommitted``) stays.

Why the first commit is the original: a trainer serves its update only once its commit is mined
(:meth:`~allmende.node.roles.trainer.TrainerRole.publish_update`), and the blob's hash tells
nothing about its tensors, so a copier gets the tensors at the earliest in the block after the
author's commit, and its commit comes later in chain order. (A copier that gets the tensors by
other means, from the author itself, is the author's accomplice: the author could as well have
committed for it.) The order of the logs is the chain's, so every honest aggregator reads the
same one.

Every rule depends only on the commits, the blobs' bytes (content-addressed: the same for every
aggregator) and the chain's order, never on when or from whom an update arrived, so honest
aggregators leave out the same trainers. What it does not catch: a copy with its tensors changed
by a bit (that is a different update; robust aggregation and the norm bound are the defence).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

ChainPosition = tuple[int, int]  # (block number, log index) of a commit's UpdateCommitted


@dataclass(frozen=True)
class Candidate:
    """A fetched, decoded update of the round, as :func:`screen` judges it."""

    trainer: str
    metadata: Mapping[str, str]
    payload: str  # SHA-256 of the tensor data (TensorBlob.payload)
    position: ChainPosition | None  # None: its commit's log was not read yet


@dataclass
class Screening:
    """What :func:`screen` decided: the trainers left out with their reasons, and the trainers
    whose chain order is needed but not known yet (the caller waits for their logs)."""

    excluded: dict[str, str] = field(default_factory=dict)
    unordered: list[str] = field(default_factory=list)


def screen(
    candidates: Iterable[Candidate],
    *,
    expected: Callable[[str], Mapping[str, str]],
    global_payload: str,
) -> Screening:
    """Apply the three rules (module docstring) to the round's decoded updates.

    ``expected(trainer)`` is the metadata the trainer's own update must carry;
    ``global_payload`` the payload hash of the round's global model. The result does not depend
    on the order of ``candidates``.
    """
    result = Screening()
    by_payload: dict[str, list[Candidate]] = {}
    for candidate in sorted(candidates, key=lambda c: c.trainer.lower()):
        wanted = dict(expected(candidate.trainer))
        if dict(candidate.metadata) != wanted:
            result.excluded[candidate.trainer] = (
                f"it is not this trainer's own update for this round (a copy): its blob names "
                f"{_author(candidate.metadata)}, not {_author(wanted)}"
            )
        elif candidate.payload == global_payload:
            result.excluded[candidate.trainer] = (
                "its tensors are the round's global model unchanged (a zero update)"
            )
        else:
            by_payload.setdefault(candidate.payload, []).append(candidate)
    for group in by_payload.values():
        if len(group) < 2:
            continue
        unknown = [c.trainer for c in group if c.position is None]
        if unknown:
            result.unordered.extend(unknown)
            continue
        first, *later = sorted(group, key=lambda c: c.position or (0, 0))
        block, index = first.position or (0, 0)
        for copy in later:
            result.excluded[copy.trainer] = (
                f"its tensors are those of {first.trainer}'s update, committed before it (block "
                f"{block}, log {index}): the same tensors under another name (a copy)"
            )
    result.unordered.sort(key=str.lower)
    return result


def _author(metadata: Mapping[str, str]) -> str:
    if not metadata:
        return "no author"
    parts = [f"{key.removeprefix('allmende.')} {value}" for key, value in sorted(metadata.items())]
    return ", ".join(parts)[:300]
