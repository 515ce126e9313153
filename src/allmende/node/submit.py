"""Submitting a job: publish the spec and initial model into the owner's node, create the job.

The owner's node must be registered (running once is enough) so that trainers and aggregators can
fetch the spec and initial model from it by hash; :func:`publish_job` refuses otherwise, before
any ether is escrowed. A running node does it when asked through its control socket
(:mod:`allmende.node.control`); :func:`submit_job` does it in the calling process.

Importing this module stays light (no torch, no chain stack): the control socket's client
imports :class:`SubmittedJob` from here. The task code loads when the initial model is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from allmende.errors import NodeError
from allmende.node.config import load_config, resolve
from allmende.node.home import open_state, open_store
from allmende.node.jobspec import JobSpec
from allmende.node.keystore import PasswordPrompt, load_key

if TYPE_CHECKING:
    from allmende.chain import Contracts, Jobs, Registry
    from allmende.chain.keys import LocalKey
    from allmende.store.blobs import BlobStore
    from allmende.store.state import StateDB


@dataclass(frozen=True)
class SubmittedJob:
    """What submitting a job created."""

    job_id: int
    owner: str
    spec_hash: str
    model_hash: str
    escrow: int


def connect_as_node(
    home: Path, *, prompt: PasswordPrompt | None = None, purpose: str = "this"
) -> tuple[Contracts, LocalKey]:
    """The chain bindings signing with the key of the node at ``home``, and that key."""
    from allmende.chain import Contracts, Deployment

    config = load_config(home)
    if config.chain.deployment is None:
        raise NodeError(f"The node at {home} is offline; {purpose} needs a chain.")
    deployment = Deployment.load(resolve(home, config.chain.deployment))
    account = load_key(
        resolve(home, config.node.key_file),
        chain_id=deployment.chain_id,
        password_env=config.node.password_env,
        prompt=prompt,
    )
    contracts = Contracts.connect(
        deployment, "0x" + bytes(account.key).hex(), rpc_url=config.chain.rpc_url
    )
    return contracts, account


def initial_model_bytes(spec: JobSpec) -> bytes:
    """The canonical blob of the task's model initialised with the spec's seed."""
    from allmende.learn.task import load_task, seeded_state
    from allmende.learn.train import TORCH_LOCK
    from allmende.store.codec import encode_state

    with TORCH_LOCK:  # seeding a model uses torch's global RNG
        return encode_state(seeded_state(load_task(spec.task, data=spec.data), seed=spec.seed))


def submit_job(home: Path, spec: JobSpec, *, prompt: PasswordPrompt | None = None) -> SubmittedJob:
    """Store spec and initial model in the node at ``home`` (pinned) and create the job, in
    this process (what the running node does when asked through its control socket)."""
    config = load_config(home)
    contracts, account = connect_as_node(home, prompt=prompt, purpose="a job owner's node")
    state = open_state(home, config)
    try:
        return publish_job(
            spec, jobs=contracts.jobs, registry=contracts.registry, owner=account.address,
            store=open_store(home, config), state=state, home=home,
        )  # fmt: skip
    finally:
        state.close()


def publish_job(
    spec: JobSpec,
    *,
    jobs: Jobs,
    registry: Registry,
    owner: str,
    store: BlobStore,
    state: StateDB,
    home: Path,
) -> SubmittedJob:
    """Put the spec and initial model into ``store`` (pinned in ``state``) and create the job
    with the escrow, signed by ``owner``'s key (the one ``jobs`` sends with). Refuses before
    any ether moves if the owner's node is not registered, since nobody could fetch the blobs."""
    if not registry.node(owner).registered:
        raise NodeError(
            f"The owner's node {owner} is not registered, so nobody could fetch the "
            f"job's spec and model from it; start it with `allmende node run {home}` first."
        )
    spec_hash = store.put_bytes(spec.canonical_bytes())
    model_hash = store.put_bytes(initial_model_bytes(spec))
    state.pin(spec_hash, "job-submit:spec")
    state.pin(model_hash, "job-submit:model")
    job_id, _ = jobs.create_job(
        spec_hash=spec_hash,
        model_hash=model_hash,
        rounds=spec.rounds,
        reward_per_round=spec.reward_per_round,
        min_trainers=spec.min_trainers,
        max_trainers=spec.max_trainers,
        quorum=spec.quorum,
        round_deadline=spec.round_deadline,
        committee=spec.committee.members,
        committee_size=spec.committee_size,
        signup_period=0 if spec.committee.named else spec.committee.signup_seconds,
        trainer_stake=spec.trainer_stake,
        aggregator_stake=spec.aggregator_stake,
        weight_cap=spec.weight_cap,
    )
    state.pin(spec_hash, f"job:{job_id}:spec")
    state.pin(model_hash, f"job:{job_id}:model:0")
    return SubmittedJob(
        job_id=job_id,
        owner=str(owner),
        spec_hash=spec_hash,
        model_hash=model_hash,
        escrow=spec.rounds * spec.reward_per_round,
    )
