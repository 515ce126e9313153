"""The trainer role: join accepted jobs; each round fetch model r, train, store, commit.

A round's flow, one seam a step (later work adds traces, DP and compression here)::

    fetch model r by hash -> train deterministically -> clip and noise (a job with [privacy])
    -> encode the update -> charge the privacy ledger -> commit its hash -> serve the update blob

The update blob names its author (:func:`~allmende.node.jobdata.update_metadata`: job, round,
this node's address), so the same bytes committed by another trainer are left out as a copy.
It goes into the node's store, where peers can fetch it, only once the commit is mined: until
then nobody but this node has the tensors, so whoever commits them under another name commits
after this node, and aggregators keep only the first commit of the same tensors
(:mod:`~allmende.node.roles.copies`). On a chain with a public mempool the hash is visible
while the commit is pending, but not the blob.

The training seed is :func:`~allmende.learn.train.derive_seed` of (job, round, address), so a
trainer that crashed after committing but before storing its update recomputes the same bytes
(:meth:`TrainerRole.recover_update`). A round it committed is never redone: the chain's
``commit_of`` says so.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging

from allmende.chain import ROLE_TRAINER, Job, Jobs, JobStatus
from allmende.chain.events import (
    CommitteeSealed,
    JobCancelled,
    JobCreated,
    JobFinished,
    Joined,
    RoundFinalized,
    RoundReopened,
    TrainerEvicted,
)
from allmende.errors import ContractRevert
from allmende.learn.task import LocalData, Task, seeded_state
from allmende.learn.train import TORCH_LOCK, derive_seed, train_local
from allmende.node.config import TrainerSection
from allmende.node.context import NodeContext, on_chain
from allmende.node.directory import PeerDirectory
from allmende.node.jobdata import State, hex_hash, update_metadata
from allmende.node.jobspec import JobSpec
from allmende.node.roles.base import JobRole
from allmende.node.roles.plan import JobPlan
from allmende.node.roles.policy import Verdict
from allmende.node.roles.privacy import TrainerPrivacyGate
from allmende.node.roles.rounds import deadline_passed
from allmende.store.codec import encode_state

log = logging.getLogger(__name__)

WARM_UP_BATCH = 32  # the dry run at start-up: its result is thrown away
WARM_UP_LR = 0.01


class TrainerRole(JobRole):
    """Trains on the node's declared local data for the jobs its consent policy accepts."""

    name = "trainer"
    role_bit = ROLE_TRAINER
    wake_on = (
        JobCreated, Joined, CommitteeSealed, RoundFinalized, RoundReopened, TrainerEvicted,
        JobFinished, JobCancelled,
    )  # fmt: skip
    follows = wake_on  # a trainer has no use for the others (commits, votes, payouts)
    tasks_named = True  # consent by default: only the tasks the operator allowed

    def __init__(self, section: TrainerSection) -> None:
        super().__init__(section)
        self.section: TrainerSection = section
        self._data: dict[str, LocalData] = {}
        self._committed: dict[int, int] = {}  # job id -> last round this node committed in
        self._joined: set[int] = set()
        self._active_in: dict[int, int] = {}  # job id -> round in which it was last seen active
        self._claimed: set[tuple[int, int]] = set()  # (job, round) whose share was asked for
        self.privacy = TrainerPrivacyGate(section.privacy, section.dataset)  # roles/privacy.py

    def stake_for(self, job: Job) -> int:
        return job.trainer_stake

    def reconcile(self) -> None:
        super().reconcile()
        self._committed.clear()  # a commit may be gone: commit_of says, and it is sent again
        self._joined.clear()
        self._active_in.clear()
        self.forget_claims(self._claimed)  # a claim may be gone: the step claims again

    def attach(self, ctx: NodeContext, *, jobs: Jobs, directory: PeerDirectory) -> None:
        super().attach(ctx, jobs=jobs, directory=directory)
        self.privacy.attach(ctx.state, jobs_address=getattr(jobs, "address", ""))

    def admits(self, job: Job, spec: JobSpec) -> Verdict:
        if job.n_active_trainers >= job.max_trainers:
            return Verdict(False, f"the job already has its {job.max_trainers} trainers")
        return self.privacy.admits(spec)

    async def step(self, job_id: int) -> bool:
        job = await on_chain(self.jobs.job, job_id)
        if job.status != JobStatus.OPEN:
            await self.claim_shares(job_id, job)
            return await self.release_when_due(job_id, job)
        if job_id in self._joined:  # before this round's commit overwrites round r - 2's
            await self.claim_shares(job_id, job, back=(2,))
        if self._committed.get(job_id) == job.current_round:
            await self.claim_shares(job_id, job, back=(1,))  # e.g. after a restart
            return False  # committed; wait for the round to be finalized
        if job_id not in self._joined:  # a trainer's place in a job is kept unless evicted
            if await on_chain(self.jobs.trainer_index, job_id, self.me) is None:
                return await self.consider(job_id, job)
            self._joined.add(job_id)
            await self.claim_shares(job_id, job, back=(2,))  # a new process too, before it commits
        if not job.sealed:
            self.say_once(
                ("unsealed", job_id), logging.INFO,
                f"Job {job_id}: joined; round 0 starts once its committee is drawn.",
            )  # fmt: skip
            return False
        round_ = job.current_round
        if self._active_in.get(job_id) != round_:  # once a round: evicted trainers stop
            if not await on_chain(self.jobs.is_trainer_active, job_id, self.me):
                log.warning("Job %d: this node was evicted (it missed rounds); done.", job_id)
                return True
            self._active_in[job_id] = round_
        # Having committed in the round before, this process knows it has not committed in this
        # one (it commits once a round, and forgets the round when a commit fails); otherwise,
        # after a restart or a missed round, the chain says.
        if self._committed.get(job_id) != round_ - 1:
            commit = await on_chain(self.jobs.commit_of, job_id, round_, self.me)
            if commit.weight > 0:
                if not self.ctx.store.has(hex_hash(commit.update_hash)):
                    await self.recover_update(job_id, job, hex_hash(commit.update_hash))
                self._committed[job_id] = round_
                return False
        if deadline_passed(job, self.now()):
            self.say_once(
                ("missed", job_id, round_),
                logging.WARNING,
                f"Job {job_id}: missed the deadline of round {round_}; waiting for the next one.",
            )
            return False
        plan = await self.plan(job_id, job)
        verdict = self.privacy.gate(plan, job_id, round_, self.me)
        if not verdict.accepted:
            self.say_once(
                ("privacy", job_id, round_),
                logging.INFO,
                f"Job {job_id} round {round_}: not contributing: {verdict.reason}.",
            )
            return False
        model = await self.fetch_model(job_id, job, plan)
        update, examples, metrics = await asyncio.to_thread(self.train, plan, model, job_id, round_)
        weight = plan.spec.weight_of(examples)
        blob = self.encode_update(job_id, round_, update)
        digest = hashlib.sha256(blob).hexdigest()
        self.privacy.charge(plan, job_id, round_)  # durable before the update can leave
        try:
            await self.commit(job_id, round_, digest, weight)
        except BaseException:
            self._committed.pop(job_id, None)  # it may have gone through: ask the chain next time
            raise
        self.publish_update(job_id, round_, blob)  # mined: now peers may fetch it
        self._committed[job_id] = round_
        log.info(
            "Job %d round %d: trained on %d examples (loss %.4f), committed update %s.",
            job_id, round_, examples, metrics["loss"], digest[:16],
        )  # fmt: skip
        await self.claim_shares(job_id, job, back=(1,))  # the round before, off the round's path
        return False

    # -- the round's seams ---------------------------------------------------------------------

    async def fetch_model(self, job_id: int, job: Job, plan: JobPlan) -> State:
        """Model r, by the hash on chain, from any participant that serves it."""
        return await self.fetch_state(job_id, job, hex_hash(job.model_hash), plan)

    def train(
        self, plan: JobPlan, model: State, job_id: int, round_: int
    ) -> tuple[State, int, dict[str, float]]:
        """Deterministic local training (runs in a worker thread; train_local takes the torch
        lock, one torch job at a time), clipped and noised for a job with ``[privacy]`` (the
        noise is seeded by this node's secret, so training again gives the same bytes)."""
        update, examples, metrics = train_local(
            plan.task,
            model,
            self.local_data(plan.task),
            **plan.spec.training_settings(),
            seed=derive_seed(job_id, round_, self.me),
            device=self.section.device,
        )
        return self.privacy.privatize(plan, model, update, job_id, round_), examples, metrics

    def encode_update(self, job_id: int, round_: int, update: State) -> bytes:
        """The update as a canonical blob naming its job, round and author (this node)."""
        return encode_state(update, metadata=update_metadata(job_id, round_, self.me))

    def publish_update(self, job_id: int, round_: int, blob: bytes) -> str:
        """Put the update blob into the node's store, pinned, where peers can fetch it; its
        hash. Called only once its commit is mined (see the module docstring)."""
        digest = self.ctx.store.put_bytes(blob)
        self.ctx.state.pin(digest, f"job:{job_id}:update:{round_}")
        return digest

    async def recover_update(self, job_id: int, job: Job, digest: str) -> None:
        """After a crash between commit and store: train the round again (deterministic, so
        the same bytes) and serve the update if it is the one committed."""
        round_ = job.current_round
        plan = await self.plan(job_id, job)
        model = await self.fetch_model(job_id, job, plan)
        update, _, _ = await asyncio.to_thread(self.train, plan, model, job_id, round_)
        blob = self.encode_update(job_id, round_, update)
        if hashlib.sha256(blob).hexdigest() != digest:
            log.warning(
                "Job %d round %d: the update committed (%s) is not in the store and training "
                "again gave other bytes; this round's update cannot be served.",
                job_id, round_, digest[:16],
            )  # fmt: skip
            return
        self.publish_update(job_id, round_, blob)
        log.info("Job %d round %d: trained again and served committed update %s.",
                 job_id, round_, digest[:16])  # fmt: skip

    async def commit(self, job_id: int, round_: int, digest: str, weight: int) -> None:
        await on_chain(self.jobs.commit_update, job_id, round_, digest, weight)

    async def claim_shares(self, job_id: int, job: Job, *, back: tuple[int, ...] = (2, 1)) -> None:
        """Claim this node's share of the finalized rounds ``back`` rounds before the current
        one, once each: the contract keeps a trainer's commits of its last two rounds, so a
        share is claimed before the commit two rounds later (or it stays with the job's owner).
        The step claims round r - 2 before its commit (that is due only after a restart or a
        missed round) and round r - 1 after it, so claims never hold up training."""
        rounds = [
            round_
            for round_ in (job.current_round - b for b in back)
            if round_ >= 0
            and (job_id, round_) not in self._claimed
            and not self.ctx.state.get(f"trainer:claimed:{job_id}:{round_}")
        ]
        if not rounds:
            return
        index = await on_chain(self.jobs.trainer_index, job_id, self.me)
        for round_ in rounds:  # marked once asked (an RPC failure asks again next step)
            key = f"trainer:claimed:{job_id}:{round_}"
            if index is None:
                self._claimed.add((job_id, round_))
                continue
            result = await on_chain(self.jobs.round_result, job_id, round_)
            if result.included >> index & 1:
                try:
                    await on_chain(self.jobs.claim, job_id, round_, result)
                    log.info("Job %d round %d: claimed its trainer share.", job_id, round_)
                except ContractRevert as exc:  # claimed before a restart, or too late
                    log.info("Job %d round %d: no trainer share: %s", job_id, round_, exc)
            self._claimed.add((job_id, round_))
            self.ctx.state.set(key, "1")

    def check_plan(self, plan: JobPlan) -> None:
        """Load the node's data as the job's task and options read it: a file that does not
        fit (a missing column, a label outside the job's classes) refuses the job, before
        joining."""
        self.local_data(plan.task)

    def prepare(self, task: Task) -> None:
        """Load the declared dataset for ``task`` now (a bad declaration shows at start-up) and
        train a fresh model on it once, untimed: torch's first backward pass and optimizer step
        cost seconds of set-up that would otherwise fall into the first round."""
        with TORCH_LOCK:  # builds the model too, so the base class's warm-up is not needed
            data = self.local_data(task)
            state = seeded_state(task, seed=0)
            train_local(
                task, state, data, epochs=1, batch_size=WARM_UP_BATCH, lr=WARM_UP_LR, seed=0,
                device=self.section.device,
            )
        log.info("Loaded %d local examples for task %s.", len(data), task.name)

    def local_data(self, task: Task) -> LocalData:
        """The node's declared dataset as ``task`` (configured by a job's options) reads it,
        loaded once per task and options."""
        key = task.data_key()
        if key not in self._data:
            self._data[key] = task.load_data(self.section.dataset)
        return self._data[key]
