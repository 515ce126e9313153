"""What both roles need: chain calls off the event loop, peer lists, verified blobs, job plans.

Everything read here comes from the chain or a peer and is untrusted: endpoints must be http(s)
URLs, blobs are fetched by hash (the peer client checks it), tensors are decoded canonically and
checked against the task's model, and a job spec must agree with the job's on-chain record.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from torch import Tensor

from allmende.chain import Job, Jobs, Registry
from allmende.errors import ConfigError, NodeError
from allmende.learn.aggregate import check_update
from allmende.learn.task import Task, load_task, seeded_state
from allmende.node.jobspec import JobSpec
from allmende.store.codec import decode_state

if TYPE_CHECKING:
    from allmende.node.process import NodeContext

T = TypeVar("T")
State = dict[str, Tensor]

# train_local and aggregation switch process-wide torch settings: one torch job at a time.
TORCH_LOCK = threading.Lock()
ENDPOINT_CACHE_SECONDS = 30.0
MAX_SPEC_BYTES = 1024 * 1024  # a job spec is a few hundred bytes of JSON
EMPTY_HASH = bytes(32)


async def on_chain(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking chain call in a worker thread, so the node's API keeps serving."""
    return await asyncio.to_thread(fn, *args)


def hex_hash(value: bytes) -> str:
    """A bytes32 hash from the chain as the blob store's lower-case hex name."""
    return bytes(value).hex()


def chain_bindings(ctx: NodeContext) -> tuple[Jobs, Registry]:
    """The node's Jobs and Registry bindings; :class:`NodeError` for an offline node."""
    if ctx.chain is None:
        raise NodeError(
            "The trainer and aggregator roles need a chain; set [chain] deployment in node.toml "
            "(offline nodes can only serve blobs)."
        )
    return ctx.chain.jobs, ctx.chain.registry


class PeerDirectory:
    """Endpoints of nodes, read from the Registry and cached for a while."""

    def __init__(self, registry: Registry, *, cache_seconds: float = ENDPOINT_CACHE_SECONDS):
        self.registry = registry
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, str | None]] = {}

    async def endpoint(self, address: str) -> str | None:
        """The registered endpoint of ``address`` if it is a usable http(s) URL, else None."""
        key = address.lower()
        hit = self._cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < self.cache_seconds:
            return hit[1]
        record = await on_chain(self.registry.node, address)
        url = record.endpoint if record.registered else ""
        usable = url if url.startswith(("http://", "https://")) else None
        self._cache[key] = (time.monotonic(), usable)
        return usable

    async def endpoints(self, addresses: Sequence[str], *, exclude: str = "") -> list[str]:
        """Endpoints of ``addresses`` in that order, without duplicates, unusable ones and
        ``exclude`` (this node itself)."""
        urls: list[str] = []
        for address in addresses:
            if address.lower() == exclude.lower():
                continue
            url = await self.endpoint(address)
            if url is not None and url not in urls:
                urls.append(url)
        return urls


@dataclass(frozen=True)
class Members:
    """A job's trainers (in index order) and aggregators, as of ``n_trainers``/``n_aggregators``."""

    trainers: list[str]
    aggregators: list[str]

    def fresh_for(self, job: Job) -> bool:
        """Whether nobody joined since (the lists only ever grow)."""
        return len(self.trainers) == job.n_trainers and len(self.aggregators) == job.n_aggregators


async def read_members(jobs: Jobs, job_id: int, job: Job) -> Members:
    """The job's trainers and aggregators, read from the chain's views."""
    trainers = [await on_chain(jobs.trainer_at, job_id, i) for i in range(job.n_trainers)]
    aggregators = [await on_chain(jobs.aggregator_at, job_id, i) for i in range(job.n_aggregators)]
    return Members(trainers=trainers, aggregators=aggregators)


@dataclass(frozen=True)
class JobPlan:
    """A job's spec and the installed task it names, checked against the job's chain record."""

    spec: JobSpec
    task: Task
    reference: State  # the task's freshly built model: keys, shapes and dtypes to check against


def check_spec_matches(spec: JobSpec, job: Job) -> None:
    """:class:`ConfigError` unless the spec agrees with the job's on-chain settings."""
    pairs = {
        "rounds": (spec.rounds, job.rounds),
        "reward_per_round": (spec.reward_per_round, job.reward_per_round),
        "min_trainers": (spec.min_trainers, job.min_trainers),
        "max_trainers": (spec.max_trainers, job.max_trainers),
        "quorum": (spec.quorum, job.quorum),
        "round_deadline": (spec.round_deadline, job.round_deadline),
    }
    wrong = [f"{name} {a} vs {b}" for name, (a, b) in pairs.items() if a != b]
    if wrong:
        raise ConfigError(
            f"The job spec disagrees with the job on chain ({', '.join(wrong)}); the job was "
            "created inconsistently and will not be worked on."
        )


async def fetch_spec(ctx: NodeContext, job: Job, peers: Sequence[str]) -> JobSpec:
    """The job's spec blob, fetched by hash from ``peers`` and parsed (ConfigError if bad)."""
    assert ctx.peers is not None
    digest = hex_hash(job.spec_hash)
    await ctx.peers.fetch_blob(digest, peers, max_bytes=MAX_SPEC_BYTES)
    spec = JobSpec.from_bytes(ctx.store.read_bytes(digest))
    check_spec_matches(spec, job)
    return spec


def make_plan(spec: JobSpec) -> JobPlan:
    """Load the spec's task (TaskError if not installed) and build its reference model."""
    task = load_task(spec.task)
    with TORCH_LOCK:
        reference = seeded_state(task, seed=spec.seed)
    return JobPlan(spec=spec, task=task, reference=reference)


async def fetch_state(
    ctx: NodeContext, digest: str, peers: Sequence[str], *, reference: State
) -> State:
    """Tensors of blob ``digest`` from ``peers``: canonical, finite, shaped like ``reference``.

    Raises :class:`~allmende.errors.PeerError` when no peer serves it, and
    :class:`~allmende.errors.CodecError` or :class:`~allmende.errors.AggregationError` when
    the bytes are not a model of this task.
    """
    assert ctx.peers is not None
    await ctx.peers.fetch_blob(digest, peers)
    state = decode_state(ctx.store.read_bytes(digest))
    check_update(state, reference, norm_bound=None)
    return state
