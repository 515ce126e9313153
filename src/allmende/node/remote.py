"""A job seen from outside a node: read-only chain access plus verified blob fetches from peers.

What ``allmende job watch``, ``job show``, ``model get`` and ``node fetch`` use. Blobs land in a
local blob store (a node home's, or a scratch directory) and are fetched by hash from the job's
participants through :mod:`allmende.node.jobdata`, so a peer can neither forge nor alter them;
who the participants are and where they listen comes from :mod:`allmende.node.directory`, as
for the roles.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from allmende.chain import Contracts, Deployment, Job
from allmende.errors import ConfigError
from allmende.net.client import PeerClient
from allmende.net.endpoints import LOOPBACK_RANGES, EndpointPolicy
from allmende.node.config import DEVNET_CHAIN_IDS, load_config, resolve
from allmende.node.directory import MemberCache, PeerDirectory
from allmende.node.home import open_store
from allmende.node.jobdata import State, fetch_spec, fetch_state
from allmende.node.jobspec import JobSpec
from allmende.store.blobs import BlobStore

if TYPE_CHECKING:
    from allmende.learn.task import Task

DEFAULT_DEPLOYMENT = Path(".devnet/deployment.json")


def find_deployment(*, home: Path | None, deployment: Path | None) -> Deployment:
    """The deployment a node home uses, else the given file, else ``.devnet/deployment.json``."""
    if home is not None:
        config = load_config(home)
        if config.chain.deployment is None:
            raise ConfigError(f"The node at {home} is offline; it has no chain to read jobs from.")
        return Deployment.load(resolve(home, config.chain.deployment))
    path = deployment or DEFAULT_DEPLOYMENT
    if not path.is_file():
        raise ConfigError(
            f"No deployment file at {path}; start a devnet with `allmende devnet up`, or pass "
            "--deployment PATH or --home NODE_HOME."
        )
    return Deployment.load(path)


class JobReader:
    """Reads a job's chain state and fetches its blobs; close with :meth:`aclose`."""

    def __init__(
        self, contracts: Contracts, store: BlobStore, *, policy: EndpointPolicy | None = None
    ) -> None:
        self.contracts = contracts
        self.jobs = contracts.jobs
        self.store = store
        self.policy = policy or reader_policy(None, contracts.deployment)
        self.peers = PeerClient(store, policy=self.policy)
        self.directory = PeerDirectory(contracts.registry, policy=self.policy)
        self._members = MemberCache(contracts.jobs)

    async def aclose(self) -> None:
        await self.peers.aclose()

    def job(self, job_id: int) -> Job:
        job = self.jobs.job(job_id)
        if job.status == 0:
            raise ConfigError(f"There is no job {job_id} on this chain; check the job id.")
        return job

    async def job_peers(self, job_id: int, job: Job, *, first: Sequence[str] = ()) -> list[str]:
        """Endpoints of ``first``, then the job's aggregators, owner and trainers."""
        members = await self._members.get(job_id, job)
        return await self.directory.endpoints([*first, *members.participants(job)])

    async def all_peers(self) -> list[str]:
        """Endpoints of every registered node."""
        return await self.directory.endpoints(self.contracts.registry.node_addresses())

    async def spec(self, job_id: int, job: Job) -> JobSpec:
        """The job's spec, fetched by hash from its participants and checked."""
        return await fetch_spec(self.peers, self.store, job, await self.job_peers(job_id, job))

    async def state(
        self,
        digest: str,
        peers: Sequence[str],
        *,
        reference: State,
        metadata: Mapping[str, str] | None = None,
    ) -> State:
        """Blob ``digest`` as tensors shaped like ``reference``, carrying exactly ``metadata``
        (see :func:`fetch_state`)."""
        return await fetch_state(
            self.peers, self.store, digest, peers, reference=reference, metadata=metadata
        )


def reader_policy(home: Path | None, deployment: Deployment) -> EndpointPolicy:
    """The endpoint policy of a tool reading a job: the node home's, or without a home, loopback
    allowed on a devnet chain and public addresses only elsewhere."""
    if home is not None:
        return load_config(home).net.endpoint_policy
    if deployment.chain_id in DEVNET_CHAIN_IDS:
        return EndpointPolicy.allowing(LOOPBACK_RANGES)
    return EndpointPolicy()


@contextlib.asynccontextmanager
async def open_reader(home: Path | None, deployment: Path | None) -> AsyncIterator[JobReader]:
    """A :class:`JobReader` on the chain of ``home`` (or ``deployment``), fetching into the
    node's store, or into a scratch store without a home."""
    found = find_deployment(home=home, deployment=deployment)
    contracts = Contracts.connect(found)
    with tempfile.TemporaryDirectory(prefix="allmende-blobs-") as scratch:
        store = open_store(home) if home is not None else BlobStore(Path(scratch))
        reader = JobReader(contracts, store, policy=reader_policy(home, found))
        try:
            yield reader
        finally:
            await reader.aclose()


def task_and_reference(spec: JobSpec) -> tuple[Task, State]:
    """The installed task a spec names and its model's keys, shapes and dtypes."""
    from allmende.learn.task import load_task, seeded_state

    task = load_task(spec.task, data=spec.data)
    return task, seeded_state(task, seed=spec.seed)


def evaluate(task: Task, state: State) -> dict[str, float]:
    """The task's metrics of ``state`` on its test split; none (``{}``) for a task that has no
    shared test split (one that trains on its operators' own data)."""
    from allmende.errors import TaskError

    try:
        test = task.test_data()
    except TaskError:
        return {}
    model = task.model()
    model.load_state_dict(state, strict=True)
    return task.evaluate(model, test)
