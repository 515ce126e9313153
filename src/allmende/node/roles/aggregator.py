"""The aggregator role: wait for a round's commits, fetch and check them, aggregate, vote.
A vote is committed first (a hash with a secret salt) and revealed once every committee member
committed or the vote-commit period passed; the reveal that completes the quorum finalizes the
round on chain, in the same transaction. Then each member of the quorum claims its share.

A round's flow, one seam a step (later work adds trace checks, secure aggregation here)::

    claim last round's share -> wait -> fetch updates -> check -> aggregate -> store
        -> commit vote -> reveal (-> final at the quorum)

All of it is deterministic: the inputs are exactly the commits the chain accepted, ordered by
trainer address, and an update is left out only for a reason every honest aggregator sees the
same way (bad bytes, wrong shapes, non-finite values, over the norm bound, served by nobody
even ``fetch_grace_seconds`` after the deadline, or a copy: see :mod:`.copies`); with trainer
sampling (``[privacy] sample_rate``) only the commits of the trainers drawn into the round count
(:func:`~allmende.node.roles.privacy.drawn_trainers`). Honest
aggregators so propose the same bytes. Each update is asked for from its author first, then
from every other participant.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING, TypeVar

from allmende.chain import ROLE_AGGREGATOR, ChainEvent, Commit, Job, JobStatus
from allmende.chain.client import Receipt
from allmende.chain.events import RoundFinalized, UpdateCommitted
from allmende.chain.jobs import MAX_REOPENS, MISSED_ROUNDS_ALLOWED, to_bitmap, vote_commitment
from allmende.errors import AggregationError, CodecError, ContractRevert, PeerError
from allmende.learn.aggregate import Update, aggregate, check_norm, check_weight
from allmende.node.config import AggregatorSection
from allmende.node.context import NodeContext, on_chain
from allmende.node.directory import PeerDirectory
from allmende.node.jobdata import EMPTY_HASH, State, fetch_tensors, hex_hash, update_metadata
from allmende.node.jobspec import JobSpec
from allmende.node.roles.base import JobRole
from allmende.node.roles.copies import Candidate, ChainPosition, Screening, screen
from allmende.node.roles.plan import JobPlan
from allmende.node.roles.policy import Verdict
from allmende.node.roles.privacy import drawn_trainers
from allmende.node.roles.rounds import aggregation_readiness, by_address, committed, round_deadline
from allmende.node.roles.secure import SecureAggregator, check_secure_plan, roster_fixed
from allmende.store.codec import TensorBlob, payload_digest, write_state

if TYPE_CHECKING:
    from allmende.chain import Jobs

log = logging.getLogger(__name__)

NO_COMMIT = Commit(update_hash=EMPTY_HASH, weight=0)


V = TypeVar("V")


def for_round(cache: dict[int, tuple[int, dict[str, V]]], job_id: int, round_: int) -> dict[str, V]:
    """What ``cache`` keeps of the job's round ``round_``. A later round replaces the job's
    entry (what an older round kept is dropped); an older round gets an empty dict that is
    kept nowhere, since its events and downloads come too late to matter."""
    seen = cache.get(job_id)
    if seen is None or seen[0] < round_:
        seen = cache[job_id] = (round_, {})
    return seen[1] if seen[0] == round_ else {}


class AggregatorRole(JobRole):
    """Aggregates the rounds of the jobs its consent policy accepts."""

    name = "aggregator"
    role_bit = ROLE_AGGREGATOR

    def __init__(self, section: AggregatorSection) -> None:
        super().__init__(section)
        self.section: AggregatorSection = section
        self._commits: dict[int, tuple[int, dict[str, Commit]]] = {}  # job -> (round, commits)
        # Where each commit is in the chain's order: job -> (round, trainer -> (block, log)).
        self._positions: dict[int, tuple[int, dict[str, ChainPosition]]] = {}
        self._joined: set[int] = set()
        self._last_read: dict[int, Job] = {}  # job id -> its record as the last step read it
        self._prefetching: set[asyncio.Task[None]] = set()
        # Updates decoded and checked as they arrived: job -> (round, update hash -> blob).
        self._decoded: dict[int, tuple[int, dict[str, TensorBlob]]] = {}
        # The payload hash of each job's global model: job -> (model hash, payload hash).
        self._global_payload: dict[int, tuple[str, str]] = {}
        # The model this node stored last for each job: job -> (hash, tensors). It is the next
        # round's global model when the quorum agreed with this node.
        self._stored: dict[int, tuple[str, State]] = {}
        self._claimed: set[tuple[int, int]] = set()  # (job, round) whose share was asked for
        self._volunteered: set[int] = set()  # open committees this node signed up for
        self._evicted: set[tuple[int, str]] = set()  # (job, trainer) evictions already asked
        self._eviction_checked: set[tuple[int, int]] = set()  # (job, round)
        self.secure = SecureAggregator(self)  # the board and unmasking of secure jobs

    def attach(self, ctx: NodeContext, *, jobs: Jobs, directory: PeerDirectory) -> None:
        super().attach(ctx, jobs=jobs, directory=directory)
        self.secure.register()  # the secure-aggregation board's message handlers

    def check_plan(self, plan: JobPlan) -> None:
        if plan.spec.aggregation.secure is not None:
            check_secure_plan(plan)

    def stake_for(self, job: Job) -> int:
        return job.aggregator_stake

    def reconcile(self) -> None:
        super().reconcile()
        self._commits.clear()  # rebuilt from the replayed events: lost commits are not in them
        self._joined.clear()
        self.forget_claims(self._claimed)  # a claim may be gone: the step claims again
        self._volunteered.clear()
        self._evicted.clear()
        self._eviction_checked.clear()

    async def step(self, job_id: int) -> bool:
        job = self._last_read[job_id] = await on_chain(self.jobs.job, job_id)
        if job.status != JobStatus.OPEN:
            if job.current_round > 0 and job_id in self._joined:
                await self.claim_share(job_id, job.current_round - 1)
            return await self.release_when_due(job_id, job)
        if job_id not in self._joined:  # a committee seat never changes once the job is sealed
            if not job.sealed:
                return await self.sign_up(job_id, job)
            if not await on_chain(self.jobs.is_aggregator, job_id, self.me):
                if not job.open_committee:
                    return await self.consider(job_id, job)  # a named member joins
                if job_id in self._volunteered or await on_chain(
                    self.jobs.is_volunteer, job_id, self.me
                ):
                    log.info("Job %d: not drawn into the committee; done with it.", job_id)
                else:
                    log.info("Job %d: its committee was drawn without this node.", job_id)
                return True
            self._joined.add(job_id)
        round_ = job.current_round
        if round_ > 0:
            await self.claim_share(job_id, round_ - 1)  # before the next vote commit forfeits it
        saved = self.saved_proposal(job_id, round_, job.attempt)
        if saved is not None:
            # aggregated: commit, then reveal; the round is final once a quorum reveals the same
            # (also on restart), or, its attempt over without a quorum, it is reopened
            await self.vote(job_id, job, *saved)
            return False
        if (await self.plan(job_id, job)).spec.aggregation.secure is not None and roster_fixed(job):
            await self.secure.board(job_id, round_, create=True)  # trainers post from the start
        trainers = (await self.members(job_id, job)).trainers
        plan = await self.plan(job_id, job)
        drawn = drawn_trainers(plan.spec, job_id, round_, trainers)  # all, without sampling
        count = None if len(drawn) == len(trainers) else len(drawn)
        commits = await self.round_commits(job_id, round_, drawn, read_missing=False)
        readiness = aggregation_readiness(job, commits, self.now(), drawn=count)
        if readiness.ready and len(committed(commits)) < len(drawn):
            # Going ahead without everyone: the events read so far may lag the chain (a node
            # catching up), so the chain itself must say who is missing.
            commits = await self.round_commits(job_id, round_, drawn, read_missing=True)
            readiness = aggregation_readiness(job, commits, self.now(), drawn=count)
        if not readiness.ready:
            self.say_once(
                ("wait", job_id, round_, readiness.reason),
                logging.DEBUG,
                f"Job {job_id} round {round_}: {readiness.reason}.",
            )
            if readiness.stalled:
                await self.reopen_when_due(job_id, job, readiness.reason)
            elif (job_id, round_) not in self._eviction_checked:
                self._eviction_checked.add((job_id, round_))  # once a round that waits
                await self.evict_absent(job_id, job, trainers, plan.spec)
            return False
        global_state = await self.global_state(job_id, job, plan)
        updates: list[Update] | None = None
        if plan.spec.aggregation.secure is not None:
            outcome = await self.secure.aggregate(
                job_id, job, plan, global_state, committed(commits)
            )
            if outcome is None:
                return False  # a manifest, masked update or reveal is still to come
            new_state, contributors = outcome
        else:
            updates = await self.fetch_updates(
                job_id, job, plan, global_state, committed(commits)
            )
            if updates is None:
                return False  # an update is not available yet; ask again next step
            contributors = [(address, weight) for address, _, weight in updates]
        if len(contributors) < job.min_trainers:
            self.say_once(
                ("few", job_id, round_, job.attempt),
                logging.WARNING,
                f"Job {job_id} round {round_}: only {len(contributors)} usable updates, fewer "
                f"than min_trainers {job.min_trainers}; the round cannot be aggregated.",
            )
            await self.reopen_when_due(job_id, job, "too few usable updates")
            return False
        if updates is not None:
            new_state = await asyncio.to_thread(self.aggregate, plan, global_state, updates)
        digest = self.store_model(job_id, round_, new_state)
        index = {trainer.lower(): i for i, trainer in enumerate(trainers)}
        included = to_bitmap(index[address.lower()] for address, _ in contributors)
        total_weight = sum(weight for _, weight in contributors)
        # The salt is saved before the commit goes out, so a restarted node can still reveal.
        salt = os.urandom(32)
        self.save_proposal(job_id, round_, job.attempt, digest, included, total_weight, salt)
        log.info(
            "Job %d round %d: proposed model %s with %d of %d trainers (%s); voting.",
            job_id, round_, digest[:16], len(contributors), len(trainers), readiness.reason,
        )  # fmt: skip
        await self.vote(job_id, job, digest, included, total_weight, salt)
        return False

    # -- the vote: commit, reveal, claim ---------------------------------------------------------

    async def vote(
        self, job_id: int, job: Job, digest: str, included: int, total_weight: int, salt: bytes
    ) -> None:
        """One step of this node's vote for the current attempt: commit it, or reveal it once
        the reveals are open, or (revealed) reopen the round when its attempt is over."""
        round_ = job.current_round
        if await self.voted(job_id, round_):
            await self.reopen_when_due(job_id, job, "no result reached the quorum")
            return
        if not await on_chain(self.jobs.vote_committed, job_id, self.me):
            commitment = vote_commitment(digest, included, total_weight, salt, self.me)
            try:
                await on_chain(self.jobs.commit_vote, job_id, round_, commitment)
            except ContractRevert as exc:
                if not await self.round_is_current(job_id, job):
                    return
                self.say_once(
                    ("commit", job_id, round_, job.attempt),
                    logging.WARNING,
                    f"Job {job_id} round {round_}: vote not committed: {exc}",
                )
                await self.reopen_when_due(job_id, job, "the vote could not be committed")
                return
            log.info("Job %d round %d: vote committed.", job_id, round_)
        if not await on_chain(self.jobs.reveals_open, job_id):
            await self.reopen_when_due(job_id, job, "not every member committed a vote")
            return
        try:
            receipt = await on_chain(
                self.jobs.reveal, job_id, round_, digest, included, total_weight, salt
            )
        except ContractRevert:
            if not await self.round_is_current(job_id, job):
                log.info(
                    "Job %d round %d: finalized before this node's vote was revealed.",
                    job_id, round_,
                )  # fmt: skip
                return
            raise
        log.info("Job %d round %d: revealed its vote for model %s.", job_id, round_, digest[:16])
        if self.finalized_by(receipt, job_id, round_):
            log.info("Job %d round %d: finalized model %s.", job_id, round_, digest[:16])

    async def round_is_current(self, job_id: int, job: Job) -> bool:
        """Whether the job is still open in the same round and attempt as ``job`` says."""
        now = await on_chain(self.jobs.job, job_id)
        return now.status == JobStatus.OPEN and (now.current_round, now.attempt) == (
            job.current_round, job.attempt,
        )  # fmt: skip

    async def claim_share(self, job_id: int, round_: int) -> None:
        """Once a finalized round: claim this node's aggregator share (when it revealed the
        result in the finalizing attempt), and challenge the members whose reveal for it is
        provably wrong (the contract checks; a vote that may stand makes the call revert)."""
        if (job_id, round_) in self._claimed:  # done once (an RPC failure tries again)
            return
        key = f"aggregator:claimed:{job_id}:{round_}"
        if not self.ctx.state.get(key):
            try:
                await on_chain(self.jobs.claim_vote, job_id, round_)
                log.info("Job %d round %d: claimed its aggregator share.", job_id, round_)
            except ContractRevert as exc:  # not in the quorum, or claimed before a restart
                log.debug("Job %d round %d: no aggregator share: %s", job_id, round_, exc)
            self.ctx.state.set(key, "1")
        for member in await on_chain(self.jobs.aggregators, job_id):
            if member.lower() == self.me.lower():
                continue
            if await on_chain(self.jobs.provably_wrong, job_id, member):
                try:
                    await on_chain(self.jobs.challenge, job_id, member)
                    log.warning("Job %d: challenged %s's provably wrong vote.", job_id, member)
                except ContractRevert as exc:  # challenged by another member first
                    log.debug("Job %d: no challenge of %s: %s", job_id, member, exc)
        self._claimed.add((job_id, round_))

    # -- the committee, liveness and the stake lock ---------------------------------------------

    def admits(self, job: Job, spec: JobSpec) -> Verdict:
        members = {m.lower() for m in spec.committee.members}
        if spec.committee.named and self.me.lower() not in members:
            return Verdict(False, "its owner named the committee, and not this node")
        return Verdict(True)

    async def sign_up(self, job_id: int, job: Job) -> bool:
        """Before an open committee is sealed: volunteer (if the consent policy accepts the
        job) while the signup lasts, then seal it, which draws the committee and starts round 0.
        True when the node is done with the job (refused, or the signup passed without it)."""
        if job_id not in self._volunteered and await on_chain(
            self.jobs.is_volunteer, job_id, self.me
        ):
            self._volunteered.add(job_id)
        now = self.now()
        if job_id not in self._volunteered:
            if now > job.signup_end:
                return True  # the signup is over; the committee is drawn from others
            done = await self.consider(job_id, job)
            if not done:
                self._volunteered.add(job_id)
            return done
        if now <= job.signup_end:
            return False  # signed up; the draw comes after the signup
        try:
            await on_chain(self.jobs.seal, job_id)
            log.info("Job %d: sealed its committee (the draw is on chain).", job_id)
        except ContractRevert as exc:  # sealed by another volunteer, or too few volunteers
            self.say_once(("seal", job_id), logging.INFO, f"Job {job_id}: not sealed: {exc}")
        return False

    async def reopen_when_due(self, job_id: int, job: Job, why: str) -> None:
        """Give the current round a fresh deadline when its own passed without a result (the
        contract bounds how often; then only the owner's cancel ends the job)."""
        if self.now() <= round_deadline(job) + self.section.fetch_grace_seconds:
            return
        if job.reopens >= MAX_REOPENS:
            self.say_once(
                ("stuck", job_id, job.current_round),
                logging.WARNING,
                f"Job {job_id} round {job.current_round}: {why}, and it was reopened "
                f"{job.reopens} times already; only the owner's cancel can end the job now.",
            )
            return
        try:
            await on_chain(self.jobs.reopen, job_id)
            log.info(
                "Job %d round %d: %s by the deadline; reopened it.", job_id, job.current_round, why
            )
        except ContractRevert as exc:  # reopened by another aggregator first
            log.debug("Job %d: not reopened: %s", job_id, exc)

    async def evict_absent(
        self, job_id: int, job: Job, trainers: list[str], spec: JobSpec
    ) -> None:
        """Ask the contract to evict trainers that missed the last rounds (it checks the rule
        itself; a trainer that may stay just makes the call revert, which costs nothing). A
        trainer the job's sampling left out of one of those rounds was not absent."""
        recent = range(max(0, job.current_round - MISSED_ROUNDS_ALLOWED), job.current_round)
        if len(recent) < MISSED_ROUNDS_ALLOWED:
            return
        seen = 0
        for past in recent:
            seen |= (await on_chain(self.jobs.round_result, job_id, past)).included
        for index, trainer in enumerate(trainers):
            if seen >> index & 1 or (job_id, trainer) in self._evicted:
                continue
            if any(not drawn_trainers(spec, job_id, past, [trainer]) for past in recent):
                continue
            try:
                await on_chain(self.jobs.evict, job_id, index)
            except ContractRevert:  # it committed lately, or joined lately: it keeps its slot
                continue
            self._evicted.add((job_id, trainer))
            log.info("Job %d: evicted trainer %s, absent from the last rounds.", job_id, trainer)

    async def global_state(self, job_id: int, job: Job, plan: JobPlan) -> State:
        """The round's global model: the one this node stored last round when the quorum chose
        it, else fetched (from the store or peers) and checked."""
        digest = hex_hash(job.model_hash)
        stored = self._stored.get(job_id)
        if stored is not None and stored[0] == digest:
            return stored[1]
        return await self.fetch_state(job_id, job, digest, plan)

    async def voted(self, job_id: int, round_: int) -> bool:
        """Whether this node's vote for the round's current attempt is on chain."""
        return bool(await on_chain(self.jobs.voted_in_attempt, job_id, self.me))

    def observe(self, event: ChainEvent) -> None:
        """Keep the commits the chain announces (``UpdateCommitted``) and where they are in the
        chain's order, so a step reads none, and start downloading each announced update."""
        if isinstance(event, UpdateCommitted) and event.weight > 0:
            trainer = event.trainer.lower()
            for_round(self._commits, event.job_id, event.round)[trainer] = Commit(
                update_hash=event.update_hash, weight=event.weight
            )
            positions = for_round(self._positions, event.job_id, event.round)
            positions[trainer] = (event.block_number, event.log_index)
            self._prefetch(event)

    def _prefetch(self, event: UpdateCommitted) -> None:
        """Download an announced update now, while other trainers still train, so the round's
        step finds it in the store. Only the download moves: whether and how the update counts
        is still decided by the step, for all updates together, in address order."""
        job = self._last_read.get(event.job_id)
        if job is None or event.round < job.current_round or job.status != JobStatus.OPEN:
            return  # a job this node does not work on (yet), or a past round
        plan = self.plans.get(event.job_id)
        if plan is None or plan.spec.aggregation.secure is not None:
            return  # a secure job's commit names a manifest: its body comes with the manifest
        try:
            task = asyncio.get_running_loop().create_task(self._download(job, event))
        except RuntimeError:  # not on the node's event loop: the step fetches it
            return
        self._prefetching.add(task)
        task.add_done_callback(self._prefetching.discard)

    async def _download(self, job: Job, event: UpdateCommitted) -> None:
        """Fetch an announced update and decode and check it, off the round's critical path;
        the step uses the tensors if it gets there (see :meth:`fetch_updates`)."""
        digest = hex_hash(event.update_hash)
        try:
            plan = await self.plan(event.job_id, job)
            blob = await self.fetch_update(
                event.job_id, job, event.round, digest, plan, event.trainer
            )
        except Exception as exc:  # the step asks again, and decides what a failure means
            log.debug("Job %d: no early download of update %s: %s", event.job_id, digest, exc)
            return
        for_round(self._decoded, event.job_id, event.round)[digest] = blob

    async def fetch_update(
        self, job_id: int, job: Job, round_: int, digest: str, plan: JobPlan, trainer: str
    ) -> TensorBlob:
        """The update blob ``trainer`` committed, decoded and checked (its author is judged by
        :func:`~allmende.node.roles.copies.screen`, with all of the round's updates)."""
        endpoints = await self.peers(job_id, job, first=trainer)
        metadata = update_metadata(job_id, round_, trainer)  # sizes the fetch
        return await fetch_tensors(
            self.ctx.require_peers(), self.ctx.store, digest, endpoints,
            reference=plan.reference, metadata=metadata,
        )  # fmt: skip

    async def round_commits(
        self, job_id: int, round_: int, trainers: list[str], *, read_missing: bool
    ) -> dict[str, Commit]:
        """Every trainer's commit for the round, as announced by ``UpdateCommitted`` events.
        A commit, once made, is final for its round; with ``read_missing``, the trainers not
        announced yet are read from the chain too."""
        known = for_round(self._commits, job_id, round_)
        for trainer in trainers if read_missing else ():
            if trainer.lower() not in known:
                commit = await on_chain(self.jobs.commit_of, job_id, round_, trainer)
                if commit.weight > 0:
                    known[trainer.lower()] = commit
        return {trainer: known.get(trainer.lower(), NO_COMMIT) for trainer in trainers}

    # -- the round's seams ---------------------------------------------------------------------

    async def fetch_updates(
        self,
        job_id: int,
        job: Job,
        plan: JobPlan,
        global_state: State,
        commits: dict[str, Commit],
    ) -> list[Update] | None:
        """The usable updates in address order; None while one is still worth waiting for."""
        round_ = job.current_round
        patience_over = self.now() > round_deadline(job) + self.section.fetch_grace_seconds
        trainers = by_address(commits)

        decoded = for_round(self._decoded, job_id, round_)

        async def fetch(trainer: str) -> TensorBlob:
            digest = hex_hash(commits[trainer].update_hash)
            if digest in decoded:  # downloaded, decoded and checked when it was announced
                return decoded[digest]
            return await self.fetch_update(job_id, job, round_, digest, plan, trainer)

        # Downloads overlap; what each outcome means is then decided in address order.
        fetched = await asyncio.gather(*(fetch(t) for t in trainers), return_exceptions=True)
        blobs: dict[str, TensorBlob] = {}
        for trainer, outcome in zip(trainers, fetched, strict=True):
            try:
                if isinstance(outcome, BaseException):
                    raise outcome
                blobs[trainer] = outcome  # keys, shapes, dtypes, finite values: checked
            except PeerError as exc:
                if not patience_over:
                    self.say_once(
                        ("fetch", job_id, round_, trainer),
                        logging.WARNING,
                        f"Job {job_id} round {round_}: cannot get {trainer}'s update yet: {exc}",
                    )
                    return None
                self.exclude(job_id, round_, trainer, f"nobody served it ({exc})")
            except (CodecError, AggregationError) as exc:
                self.exclude(job_id, round_, trainer, str(exc))
        screening = self.screen(job_id, round_, job, global_state, blobs)
        if screening.unordered:  # the logs that order these commits are not read yet
            self.say_once(
                ("order", job_id, round_), logging.INFO,
                f"Job {job_id} round {round_}: waiting for the chain's order of the commits of "
                f"{', '.join(screening.unordered)} (updates with the same tensors).",
            )  # fmt: skip
            return None
        updates: list[Update] = []
        for trainer, blob in blobs.items():  # address order
            commit = commits[trainer]
            try:
                if trainer in screening.excluded:
                    raise AggregationError(screening.excluded[trainer])
                check_weight(commit.weight, author=trainer)
                check_norm(blob.state, global_state, norm_bound=plan.spec.norm_bound)
            except AggregationError as exc:
                self.exclude(job_id, round_, trainer, str(exc))
                continue
            updates.append((trainer, blob.state, commit.weight))
        return updates

    def screen(
        self, job_id: int, round_: int, job: Job, global_state: State, blobs: dict[str, TensorBlob]
    ) -> Screening:
        """The copies among the round's updates (see :mod:`.copies`): another's update, the
        global model unchanged, or tensors another trainer committed first."""
        model = hex_hash(job.model_hash)
        known = self._global_payload.get(job_id)
        if known is None or known[0] != model:
            known = self._global_payload[job_id] = (model, payload_digest(global_state))
        positions = for_round(self._positions, job_id, round_)
        candidates = [
            Candidate(trainer, blob.metadata, blob.payload, positions.get(trainer.lower()))
            for trainer, blob in blobs.items()
        ]
        return screen(
            candidates,
            expected=lambda trainer: update_metadata(job_id, round_, trainer),
            global_payload=known[1],
        )

    def exclude(self, job_id: int, round_: int, trainer: str, why: str) -> None:
        """Log, once a round, that ``trainer``'s update is left out (and so not paid), and why."""
        key = ("exclude", job_id, round_, trainer)
        if key not in self._said:  # as say_once, but in this module's log
            self._said.add(key)
            log.warning(
                "Job %d round %d: leaving out %s's update: %s", job_id, round_, trainer, why
            )

    def aggregate(self, plan: JobPlan, global_state: State, updates: list[Update]) -> State:
        """The job's rule over the updates (worker thread; aggregate takes the torch lock)."""
        rule = plan.spec.aggregation
        return aggregate(rule.rule, global_state, updates, rule.params)

    def store_model(self, job_id: int, round_: int, state: State) -> str:
        """Model r+1 as a canonical blob in the node's store, pinned; its hash."""
        digest = write_state(self.ctx.store, state)  # streamed to disk: no copy in memory
        self.ctx.state.pin(digest, f"job:{job_id}:model:{round_ + 1}")
        # The tensors are those the blob encodes (the codec is lossless): the next round's global
        # model when the quorum agrees, without decoding the blob again.
        self._stored[job_id] = (digest, state)
        return digest

    def finalized_by(self, receipt: Receipt, job_id: int, round_: int) -> bool:
        """Whether this vote completed the quorum: the contract then finalized the round in the
        same transaction, and the receipt holds its ``RoundFinalized``."""
        return any(
            isinstance(event, RoundFinalized) and (event.job_id, event.round) == (job_id, round_)
            for event in self.jobs.events(receipt)
        )

    # -- what this node proposed, so it aggregates a round once, also across a restart ----------

    def saved_proposal(
        self, job_id: int, round_: int, attempt: int
    ) -> tuple[str, int, int, bytes] | None:
        """(model hash, included bitmap, total weight, salt) of this node's vote, if saved."""
        raw = self.ctx.state.get(f"aggregator:vote:{job_id}:{round_}:{attempt}")
        if raw is None:
            return None
        digest, included, total_weight, salt = raw.split(":")
        return digest, int(included), int(total_weight), bytes.fromhex(salt)

    def save_proposal(
        self,
        job_id: int,
        round_: int,
        attempt: int,
        digest: str,
        included: int,
        total_weight: int,
        salt: bytes,
    ) -> None:
        key = f"aggregator:vote:{job_id}:{round_}:{attempt}"
        self.ctx.state.set(key, f"{digest}:{included}:{total_weight}:{salt.hex()}")
