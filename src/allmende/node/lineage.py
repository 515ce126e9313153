"""A job's lineage: every round's model, its included trainers and their updates, the payouts,
and a check of all of it against the chain and the blobs.

The history comes from the Jobs contract's events (``UpdateCommitted``, ``RoundFinalized``,
``Credited``) and views (``round_result``, ``jobs``). :func:`check_lineage` then verifies, round
by round, that the event and the view name the same model, that the model blob exists and hashes
to that name, that every included trainer committed in that round, and that aggregating the
committed updates with the job's rule from the previous model gives exactly that model again.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from allmende.chain import Job
from allmende.chain.events import Credited, JobCreated, RoundFinalized, UpdateCommitted
from allmende.chain.jobs import from_bitmap
from allmende.chain.stream import DEFAULT_CHUNK_BLOCKS
from allmende.errors import AllmendeError
from allmende.learn.aggregate import aggregate
from allmende.node.jobdata import State, hex_hash, update_metadata
from allmende.node.jobspec import JobSpec
from allmende.node.remote import JobReader
from allmende.store.codec import state_hash

CHUNK_BLOCKS = DEFAULT_CHUNK_BLOCKS  # blocks per eth_getLogs request


@dataclass
class RoundRecord:
    """One finalized round as the chain recorded it."""

    round: int
    model_hash: str
    included: list[str]
    total_weight: int
    commits: dict[str, tuple[str, int]] = field(default_factory=dict)  # trainer -> (hash, weight)
    credits: dict[str, int] = field(default_factory=dict)  # account -> wei
    event_model_hash: str | None = None


@dataclass
class JobHistory:
    """A job's record: its initial model and every finalized round, in order."""

    job_id: int
    job: Job
    trainers: list[str]
    initial_model_hash: str
    rounds: list[RoundRecord]

    def payouts(self) -> dict[str, int]:
        """Wei credited to each account over all rounds."""
        totals: dict[str, int] = defaultdict(int)
        for record in self.rounds:
            for account, amount in record.credits.items():
                totals[account] += amount
        return dict(totals)


@dataclass(frozen=True)
class Check:
    """One verified (or failed) fact about the lineage."""

    round: int | None
    what: str
    ok: bool
    detail: str = ""


def read_history(reader: JobReader, job_id: int) -> JobHistory:
    """The job's finalized rounds from the chain's events and views."""
    job = reader.job(job_id)
    trainers = reader.jobs.trainers(job_id)
    contracts = reader.contracts
    stream = contracts.event_stream()
    head = contracts.client.block_number()
    mine = []
    for start in range(contracts.deployment.deploy_block, head + 1, CHUNK_BLOCKS):
        events = stream.fetch(start, min(head, start + CHUNK_BLOCKS - 1))
        mine += [event for event in events if getattr(event, "job_id", None) == job_id]
    initial = hex_hash(job.model_hash)
    commits: dict[int, dict[str, tuple[str, int]]] = defaultdict(dict)
    credits: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    finalized: dict[int, str] = {}
    for event in mine:
        if isinstance(event, JobCreated):
            initial = hex_hash(event.model_hash)
        elif isinstance(event, UpdateCommitted):
            commits[event.round][event.trainer] = (hex_hash(event.update_hash), event.weight)
        elif isinstance(event, Credited):
            credits[event.round][event.account] += event.amount
        elif isinstance(event, RoundFinalized):
            finalized[event.round] = hex_hash(event.model_hash)
    finished_rounds = job.current_round
    rounds = []
    for round_ in range(finished_rounds):
        result = reader.jobs.round_result(job_id, round_)
        rounds.append(
            RoundRecord(
                round=round_,
                model_hash=hex_hash(result.model_hash),
                included=[trainers[i] for i in from_bitmap(result.included) if i < len(trainers)],
                total_weight=result.total_weight,
                commits=commits[round_],
                credits=dict(credits[round_]),
                event_model_hash=finalized.get(round_),
            )
        )
    return JobHistory(job_id, job, trainers, initial, rounds)


async def check_lineage(
    reader: JobReader, history: JobHistory, spec: JobSpec, reference: State
) -> list[Check]:
    """Verify every round of ``history`` against the chain and the blobs (see module doc)."""
    checks: list[Check] = []
    job_id, job = history.job_id, history.job
    peers = await reader.job_peers(job_id, job)
    previous: State | None = await _state(reader, history.initial_model_hash, peers, reference)
    checks.append(Check(None, "initial model blob", previous is not None))
    for record in history.rounds:
        r = record.round
        checks.append(
            Check(r, "event and view agree", record.event_model_hash == record.model_hash)
        )
        missing = [t for t in record.included if t not in record.commits]
        checks.append(Check(r, "included trainers committed", not missing, ", ".join(missing)))
        model = await _state(reader, record.model_hash, peers, reference)
        checks.append(Check(r, "model blob matches its hash", model is not None))
        if previous is not None and model is not None and not missing:
            redone = await _reaggregate(reader, job_id, job, spec, reference, previous, record)
            checks.append(
                Check(r, "re-aggregation gives the same model", redone == record.model_hash)
            )
        previous = model
    if job.final_model_hash != bytes(32):
        last = history.rounds[-1].model_hash if history.rounds else None
        checks.append(
            Check(None, "final model is the last round's", hex_hash(job.final_model_hash) == last)
        )
    return checks


async def _state(
    reader: JobReader,
    digest: str,
    peers: list[str],
    reference: State,
    metadata: dict[str, str] | None = None,
) -> State | None:
    try:
        return await reader.state(digest, peers, reference=reference, metadata=metadata)
    except AllmendeError:
        return None


async def _reaggregate(
    reader: JobReader,
    job_id: int,
    job: Job,
    spec: JobSpec,
    reference: State,
    previous: State,
    record: RoundRecord,
) -> str | None:
    updates = []
    for trainer in record.included:
        digest, weight = record.commits[trainer]
        peers = await reader.job_peers(job_id, job, first=[trainer])
        author = update_metadata(job_id, record.round, trainer)  # as the aggregators checked
        state = await _state(reader, digest, peers, reference, author)
        if state is None:
            return None
        updates.append((trainer, state, weight))
    rule = spec.aggregation
    return state_hash(aggregate(rule.rule, previous, updates, rule.params))
