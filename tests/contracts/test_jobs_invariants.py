"""Stateful fuzzing of Jobs and its Registry against an independent Python model.

Random sequences of every Jobs function and of Registry's money functions (stake,
request_unbond, withdraw_unbonded, withdraw) by many accounts, valid and invalid alike. The
model predicts whether each call succeeds (the contract must agree), whether a vote finalizes
the round (exactly the vote that brings its pair to the quorum does), what it credits and what
it slashes, from stake first and then from unbonding stake, to the job owner.

After every step, each contract's money is checked against the model and against the chain's
real balances:

- Jobs holds exactly total escrow + total owed, and the model's own sum of both;
- Registry holds exactly every node's stake + unbonding stake + the slash proceeds it owes;
- every node's stake and unbonding stake, and every account's credit in both contracts, match
  the model;
- every account's real ETH balance is what it started with, less what it paid in (stakes and
  escrow), plus what the model says it was paid out (credits and refunds it withdrew, unbonded
  stake): so nobody ever receives a wei more, or less, than it was credited;
- every finalized round's result is unchanged.

``test_each_invariant_can_fail`` changes the chain behind the model's back, once per money
check, and shows that each check notices.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import boa
import pytest
from contract_helpers import (
    AGGREGATOR,
    AGGREGATOR_SHARE_BPS,
    CONTRACTS,
    ETHER,
    MIN_STAKE,
    SLASH_AMOUNT,
    TRAINER,
    UNBOND_DELAY,
    h,
    vote_key,
)
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

OPEN, FINISHED, CANCELLED = 1, 2, 3
N_NODES = 8
N_OWNERS = 2
MAX_JOBS = 4
MODELS = (h("model a"), h("model b"))
DEADLINES = (300, 600)
# Most created jobs are valid; now and then one argument is broken on purpose.
CREATE_FAULTS = (None,) * 6 + ("rounds", "min_trainers", "quorum", "underpay")
job_picks = st.integers(0, 7)


def _quiet_repr(contract: Any) -> None:
    """Give one contract a short repr.

    titanoboa builds ``repr(contract)`` (a dump of all its storage) on every revert, for its
    error message; this machine causes thousands of reverts on purpose and reads no messages.
    """
    base = type(contract)
    contract.__class__ = type(f"Quiet{base.__name__}", (base,), {
        "__repr__": lambda self: f"<{base.__name__} at {self.address}>",
    })


@dataclass
class World:
    """Contracts and funded, registered nodes, deployed once per test; each run rolls back to it."""

    registry: Any
    jobs: Any
    nodes: list[str]
    roles: dict[str, int]
    stake: dict[str, int]
    owners: list[str]

    @classmethod
    def build(cls) -> World:
        admin = boa.env.generate_address()
        with boa.env.prank(admin):
            registry = boa.load(str(CONTRACTS / "Registry.vy"), MIN_STAKE, UNBOND_DELAY)
            jobs = boa.load(
                str(CONTRACTS / "Jobs.vy"), registry.address, AGGREGATOR_SHARE_BPS, SLASH_AMOUNT
            )
            registry.set_slasher(jobs.address, True)
        _quiet_repr(registry)
        _quiet_repr(jobs)
        world = cls(registry, jobs, [], {}, {}, [])
        for index in range(N_NODES):
            account = boa.env.generate_address()
            boa.env.set_balance(account, 100 * ETHER)
            # the last node may only train; the one before it is under-staked (inactive)
            roles = TRAINER if index == N_NODES - 1 else TRAINER | AGGREGATOR
            stake = MIN_STAKE - 1 if index == N_NODES - 2 else 2 * MIN_STAKE
            with boa.env.prank(account):
                registry.register(f"http://127.0.0.1:{9000 + index}", roles, h("meta"))
                registry.stake(value=stake)
            world.nodes.append(account)
            world.roles[account] = roles
            world.stake[account] = stake
        for _ in range(N_OWNERS):
            owner = boa.env.generate_address()
            boa.env.set_balance(owner, 10**6 * ETHER)
            world.owners.append(owner)
        return world


@dataclass
class JobModel:
    owner: str
    rounds: int
    reward: int
    min_trainers: int
    max_trainers: int
    quorum: int
    round_deadline: int
    escrow: int
    round_start: int
    status: int = OPEN
    round: int = 0
    trainers: list[str] = field(default_factory=list)
    aggregators: list[str] = field(default_factory=list)
    commits: dict[int, int] = field(default_factory=dict)  # trainer index -> weight
    votes: dict[str, bytes] = field(default_factory=dict)  # aggregator -> key
    vote_counts: Counter[bytes] = field(default_factory=Counter)
    results: dict[int, tuple[bytes, int, int]] = field(default_factory=dict)

    def deadline(self) -> int:
        return self.round_start + self.round_deadline


class JobsMachine(RuleBasedStateMachine):
    world: World  # set by the test before it runs the machine

    def __init__(self) -> None:
        super().__init__()
        self._anchor = boa.env.anchor()
        self._anchor.__enter__()
        world = self.world
        self.registry, self.jobs = world.registry, world.jobs
        self.nodes, self.owners, self.roles = world.nodes, world.owners, world.roles
        self.stake = dict(world.stake)
        self.unbonding: Counter[str] = Counter()
        self.unbond_at: dict[str, int] = {}
        self.model: dict[int, JobModel] = {}
        self.next_job_id = 1
        self.owed: Counter[str] = Counter()  # Jobs' credits not yet withdrawn
        self.slash_owed: Counter[str] = Counter()  # Registry's slash proceeds not yet withdrawn
        self.paid_in: Counter[str] = Counter()  # wei each account sent: stakes and escrow
        self.paid_out: Counter[str] = Counter()  # wei each account should have received
        self.start_balance = {a: boa.env.get_balance(a) for a in self.accounts}
        self._start_job()

    def _start_job(self) -> None:
        """One running job with three trainers and two aggregators, so every run starts busy."""
        self._create(self.owners[0], (2, 3 * ETHER + 1, 2, 3, 2, DEADLINES[1]), 6 * ETHER + 2,
                     expected=True)
        for who in range(3):
            self._join(1, self.nodes[who], TRAINER)
        for who in range(3, 5):
            self._join(1, self.nodes[who], AGGREGATOR)

    def teardown(self) -> None:
        self._anchor.__exit__(None, None, None)

    # --- helpers ---------------------------------------------------------------------------

    @property
    def accounts(self) -> list[str]:
        return self.nodes + self.owners

    def _now(self) -> int:
        return int(boa.env.evm.patch.timestamp)

    def _call(
        self, sender: str, expected: bool, fn: Any, *args: Any, value: int = 0, to: Any = None
    ) -> Any:
        """Send ``fn(*args)`` to Jobs (or ``to``) from ``sender``; it must succeed exactly when
        the model expects.

        Returns the call's output as an integer (the job id for ``create_job``) or None on a
        revert. Sent as a raw message, since reverts are expected here and need no report.
        """
        computation = boa.env.execute_code(
            to_address=(to or self.jobs).address, sender=sender, value=value,
            data=fn.prepare_calldata(*args),
        )
        if computation.is_error:
            assert not expected, f"model expected {fn.func_t.name} to succeed; it reverted"
            return None
        assert expected, f"model expected {fn.func_t.name} to revert; it succeeded"
        return int.from_bytes(computation.output or b"\0", "big")

    def _pair_ok(self, job: JobModel, included: int) -> bool:
        n = len(job.trainers)
        if included >> n:
            return False
        if bin(included).count("1") < job.min_trainers:
            return False
        return len(job.commits) == n or self._now() > job.deadline()

    def _job_id(self, pick: int) -> int:
        """Mostly an open job; sometimes a closed one or the next, not yet existing, id."""
        running = [job_id for job_id, job in sorted(self.model.items()) if job.status == OPEN]
        ids = [*running * 3, *sorted(self.model), self.next_job_id]
        return ids[pick % len(ids)]

    def _member(self, members: list[str], who: int, insider: bool, done: Any = ()) -> str:
        """An insider who has not acted yet this round (if any), else any node."""
        if not insider or not members:
            return self.nodes[who]
        pending = [m for m in members if m not in done] or members
        return pending[who % len(pending)]

    def _check_credits(self, accounts: Any) -> None:
        for account in accounts:
            assert self.jobs.owed(account) == self.owed[account]
            assert self.registry.owed(account) == self.slash_owed[account]

    def _check_stakes(self, nodes: Any) -> None:
        for node in nodes:
            record = self.registry.nodes(node)
            assert (record.stake, record.unbonding) == (self.stake[node], self.unbonding[node])

    def _open_round(self, job_id: int, round_: int) -> JobModel | None:
        job = self.model.get(job_id)
        if job is None or job.status != OPEN or round_ != job.round:
            return None
        return job

    # --- actions: predict, call, check, update the model ----------------------------------

    def _create(self, sender: str, args: tuple[int, ...], value: int, expected: bool) -> None:
        rounds, reward, min_trainers, max_trainers, quorum, round_deadline = args
        job_id = self._call(
            sender, expected, self.jobs.create_job, h("spec"), h("model 0"), rounds, reward,
            min_trainers, max_trainers, quorum, round_deadline, value=value,
        )
        if job_id is None:
            return
        self.paid_in[sender] += value
        assert job_id == self.next_job_id
        self.next_job_id += 1
        self.model[job_id] = JobModel(
            owner=sender, rounds=rounds, reward=reward, min_trainers=min_trainers,
            max_trainers=max_trainers, quorum=quorum, round_deadline=round_deadline,
            escrow=value, round_start=self._now(),
        )

    def _join(self, job_id: int, account: str, role: int) -> None:
        job = self.model.get(job_id)
        expected = (
            job is not None and job.status == OPEN and role in (TRAINER, AGGREGATOR)
            and self.stake[account] >= MIN_STAKE and self.roles[account] & role == role
        )
        if expected and job is not None:
            if role == TRAINER:
                expected = account not in job.trainers and len(job.trainers) < job.max_trainers
            else:
                expected = account not in job.aggregators and len(job.aggregators) < 16
        self._call(account, expected, self.jobs.join, job_id, role)
        if expected and job is not None:
            (job.trainers if role == TRAINER else job.aggregators).append(account)

    def _commit(self, job_id: int, account: str, round_: int, weight: int) -> None:
        job = self._open_round(job_id, round_)
        expected = (
            job is not None and account in job.trainers and weight > 0
            and job.trainers.index(account) not in job.commits and self._now() <= job.deadline()
        )
        update = h(f"update {job_id} {round_} {account}")
        self._call(account, expected, self.jobs.commit_update, job_id, round_, update, weight)
        if expected and job is not None:
            job.commits[job.trainers.index(account)] = weight

    def _propose(
        self, job_id: int, account: str, round_: int, model_hash: bytes, included: int
    ) -> None:
        """A vote; the one that brings its pair to the quorum also finalizes the round, and
        then reverts as a whole unless every included trainer committed this round."""
        key = vote_key(model_hash, included)
        job = self._open_round(job_id, round_)
        expected = (
            job is not None and account in job.aggregators and account not in job.votes
            and self._pair_ok(job, included)
        )
        finalizes = job is not None and expected and job.vote_counts[key] + 1 == job.quorum
        if finalizes and job is not None:
            expected = all(
                i in job.commits for i in range(len(job.trainers)) if included >> i & 1
            )
        self._call(account, expected, self.jobs.propose, job_id, round_, model_hash, included)
        if not expected or job is None:
            return
        job.votes[account] = key
        job.vote_counts[key] += 1
        if finalizes:
            credited = self._apply_finalization(job, round_, model_hash, included, key)
            self._check_credits([*credited, *job.aggregators])
            self._check_stakes(job.aggregators)
        state = self.jobs.jobs(job_id)  # final exactly when this vote reached the quorum
        assert (state.current_round, state.status) == (job.round, job.status)

    def _apply_finalization(
        self, job: JobModel, round_: int, model_hash: bytes, included: int, key: bytes
    ) -> list[str]:
        """Credit, slash and advance exactly as contracts/README.md describes."""
        weights = {i: w for i, w in job.commits.items() if included >> i & 1}
        total_weight = sum(weights.values())
        agreeing = [a for a in job.aggregators if job.votes.get(a) == key]
        dissenting = [a for a in job.aggregators if a in job.votes and job.votes[a] != key]
        aggregator_pool = job.reward * AGGREGATOR_SHARE_BPS // 10_000
        trainer_pool = job.reward - aggregator_pool
        credits: Counter[str] = Counter()
        for aggregator in agreeing:
            credits[aggregator] += aggregator_pool // len(agreeing)
        for index, weight in weights.items():
            credits[job.trainers[index]] += trainer_pool * weight // total_weight
        for account, amount in credits.items():
            self.owed[account] += amount
        job.escrow -= sum(credits.values())
        for aggregator in dissenting:
            from_stake = min(SLASH_AMOUNT, self.stake[aggregator])
            from_unbonding = min(SLASH_AMOUNT - from_stake, self.unbonding[aggregator])
            self.stake[aggregator] -= from_stake
            self.unbonding[aggregator] -= from_unbonding
            self.slash_owed[job.owner] += from_stake + from_unbonding
        job.results[round_] = (model_hash, included, total_weight)
        job.round += 1
        job.round_start = self._now()
        job.commits, job.votes, job.vote_counts = {}, {}, Counter()
        if job.round == job.rounds:
            job.status = FINISHED
        return list(credits)

    # --- rules -----------------------------------------------------------------------------

    @precondition(lambda self: len(self.model) < MAX_JOBS)
    @rule(
        owner=st.integers(0, N_OWNERS - 1),
        rounds=st.integers(1, 3),
        reward=st.integers(1, 10 * ETHER),
        min_trainers=st.integers(1, 3),
        extra_trainers=st.integers(0, 3),
        quorum=st.integers(1, 2),
        round_deadline=st.sampled_from(DEADLINES),
        fault=st.sampled_from(CREATE_FAULTS),
    )
    def create_job(
        self, owner: int, rounds: int, reward: int, min_trainers: int, extra_trainers: int,
        quorum: int, round_deadline: int, fault: str | None,
    ) -> None:
        max_trainers = min_trainers + extra_trainers
        args = (
            0 if fault == "rounds" else rounds,
            reward,
            0 if fault == "min_trainers" else min_trainers,
            max_trainers,
            0 if fault == "quorum" else quorum,
            round_deadline,
        )
        value = args[0] * reward - (1 if fault == "underpay" else 0)
        self._create(self.owners[owner], args, value, expected=fault is None)

    @rule(job_pick=job_picks, who=st.integers(0, N_NODES - 1),
          role=st.sampled_from((TRAINER, TRAINER, AGGREGATOR, 3)))
    def join(self, job_pick: int, who: int, role: int) -> None:
        self._join(self._job_id(job_pick), self.nodes[who], role)

    @rule(job_pick=job_picks, who=st.integers(0, N_NODES - 1), insider=st.booleans(),
          round_offset=st.sampled_from((0, 0, 0, 1)), weight=st.integers(0, 1000))
    def commit_update(
        self, job_pick: int, who: int, insider: bool, round_offset: int, weight: int
    ) -> None:
        job_id = self._job_id(job_pick)
        job = self.model.get(job_id)
        if job is None:
            self._commit(job_id, self.nodes[who], round_offset, weight)
            return
        done = [job.trainers[i] for i in job.commits]
        account = self._member(job.trainers, who, insider, done)
        self._commit(job_id, account, job.round + round_offset, weight)

    @rule(job_pick=job_picks, who=st.integers(0, N_NODES - 1), insider=st.booleans(),
          model_hash=st.sampled_from(MODELS), use_committed=st.booleans(),
          included=st.integers(0, 2**6 - 1))
    def propose(
        self, job_pick: int, who: int, insider: bool, model_hash: bytes, use_committed: bool,
        included: int,
    ) -> None:
        job_id = self._job_id(job_pick)
        job = self.model.get(job_id)
        if job is None:
            self._propose(job_id, self.nodes[who], 0, model_hash, included)
            return
        if use_committed:
            included = sum(1 << i for i in job.commits)
        account = self._member(job.aggregators, who, insider, job.votes)
        self._propose(job_id, account, job.round, model_hash, included)

    @rule(job_pick=job_picks, who=st.integers(0, N_NODES - 1), actions=st.integers(1, 6),
          model_hash=st.sampled_from(MODELS), weight=st.integers(1, 2**64 - 1))
    def progress(
        self, job_pick: int, who: int, actions: int, model_hash: bytes, weight: int
    ) -> None:
        """Drive an open job forward by a few useful actions (join, commit, vote; the vote
        that reaches the quorum finalizes)."""
        job_id = self._job_id(job_pick)
        for action in range(actions):
            self._next_action(job_id, who + action, model_hash, weight)

    def _next_action(self, job_id: int, who: int, model_hash: bytes, weight: int) -> None:
        job = self.model.get(job_id)
        if job is None or job.status != OPEN:
            return
        outsiders = [n for n in self.nodes if n not in job.trainers and n not in job.aggregators]
        pending = [t for i, t in enumerate(job.trainers) if i not in job.commits]
        if outsiders and len(job.trainers) < max(job.min_trainers, 2):
            self._join(job_id, outsiders[who % len(outsiders)], TRAINER)
        elif outsiders and len(job.aggregators) < job.quorum + 1:
            self._join(job_id, outsiders[who % len(outsiders)], AGGREGATOR)
        elif pending and self._now() <= job.deadline():
            self._commit(job_id, pending[who % len(pending)], job.round, weight)
        elif any(a not in job.votes for a in job.aggregators):
            voter = next(a for a in job.aggregators if a not in job.votes)
            included = sum(1 << i for i in job.commits)
            if who % 3 == 0 and not job.votes and len(job.aggregators) > job.quorum:
                # the round's first voter dissents; the quorum can still be reached without it
                model_hash = MODELS[1] if model_hash == MODELS[0] else MODELS[0]
            self._propose(job_id, voter, job.round, model_hash, included)
        # else: every aggregator voted and no pair has the quorum; the round waits for a cancel

    @rule(job_pick=job_picks, caller=st.integers(0, N_OWNERS - 1))
    def cancel(self, job_pick: int, caller: int) -> None:
        job_id = self._job_id(job_pick)
        sender = self.owners[caller]
        job = self.model.get(job_id)
        expected = (
            job is not None and job.owner == sender and job.status == OPEN
            and self._now() > job.deadline()
        )
        self._call(sender, expected, self.jobs.cancel, job_id)
        if expected and job is not None:
            job.status = CANCELLED

    @rule(job_pick=job_picks, caller=st.integers(0, N_OWNERS - 1))
    def refund(self, job_pick: int, caller: int) -> None:
        job_id = self._job_id(job_pick)
        sender = self.owners[caller]
        job = self.model.get(job_id)
        expected = (
            job is not None and job.owner == sender and job.status in (FINISHED, CANCELLED)
            and job.escrow > 0
        )
        self._call(sender, expected, self.jobs.refund, job_id)
        if expected and job is not None:
            self.owed[sender] += job.escrow
            job.escrow = 0
        self._check_credits([sender])

    @rule(who=st.integers(0, N_NODES + N_OWNERS - 1))
    def withdraw(self, who: int) -> None:
        account = self.accounts[who]
        amount = self.owed[account]
        self._call(account, amount > 0, self.jobs.withdraw)
        self.paid_out[account] += amount
        self.owed[account] = 0
        self._check_credits([account])

    @rule(who=st.integers(0, N_NODES + N_OWNERS - 1))
    def withdraw_slash_proceeds(self, who: int) -> None:
        account = self.accounts[who]
        amount = self.slash_owed[account]
        self._call(account, amount > 0, self.registry.withdraw, to=self.registry)
        self.paid_out[account] += amount
        self.slash_owed[account] = 0
        self._check_credits([account])

    @rule(who=st.integers(0, N_NODES + N_OWNERS - 1), amount=st.sampled_from((0, 1, 2, 3)))
    def restake(self, who: int, amount: int) -> None:
        """Add 0 (refused), 1 wei, one or two minimum stakes; owners are not registered."""
        account = self.accounts[who]
        value = (0, 1, MIN_STAKE, 2 * MIN_STAKE)[amount]
        expected = value > 0 and account in self.nodes
        self._call(account, expected, self.registry.stake, value=value, to=self.registry)
        if expected:
            self.stake[account] += value
            self.paid_in[account] += value
        self._check_stakes(self.nodes)

    @rule(who=st.integers(0, N_NODES + N_OWNERS - 1),
          share=st.sampled_from(("zero", "one wei", "half", "all", "too much")))
    def request_unbond(self, who: int, share: str) -> None:
        account = self.accounts[who]
        stake = self.stake.get(account, 0)
        amount = {"zero": 0, "one wei": 1, "half": stake // 2, "all": stake,
                  "too much": stake + 1}[share]
        expected = account in self.nodes and 0 < amount <= stake
        self._call(account, expected, self.registry.request_unbond, amount, to=self.registry)
        if expected:
            self.stake[account] -= amount
            self.unbonding[account] += amount
            self.unbond_at[account] = self._now() + UNBOND_DELAY
        self._check_stakes(self.nodes)

    @rule(who=st.integers(0, N_NODES + N_OWNERS - 1))
    def withdraw_unbonded(self, who: int) -> None:
        account = self.accounts[who]
        amount = self.unbonding[account]
        expected = amount > 0 and self._now() >= self.unbond_at[account]
        self._call(account, expected, self.registry.withdraw_unbonded, to=self.registry)
        if expected:
            self.paid_out[account] += amount
            self.unbonding[account] = 0
        self._check_stakes(self.nodes)

    @rule(seconds=st.sampled_from((1, 30, 120, 250, UNBOND_DELAY)))
    def advance_time(self, seconds: int) -> None:
        boa.env.time_travel(seconds=seconds)

    @precondition(lambda self: bool(self.model))
    @rule(job_pick=job_picks)
    def check_views(self, job_pick: int) -> None:
        job_id = self._job_id(job_pick)
        job = self.model.get(job_id)
        if job is None:
            return
        state = self.jobs.jobs(job_id)
        assert (state.status, state.current_round) == (job.status, job.round)
        assert state.escrow == job.escrow
        assert (state.n_trainers, state.n_aggregators) == (len(job.trainers), len(job.aggregators))
        for index, trainer in enumerate(job.trainers):
            weight = job.commits.get(index, 0)
            assert self.jobs.commit_of(job_id, job.round, trainer)[1] == weight

    # --- invariants ------------------------------------------------------------------------

    @invariant()
    def balance_is_escrow_plus_owed(self) -> None:
        balance = boa.env.get_balance(self.jobs.address)
        assert balance == self.jobs.total_escrow() + self.jobs.total_owed()
        assert balance == sum(j.escrow for j in self.model.values()) + sum(self.owed.values())

    @invariant()
    def registry_holds_stakes_unbonding_and_slash_proceeds(self) -> None:
        held = sum(self.stake.values()) + sum(self.unbonding.values())
        assert boa.env.get_balance(self.registry.address) == held + sum(self.slash_owed.values())

    @invariant()
    def stakes_and_credits_match_the_model(self) -> None:
        self._check_stakes(self.nodes)
        self._check_credits(self.accounts)

    @invariant()
    def every_account_received_exactly_what_it_was_paid_out(self) -> None:
        for account in self.accounts:
            expected = self.start_balance[account] - self.paid_in[account]
            assert boa.env.get_balance(account) == expected + self.paid_out[account], account

    @invariant()
    def finalized_results_never_change(self) -> None:
        for job_id, job in self.model.items():
            for round_, result in job.results.items():
                assert self.jobs.round_result(job_id, round_) == result


class CountingMachine(JobsMachine):
    """The machine, counting the rule steps it ran: hypothesis checks the invariants once
    when a run starts and again after every step."""

    steps = 0

    def __init__(self) -> None:
        super().__init__()
        type(self).steps -= 1  # this run's first invariant check follows no step

    def check_invariants(self, *args: Any, **kwargs: Any) -> None:
        type(self).steps += 1
        super().check_invariants(*args, **kwargs)


def _run(profile: str, minimum: int) -> None:
    CountingMachine.world = World.build()
    CountingMachine.steps = 0
    CountingMachine.TestCase.settings = settings.get_profile(profile)
    CountingMachine.TestCase().runTest()
    print(f"{CountingMachine.steps:,} stateful steps of Jobs and Registry")
    assert CountingMachine.steps >= minimum, f"only {CountingMachine.steps} steps ran"


def test_jobs_state_machine() -> None:
    _run("contracts", 2_000)


@pytest.mark.long
def test_jobs_state_machine_long() -> None:
    _run("contracts-long", 30_000)


def _rogue_slash(world: World, node: str, beneficiary: str) -> None:
    """Slash ``node`` through a slasher the model does not know of."""
    rogue = boa.env.generate_address()
    with boa.env.prank(world.registry.admin()):
        world.registry.set_slasher(rogue, True)
    with boa.env.prank(rogue):
        world.registry.slash(node, SLASH_AMOUNT, beneficiary)


def test_each_invariant_can_fail() -> None:
    """Each money check notices when the chain's money moves behind the model's back."""
    world = World.build()
    JobsMachine.world = world
    node, owner = world.nodes[0], world.owners[0]
    tamperings = {
        "balance_is_escrow_plus_owed": lambda: boa.env.set_balance(
            world.jobs.address, boa.env.get_balance(world.jobs.address) + 1),
        "registry_holds_stakes_unbonding_and_slash_proceeds": lambda: boa.env.set_balance(
            world.registry.address, boa.env.get_balance(world.registry.address) - 1),
        "stakes_and_credits_match_the_model": lambda: _rogue_slash(world, node, owner),
        "every_account_received_exactly_what_it_was_paid_out": lambda: boa.env.set_balance(
            owner, boa.env.get_balance(owner) + 1),
    }
    for name, tamper in tamperings.items():
        machine = JobsMachine()
        try:
            for check in tamperings:
                getattr(machine, check)()  # all hold before the tampering
            tamper()
            with pytest.raises(AssertionError):
                getattr(machine, name)()
        finally:
            machine.teardown()
