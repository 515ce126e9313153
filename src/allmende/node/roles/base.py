"""The loop every job role runs: follow the Jobs contract's events, step each job it knows.

A role learns about jobs from ``JobCreated`` events (replayed from the deployment block on every
start, so a restarted node finds its jobs again) and *steps* a job whenever one of its events
arrives, and at least every ``refresh_seconds`` (deadlines pass without events). A step reads
the job's state from the chain's views and does the next thing that is due, so it is idempotent:
a killed and restarted node resumes where the chain says it is, with no operator action.

A failing step (a dead peer, a refused transaction, a bad blob) is logged and retried at the next
step; it never stops the role. Each job is stepped on its own (:class:`JobSteps`) within a time
budget, so a job whose owner or peers stall holds up no other job.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from allmende.chain import ChainEvent, EventDecoder, EventStream, Job
from allmende.chain.deployment import Deployment
from allmende.chain.events import JobCreated
from allmende.chain.heads import LogFilter
from allmende.errors import AllmendeError, ConfigError, ContractRevert, PeerError, TaskError
from allmende.learn.task import Task, installed_tasks, load_task
from allmende.learn.train import TORCH_LOCK
from allmende.node.config import ConsentPolicy, RoleSection
from allmende.node.context import NodeContext, on_chain
from allmende.node.directory import MemberCache, Members, PeerDirectory
from allmende.node.jobdata import State, fetch_spec, fetch_state
from allmende.node.jobspec import JobSpec
from allmende.node.roles.plan import JobPlan, make_plan
from allmende.node.roles.policy import Verdict, decide_task, decide_terms
from allmende.node.roles.steps import JobSteps, StepOutcome

if TYPE_CHECKING:
    from allmende.chain import Jobs

log = logging.getLogger(__name__)


class JobRole(ABC):
    """A role service (see :class:`allmende.node.context.RoleService`) that works on jobs."""

    name: str = ""
    role_bit: int = 0
    # The events that make the role look at their job at once (others wait for the refresh).
    wake_on: tuple[type[ChainEvent], ...] = (ChainEvent,)
    # The events the role reads at all (None: every one); its log queries leave out the rest.
    follows: tuple[type[ChainEvent], ...] | None = None
    # Works only for the tasks its policy names (consent by default), not every installed one.
    tasks_named: bool = False

    def __init__(self, section: RoleSection) -> None:
        self.section = section
        self.policy: ConsentPolicy = section.policy
        self.poll_seconds = section.poll_seconds
        self.max_clock_lead = section.clock_lead_bound(0)  # as on a public chain until attached
        self.refresh_seconds = section.refresh_seconds
        self.plans: dict[int, JobPlan] = {}
        self.refused: set[int] = set()
        self.ready = False  # True once warmed up and following the chain (``/healthz``)
        self._said: set[tuple[object, ...]] = set()
        self._challenge_window: int | None = None
        self._consider_slots = asyncio.Semaphore(section.max_parallel_considers)
        self._clock_ahead = 0.0  # seconds the chain's clock runs ahead of this machine's
        self._clock_capped = False  # whether the newest block was further ahead than believed
        self._newest_block_time: int | None = None

    # -- the loop ------------------------------------------------------------------------------

    async def run(self, ctx: NodeContext) -> None:
        """Follow the chain and step every known job until ``ctx.stopping`` is set.

        Each job's step runs as its own task, at most one at a time per job, within
        ``step_budget_seconds``: a job whose peers stall stalls only itself.
        """
        chain = ctx.require_chain()
        peers = ctx.require_peers()
        directory = PeerDirectory(
            chain.registry, policy=peers.policy, on_refused=peers.record_fault
        )
        self.attach(ctx, jobs=chain.jobs, directory=directory)
        stream = EventStream(
            chain.client,
            self.decoder(chain.deployment),
            from_block=chain.deployment.deploy_block,
            poll_interval=self.poll_seconds,
        )
        heads = chain.heads
        await self.warm_up()
        self.ready = True
        steps = JobSteps(self._safe_step, refresh_seconds=self.refresh_seconds)
        log.info("The %s role is following jobs for %s.", self.name, ctx.address)
        polled_at = -1  # the notification count at the last poll
        try:
            while not ctx.stopping.is_set():
                seen = heads.seq
                # A notification's block is the head; without a new one (a refresh), the chain
                # is asked: a notified number may be stale, e.g. after the chain lost blocks.
                head = heads.number if seen != polled_at else None
                polled_at = seen
                events = await asyncio.to_thread(stream.poll, head)
                if stream.rolled_back:  # the chain lost blocks: drop what came from them
                    stream.rolled_back = False
                    chain.client.forget_nonce()
                    heads.forget_number()
                    self.reconcile()
                if stream.head_time is not None:
                    self.follow_chain_clock(stream.head_time)
                for event in events:
                    self.observe(event)
                    if isinstance(event, JobCreated):
                        steps.add(event.job_id)
                    job_id = getattr(event, "job_id", None)
                    if isinstance(job_id, int) and isinstance(event, self.wake_on):
                        steps.touch(job_id)
                steps.start_due()
                if events and not stream.caught_up():
                    continue  # catching up with the chain: read the next chunk at once
                # With new-block notifications, a poll is due only for a block, a deadline, or
                # a step that ended with an event for its job waiting.
                timeout = self.refresh_seconds if heads.connected else self.poll_seconds
                await steps.wait(heads.wait(seen, timeout))
        finally:
            await steps.stop()

    def decoder(self, deployment: Deployment) -> EventDecoder:
        """Decodes the events the role follows, and names them for the log queries."""
        return EventDecoder(jobs=deployment.jobs, only=self.follows)

    def log_filter(self, deployment: Deployment) -> LogFilter:
        """The logs that should wake the role (see :meth:`HeadWatcher.watch_logs`)."""
        decoder = self.decoder(deployment)
        topics = None if decoder.topics is None else tuple(decoder.topics)
        return LogFilter(addresses=tuple(decoder.addresses), topics=topics)

    def attach(self, ctx: NodeContext, *, jobs: Jobs, directory: PeerDirectory) -> None:
        """Give the role its node, chain binding and peer directory (``run`` does this)."""
        self.ctx = ctx
        self.jobs = jobs
        if ctx.chain is not None:
            self.max_clock_lead = self.section.clock_lead_bound(ctx.chain.deployment.chain_id)
        self.directory = directory
        self._members = MemberCache(jobs)

    def follow_chain_clock(self, block_time: int) -> None:
        """Learn how far the chain's clock runs ahead of this machine's from the newest block's
        timestamp, when a new one is read (a chain that gives each block one second more than
        the last runs ahead, a dev chain whose time was moved forward too); deadlines are then
        judged in chain time (:meth:`now`), which goes on with this machine's clock between
        blocks. A chain behind is not followed: an idle dev chain's newest block is simply old;
        nor one further ahead than ``max_clock_lead_seconds`` (a hostile endpoint's far-future
        timestamps would otherwise make every deadline look passed)."""
        if block_time == self._newest_block_time:
            return
        self._newest_block_time = block_time
        ahead = block_time - time.time()
        capped = ahead > self.max_clock_lead
        if capped and not self._clock_capped:  # said once, until the lead is believable again
            log.warning(
                "The chain's newest block is %.0f s ahead of this machine's clock; deadlines are "
                "judged at most %.0f s ahead (max_clock_lead_seconds). Check this machine's "
                "clock and the RPC endpoint.", ahead, self.max_clock_lead,
            )  # fmt: skip
        self._clock_capped = capped
        self._clock_ahead = min(max(0.0, ahead), self.max_clock_lead)

    def now(self) -> float:
        """The chain's time as best known: this machine's clock, plus how far the chain's runs
        ahead of it. Deadlines on chain are judged by block timestamps, so the roles use this."""
        return time.time() + self._clock_ahead

    def reconcile(self) -> None:
        """Forget what the role knows from blocks the chain may have lost (a reorg, or a dev
        chain restarted from an older state); the stream then replays the chain's events and
        each step reads the chain again, so a commit or vote that is no longer on chain is sent
        again while its round is open. What stays true whatever the chain says is kept: specs
        and blobs by hash, proposals computed (checked against the chain before reuse)."""
        self._members = MemberCache(self.jobs)
        log.warning("The %s role is reconciling its state with the chain.", self.name)

    def forget_claims(self, claimed: set[tuple[int, int]]) -> None:
        """Claim again the shares of ``claimed`` (job, round) pairs: a claim sent in blocks the
        chain lost is gone, and one that stands reverts cheaply when sent again."""
        for job_id, round_ in claimed:
            self.ctx.state.set(f"{self.name}:claimed:{job_id}:{round_}", "")
        claimed.clear()

    def observe(self, event: ChainEvent) -> None:  # noqa: B027 - a hook; most roles need none
        """See every event as it is read, before any step (roles keep what saves them reads)."""

    async def warm_up(self) -> None:
        """Load, before any job comes, what every job of the allowed tasks needs (the task code,
        the local data), so the first round does not pay for it. A failure is logged: the jobs
        of that task fail the same way until it is fixed."""
        names = self.policy.allowed_tasks
        if names is None and self.tasks_named:
            log.warning(
                "The %s role allows no task yet, so it refuses every job; name the tasks it may "
                "run in [%s] allowed_tasks of node.toml.", self.name, self.name,
            )  # fmt: skip
        names = names or ([] if self.tasks_named else sorted(installed_tasks()))
        for name in names:
            try:
                await asyncio.to_thread(self._prepare_named, name)
            except AllmendeError as exc:
                log.warning("The %s role cannot prepare task %s: %s", self.name, name, exc)
            except Exception:
                log.exception("The %s role failed to prepare task %s.", self.name, name)

    def _prepare_named(self, name: str) -> None:
        task = load_task(name)
        if task.needs_options():  # its model and data depend on each job: prepared per job
            log.debug("Task %s is prepared when a job names its [data] options.", name)
            return
        self.prepare(task)

    def prepare(self, task: Task) -> None:
        """Role-specific loading for ``task`` (worker thread); by default the task's model is
        built once, which imports and warms up what it uses."""
        with TORCH_LOCK:
            task.model()

    async def _safe_step(self, job_id: int) -> StepOutcome:
        """One step of a job within the step budget; failures and overruns are logged."""
        budget = self.section.step_budget_seconds
        try:
            async with asyncio.timeout(budget):
                return StepOutcome.DONE if await self.step(job_id) else StepOutcome.AGAIN
        except TimeoutError:
            self.say_once(
                ("budget", job_id),
                logging.WARNING,
                f"Job {job_id}: a {self.name} step took longer than its {budget:g} s budget and "
                "was cancelled; the job is looked at less often until a step finishes in time.",
            )
            return StepOutcome.OVERRAN
        except AllmendeError as exc:
            self.say_once(("step", job_id, str(exc)), logging.WARNING, f"Job {job_id}: {exc}")
        except Exception:
            log.exception("Job %d: the %s step failed unexpectedly.", job_id, self.name)
        return StepOutcome.AGAIN

    @abstractmethod
    async def step(self, job_id: int) -> bool:
        """Do what is due for ``job_id`` now; return True when the role is done with the job."""

    # -- shared pieces ---------------------------------------------------------------------------

    @property
    def me(self) -> str:
        return self.ctx.address

    def say_once(self, key: tuple[object, ...], level: int, message: str) -> None:
        """Log ``message`` the first time ``key`` comes up (a waiting role would repeat it)."""
        if key not in self._said:
            self._said.add(key)
            log.log(level, message)

    async def members(self, job_id: int, job: Job) -> Members:
        """The job's trainers and aggregators, re-read only when someone joined."""
        return await self._members.get(job_id, job)

    async def peers(self, job_id: int, job: Job, *, first: str | None = None) -> list[str]:
        """Endpoints of the job's participants, without this node: ``first``, then the
        aggregators, the owner and the trainers."""
        addresses = (await self.members(job_id, job)).participants(job)
        if first is not None:
            addresses = [first, *addresses]
        return await self.directory.endpoints(addresses, exclude=self.me)

    async def plan(self, job_id: int, job: Job) -> JobPlan:
        """The job's spec and task, fetched and loaded once per job."""
        if job_id not in self.plans:
            spec = await self.fetch_spec(job_id, job)
            self.plans[job_id] = await asyncio.to_thread(make_plan, spec)
        return self.plans[job_id]

    async def fetch_spec(self, job_id: int, job: Job) -> JobSpec:
        """The job's spec from its participants, checked against its chain record."""
        endpoints = await self.peers(job_id, job)
        return await fetch_spec(self.ctx.require_peers(), self.ctx.store, job, endpoints)

    async def fetch_state(
        self, job_id: int, job: Job, digest: str, plan: JobPlan, *, first: str | None = None
    ) -> State:
        """A model or update of the job by hash, checked once (see :func:`fetch_state`)."""
        endpoints = await self.peers(job_id, job, first=first)
        return await fetch_state(
            self.ctx.require_peers(), self.ctx.store, digest, endpoints, reference=plan.reference
        )

    def stake_for(self, job: Job) -> int:
        """The stake this role locks when it joins ``job`` (the job's bond for the role)."""
        return 0

    async def consider(self, job_id: int, job: Job) -> bool:
        """Join the job if the consent policy accepts it; True when refused for good.

        The job's on-chain terms (owner, reward, stake) are checked first; only a job they
        accept has its spec fetched, within ``spec_fetch_seconds`` and with at most
        ``max_parallel_considers`` specs fetched at once, then its task is checked.
        """
        if job_id in self.refused:
            return True
        terms = decide_terms(
            self.policy,
            owner=job.owner,
            reward_per_round=job.reward_per_round,
            stake_wei=self.stake_for(job),
        )
        if not terms.accepted:
            return self.refuse(job_id, terms.reason)
        seconds = self.section.spec_fetch_seconds
        try:
            async with self._consider_slots, asyncio.timeout(seconds):
                spec = await self.fetch_spec(job_id, job)
        except ConfigError as exc:
            return self.refuse(job_id, str(exc).rstrip("."))
        except PeerError as exc:  # the owner's node may not serve yet: ask again next step
            self.say_once(("spec", job_id), logging.INFO, f"Job {job_id}: {exc}")
            return False
        except TimeoutError:
            self.say_once(
                ("spec-slow", job_id),
                logging.WARNING,
                f"Job {job_id}: its spec did not arrive within {seconds:g} s; asking again later.",
            )
            return False
        verdict = decide_task(
            self.policy, task=spec.task, installed=installed_tasks(), tasks_named=self.tasks_named
        )
        if not verdict.accepted:
            return self.refuse(job_id, verdict.reason)
        try:
            if job_id not in self.plans:  # kept, so a refused join retries cheaply
                self.plans[job_id] = await asyncio.to_thread(make_plan, spec)
            await asyncio.to_thread(self.check_plan, self.plans[job_id])
        except TaskError as exc:  # DataError too: the node's data does not fit the job
            return self.refuse(job_id, str(exc).rstrip("."))
        verdict = self.admits(job, spec)  # after the checks of this node's own fit for the job
        if not verdict.accepted:
            return self.refuse(job_id, verdict.reason)
        await on_chain(self.jobs.join, job_id, self.role_bit)
        log.info("Joined job %d as %s (task %s).", job_id, self.name, spec.task)
        return False

    async def release_when_due(self, job_id: int, job: Job) -> bool:
        """For a job that ended: once its challenge window passed, release the stake this node
        locked for it. True when the role is done with the job (released, or nothing locked)."""
        chain = self.ctx.require_chain()
        jobs_address = chain.deployment.jobs.address
        locked = await on_chain(chain.registry.lock_of, jobs_address, job_id, self.me)
        if locked == 0:
            return True
        if self._challenge_window is None:
            self._challenge_window = await on_chain(self.jobs.challenge_window)
        if self.now() < job.ended_at + self._challenge_window:
            return False  # the stake stays at risk while the job's result can be challenged
        try:
            await on_chain(self.jobs.release, job_id)
        except ContractRevert as exc:  # released by this node's other role meanwhile
            log.debug("Job %d: no stake released: %s", job_id, exc)
            return False
        log.info("Job %d: released the %d wei this node locked for it.", job_id, locked)
        return True

    def admits(self, job: Job, spec: JobSpec) -> Verdict:
        """Role-specific admission checks beyond the consent policy."""
        return Verdict(True)

    def check_plan(self, plan: JobPlan) -> None:  # noqa: B027 - a hook; most roles need none
        """Role-specific checks of a job's plan before joining (worker thread); TaskError
        refuses the job."""

    def refuse(self, job_id: int, reason: str) -> bool:
        self.refused.add(job_id)
        log.warning("Not joining job %d as %s: %s.", job_id, self.name, reason)
        return True
