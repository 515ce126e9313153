"""Who takes part in a job and where to reach them: members from the Jobs contract, endpoints
from the Registry.

An endpoint comes from the chain, so anyone who registered wrote it: only those the node's
:class:`~allmende.net.endpoints.EndpointPolicy` allows are used (http(s), public addresses or
the ranges the config allows); a refused one is recorded as a ``refused`` peer fault and the
member is skipped. :class:`PeerDirectory` caches each node's endpoint for a while;
:class:`Members` is a job's trainer and aggregator lists as of the counts in its record (they
only ever grow).
Roles and the read-only tools (:mod:`allmende.node.remote`) share both.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from allmende.net.endpoints import EndpointPolicy
from allmende.node.context import on_chain

if TYPE_CHECKING:
    from allmende.chain import Job, Jobs, Node, Registry

log = logging.getLogger(__name__)

ENDPOINT_CACHE_SECONDS = 30.0
OnRefused = Callable[[str, str, str], None]  # (endpoint, fault kind, detail)


def usable_endpoint(record: Node, policy: EndpointPolicy) -> tuple[str | None, str | None]:
    """``(endpoint, None)`` when the node is registered with an endpoint ``policy`` allows, else
    ``(None, why not)`` (the reason is None for a node that is not registered)."""
    if not record.registered:
        return None, None
    problem = policy.url_problem(record.endpoint)
    return (None, problem) if problem is not None else (record.endpoint, None)


class PeerDirectory:
    """Endpoints of nodes, read from the Registry and cached for ``cache_seconds``.

    ``policy`` says which endpoints may be used (default: public addresses only);
    ``on_refused(endpoint, "refused", detail)`` hears of each refused one (a peer fault), once
    per cache period.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        policy: EndpointPolicy | None = None,
        on_refused: OnRefused | None = None,
        cache_seconds: float = ENDPOINT_CACHE_SECONDS,
    ):
        self.registry = registry
        self.policy = policy or EndpointPolicy()
        self.on_refused = on_refused
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, str | None]] = {}

    async def endpoint(self, address: str) -> str | None:
        """The usable endpoint of ``address`` (see :func:`usable_endpoint`), or None."""
        key = address.lower()
        hit = self._cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < self.cache_seconds:
            return hit[1]
        record = await on_chain(self.registry.node, address)
        usable, problem = usable_endpoint(record, self.policy)
        if problem is not None:
            detail = f"of node {address} is skipped: {problem}"
            if self.on_refused is not None:
                self.on_refused(record.endpoint, "refused", detail)
            else:
                log.warning("The endpoint %r %s", record.endpoint, detail)
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

    def participants(self, job: Job) -> list[str]:
        """Everyone who may hold the job's blobs: the aggregators, the owner, the trainers."""
        return [*self.aggregators, job.owner, *self.trainers]


async def read_members(jobs: Jobs, job_id: int, job: Job) -> Members:
    """The job's trainers and aggregators, read from the chain's views."""
    trainers = [await on_chain(jobs.trainer_at, job_id, i) for i in range(job.n_trainers)]
    aggregators = [await on_chain(jobs.aggregator_at, job_id, i) for i in range(job.n_aggregators)]
    return Members(trainers=trainers, aggregators=aggregators)


class MemberCache:
    """Each job's :class:`Members`, read again only when someone joined."""

    def __init__(self, jobs: Jobs) -> None:
        self.jobs = jobs
        self._members: dict[int, Members] = {}

    async def get(self, job_id: int, job: Job) -> Members:
        cached = self._members.get(job_id)
        if cached is None or not cached.fresh_for(job):
            cached = self._members[job_id] = await read_members(self.jobs, job_id, job)
        return cached
