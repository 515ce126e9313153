"""Where an Allmende round spends its time, read from the nodes' own logs.

The trainer and aggregator roles log one line per step of a round (``trained ... committed``,
``proposed``, ``finalized``) with a millisecond timestamp. From those lines, per round *r*:

- ``train``: from round *r - 1* being finalized (for round 0: the first commit is the start, so
  round 0 has no train phase) to the last trainer's commit: noticing the new round, fetching the
  model, training, committing on chain;
- ``aggregate``: last commit to the first proposal: noticing the commits, fetching the updates,
  aggregating, proposing on chain;
- ``finalize``: first proposal to finalization. The vote that completes the quorum finalizes
  the round in the same transaction, and its aggregator logs ``finalized`` right after its
  ``proposed`` line; so with quorum 1 this phase is about 0, and otherwise it is the wait for
  the other aggregators' votes.

This is a diagnostic: lines it does not recognise are ignored, and a round missing a step has no
phases rather than a wrong one.
"""

from __future__ import annotations

import datetime as dt
import re
import statistics
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

_LINE = re.compile(
    r"^(?P<stamp>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ allmende\.node\.roles\.\w+: "
    r"Job (?P<job>\d+) round (?P<round>\d+): (?P<what>committed|trained|proposed|finalized)"
)
_STEP = {"trained": "commit", "committed": "commit", "proposed": "propose", "finalized": "final"}
PHASES = ("train", "aggregate", "finalize")


def _stamp(text: str) -> float:
    return dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=dt.UTC).timestamp()


def round_events(lines: Iterable[str], *, job_id: int) -> dict[int, dict[str, list[float]]]:
    """round -> step (``commit``, ``propose``, ``final``) -> timestamps, for one job."""
    events: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for line in lines:
        match = _LINE.match(line)
        if match is None or int(match["job"]) != job_id:
            continue
        events[int(match["round"])][_STEP[match["what"]]].append(_stamp(match["stamp"]))
    return events


def round_phases(events: dict[int, dict[str, list[float]]]) -> dict[int, dict[str, float]]:
    """Seconds of each phase per round, for the rounds whose steps were all seen."""
    phases: dict[int, dict[str, float]] = {}
    for round_, steps in sorted(events.items()):
        if not (steps.get("commit") and steps.get("propose") and steps.get("final")):
            continue
        last_commit, first_proposal = max(steps["commit"]), min(steps["propose"])
        finalized = min(steps["final"])
        entry = {"aggregate": first_proposal - last_commit, "finalize": finalized - first_proposal}
        previous = events.get(round_ - 1, {}).get("final")
        if previous:
            entry["train"] = last_commit - min(previous)
        phases[round_] = entry
    return phases


def _lines(log_files: Iterable[Path]) -> list[str]:
    lines: list[str] = []
    for path in log_files:
        lines.extend(path.read_text(errors="replace").splitlines())
    return lines


def finalized_at(log_files: Iterable[Path], *, job_id: int) -> list[float]:
    """When each round was finalized (the first ``finalized`` line), for rounds 0, 1, ... as
    far as no round is missing. The stamps are written as the finalizing transaction (the vote
    that completed the quorum) returns, so unlike a poll of the chain from a busy machine they
    never lump rounds together."""
    events = round_events(_lines(log_files), job_id=job_id)
    ends: list[float] = []
    while events.get(len(ends), {}).get("final"):
        ends.append(min(events[len(ends)]["final"]))
    return ends


def phase_summary(log_files: Iterable[Path], *, job_id: int) -> dict[str, float]:
    """Mean seconds of each phase over the rounds after the first, from every node's log."""
    phases = round_phases(round_events(_lines(log_files), job_id=job_id))
    summary = {}
    for name in PHASES:
        values = [entry[name] for round_, entry in phases.items() if round_ > 0 and name in entry]
        if values:
            summary[name] = statistics.fmean(values)
    return summary
