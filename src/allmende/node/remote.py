"""A job seen from outside a node: read-only chain access plus verified blob fetches from peers.

What ``allmende job watch``, ``job show`` and ``model get`` use. Blobs land in a local blob store
(a node home's, or a scratch directory) and are fetched by hash from the job's participants, so
a peer can neither forge nor alter them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from allmende.chain import Contracts, Deployment, Job
from allmende.errors import ConfigError
from allmende.learn.aggregate import check_update
from allmende.learn.task import Task, load_task, seeded_state
from allmende.net.client import PeerClient
from allmende.node.config import BLOBS_DIR, load_config, resolve
from allmende.node.jobspec import JobSpec
from allmende.node.roles.common import MAX_SPEC_BYTES, State, check_spec_matches, hex_hash
from allmende.store.blobs import BlobStore
from allmende.store.codec import decode_state

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


def node_store(home: Path) -> BlobStore:
    """The blob store of the node at ``home``."""
    config = load_config(home)
    return BlobStore(
        resolve(home, config.node.data_dir) / BLOBS_DIR,
        max_blob_bytes=config.store.max_blob_bytes,
    )


class JobReader:
    """Reads a job's chain state and fetches its blobs; close with :meth:`aclose`."""

    def __init__(self, contracts: Contracts, store: BlobStore) -> None:
        self.contracts = contracts
        self.jobs = contracts.jobs
        self.store = store
        self.peers = PeerClient(store)
        self._endpoints: dict[str, str | None] = {}
        self._members: dict[int, tuple[int, int, list[str]]] = {}

    async def aclose(self) -> None:
        await self.peers.aclose()

    def job(self, job_id: int) -> Job:
        job = self.jobs.job(job_id)
        if job.status == 0:
            raise ConfigError(f"There is no job {job_id} on this chain; check the job id.")
        return job

    def endpoint(self, address: str) -> str | None:
        if address not in self._endpoints:
            record = self.contracts.registry.node(address)
            url = record.endpoint if record.registered else ""
            self._endpoints[address] = url if url.startswith(("http://", "https://")) else None
        return self._endpoints[address]

    def members(self, job_id: int, job: Job) -> list[str]:
        """The job's aggregators, owner and trainers (re-read only when someone joined)."""
        cached = self._members.get(job_id)
        if cached is None or cached[:2] != (job.n_trainers, job.n_aggregators):
            addresses = [
                *self.jobs.aggregators(job_id),
                job.owner,
                *self.jobs.trainers(job_id),
            ]
            cached = self._members[job_id] = (job.n_trainers, job.n_aggregators, addresses)
        return cached[2]

    def job_peers(self, job_id: int, job: Job, *, first: Sequence[str] = ()) -> list[str]:
        """Endpoints of ``first``, then the job's aggregators, owner and trainers."""
        urls: list[str] = []
        for address in [*first, *self.members(job_id, job)]:
            url = self.endpoint(address)
            if url is not None and url not in urls:
                urls.append(url)
        return urls

    def all_peers(self) -> list[str]:
        """Endpoints of every registered node."""
        urls: list[str] = []
        for address in self.contracts.registry.node_addresses():
            url = self.endpoint(address)
            if url is not None and url not in urls:
                urls.append(url)
        return urls

    async def spec(self, job_id: int, job: Job) -> JobSpec:
        digest = hex_hash(job.spec_hash)
        await self.peers.fetch_blob(digest, self.job_peers(job_id, job), max_bytes=MAX_SPEC_BYTES)
        spec = JobSpec.from_bytes(self.store.read_bytes(digest))
        check_spec_matches(spec, job)
        return spec

    async def state(self, digest: str, peers: Sequence[str], *, reference: State) -> State:
        """Blob ``digest`` as tensors shaped like ``reference`` (hash-checked, canonical)."""
        await self.peers.fetch_blob(digest, peers)
        state = decode_state(self.store.read_bytes(digest))
        check_update(state, reference, norm_bound=None)
        return state


def task_and_reference(spec: JobSpec) -> tuple[Task, State]:
    """The installed task a spec names and its model's keys, shapes and dtypes."""
    task = load_task(spec.task)
    return task, seeded_state(task, seed=spec.seed)


def evaluate(task: Task, state: State) -> dict[str, float]:
    """The task's metrics of ``state`` on its test split."""
    model = task.model()
    model.load_state_dict(state, strict=True)
    return task.evaluate(model, task.test_data())
