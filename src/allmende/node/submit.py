"""Submitting a job: publish the spec and initial model into the owner's node, create the job.

The owner's node must be registered (running once is enough) so that trainers and aggregators can
fetch the spec and initial model from it by hash; :func:`submit_job` refuses otherwise, before
any ether is escrowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eth_account.signers.local import LocalAccount

from allmende.chain import Contracts, Deployment
from allmende.errors import NodeError
from allmende.learn.task import load_task, seeded_state
from allmende.node.config import BLOBS_DIR, load_config, resolve
from allmende.node.jobspec import JobSpec
from allmende.node.keystore import PasswordPrompt, load_key
from allmende.store.blobs import BlobStore
from allmende.store.codec import encode_state
from allmende.store.state import STATE_FILE, StateDB


@dataclass(frozen=True)
class SubmittedJob:
    """What :func:`submit_job` created."""

    job_id: int
    owner: str
    spec_hash: str
    model_hash: str
    escrow: int


def connect_as_node(
    home: Path, *, prompt: PasswordPrompt | None = None, purpose: str = "this"
) -> tuple[Contracts, LocalAccount]:
    """The chain bindings signing with the key of the node at ``home``, and that key."""
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
    return encode_state(seeded_state(load_task(spec.task), seed=spec.seed))


def submit_job(
    home: Path, spec: JobSpec, *, prompt: PasswordPrompt | None = None
) -> SubmittedJob:
    """Store spec and initial model in the node at ``home`` (pinned) and create the job."""
    config = load_config(home)
    contracts, account = connect_as_node(home, prompt=prompt, purpose="a job owner's node")
    record = contracts.registry.node(account.address)
    if not record.registered:
        raise NodeError(
            f"The owner's node {account.address} is not registered, so nobody could fetch the "
            f"job's spec and model from it; start it with `allmende node run {home}` first."
        )
    data = resolve(home, config.node.data_dir)
    store = BlobStore(data / BLOBS_DIR, max_blob_bytes=config.store.max_blob_bytes)
    spec_hash = store.put_bytes(spec.canonical_bytes())
    model_hash = store.put_bytes(initial_model_bytes(spec))
    state = StateDB.open(data / STATE_FILE)
    try:
        state.pin(spec_hash, "job-submit:spec")
        state.pin(model_hash, "job-submit:model")
        job_id, _ = contracts.jobs.create_job(
            spec_hash=spec_hash,
            model_hash=model_hash,
            rounds=spec.rounds,
            reward_per_round=spec.reward_per_round,
            min_trainers=spec.min_trainers,
            max_trainers=spec.max_trainers,
            quorum=spec.quorum,
            round_deadline=spec.round_deadline,
        )
        state.pin(spec_hash, f"job:{job_id}:spec")
        state.pin(model_hash, f"job:{job_id}:model:0")
    finally:
        state.close()
    return SubmittedJob(
        job_id=job_id,
        owner=str(account.address),
        spec_hash=spec_hash,
        model_hash=model_hash,
        escrow=spec.rounds * spec.reward_per_round,
    )
