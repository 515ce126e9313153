"""Stateful fuzzing of Jobs and its Registry against an independent Python model.

Random sequences of every Jobs function by many accounts, valid and invalid alike:
create_job (named and open committees, equal and declared weights, broken arguments), join
(trainer, named member, volunteer, an account without the role), seal, commit_update (weights
within and over the cap), commit_vote and reveal (honest members revealing the same result; a
wrong member revealing another model or total for the same included set; a member missing one
update, so voting another included set; a member withholding its reveal; a member that
commits after the vote-commit period; a reveal other than the commitment; every member
including a trainer that did not commit), claim (included and non-included trainers, forged
results, double claims, stale, overwritten and not yet final rounds), claim_vote, challenge,
reopen, evict, cancel, refund, release, withdraw; and Registry's money functions (stake,
request_unbond, withdraw_unbonded, withdraw). Chain time moves (`boa.env.time_travel`) and
prevrandao changes. The model predicts whether each call succeeds (the contract must agree);
which committee `seal` draws; whether a reveal finalizes the round (exactly the one that
brings its result to the quorum in the current attempt, and it reverts when the result names a
trainer that did not commit); what each claim credits; whom a challenge or a release slashes
(only a reveal of the finalizing attempt naming the finalized included set with another
result), by how much (at most the slash amount and the job's lock) and whom that removes from
the committee; every lock that join, seal, evict and release take or give back.

After every step:

- Jobs holds exactly total escrow + total owed, and the model's own sum of both;
- per job, escrow + credited + refunded == deposited (so credits + refunds == deposit once the
  escrow is empty), and the chain's `paid` is the model's credited sum;
- nobody is ever credited for a round it was not included in: every `Credited` event names a
  finalized round of its job and either a trainer whose bit is in that round's finalized
  included set and who committed in the round (credited its weight's share), or a member that
  revealed the finalized result in the finalizing attempt (credited the aggregator share),
  each at most once;
- every slash of a member took at most the slash amount from its lock (and the stake);
- Registry holds exactly every node's stake + unbonding stake + the slash proceeds it owes;
- every node's stake, unbonding and locked stake, every lock Jobs holds, and every account's
  credit in both contracts match the model;
- every account's real ETH balance is what it started with, less what it paid in, plus what
  the model says it was paid out: nobody ever receives a wei more, or less, than it was owed;
- every finalized round's recorded result is unchanged.

``test_each_invariant_can_fail`` changes the chain (or the model) behind the machine's back,
once per check, and shows that each check notices.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

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
    commitment,
    h,
    vote_key,
    words,
)
from eth_abi import encode as abi_encode
from eth_utils import keccak
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

OPEN, FINISHED, CANCELLED = 1, 2, 3
N_NODES = 8
N_OWNERS = 2
MAX_JOBS = 6
MAX_REOPENS = 3
MISSED_ROUNDS_ALLOWED = 3
RESULT_RING = 8
BPS = 10_000
ADMIN_DELAY = 1_000
CHALLENGE_WINDOW = 700
SIGNUP = 200
DEADLINES = (300, 600)
STAKES = (0, MIN_STAKE // 4, MIN_STAKE // 2, MIN_STAKE)
CAPS = (0, 0, 5, 2**64 - 1)
# Most created jobs are valid; now and then one argument is broken on purpose.
CREATE_FAULTS = (None,) * 8 + (
    "rounds", "min_trainers", "quorum", "underpay", "deadline", "weight_cap", "duplicate",
)
# What a member's vote commit hides: the honest result of the updates it saw; another model
# or total for the same included set (provably wrong); another included set (a missed
# update: neither paid nor slashed); a set naming a trainer that did not commit; nothing
# revealable (it withholds); or an empty commitment (refused).
BALLOTS = ("honest", "honest", "honest", "wrong", "wrong_total", "partial", "uncommitted",
           "withhold", "empty")
# The driver's plan for an attempt: how one of its voters (or, "uncommitted", every voter)
# behaves; "late": the last voter commits after the vote-commit period.
PLANS = ("honest", "wrong", "partial", "withhold", "late", "wrong_total", "uncommitted",
         "honest")
job_picks = st.integers(0, 7)

# `make test`: 25 runs of up to 100 steps (the test requires 2,000 steps: hypothesis may end
# a run early); `make test-long`: 400 runs of up to 100 (it requires 30,000). Derandomized:
# the same runs every time.
settings.register_profile(
    "jobs-invariants", stateful_step_count=100, max_examples=25, deadline=None,
    derandomize=True, database=None, suppress_health_check=list(HealthCheck),
)
settings.register_profile(
    "jobs-invariants-long", stateful_step_count=100, max_examples=400, deadline=None,
    derandomize=True, database=None, suppress_health_check=list(HealthCheck),
)


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
    admin: str
    nodes: list[str]
    roles: dict[str, int]
    stake: dict[str, int]
    owners: list[str]

    @classmethod
    def build(cls) -> World:
        admin = boa.env.generate_address()
        with boa.env.prank(admin):
            registry = boa.load(
                str(CONTRACTS / "Registry.vy"), MIN_STAKE, UNBOND_DELAY, ADMIN_DELAY
            )
            jobs = boa.load(
                str(CONTRACTS / "Jobs.vy"), registry.address, AGGREGATOR_SHARE_BPS, SLASH_AMOUNT,
                CHALLENGE_WINDOW,
            )
            registry.set_first_slasher(jobs.address)
        _quiet_repr(registry)
        _quiet_repr(jobs)
        world = cls(registry, jobs, admin, [], {}, {}, [])
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


@dataclass(frozen=True)
class Ballot:
    """A vote's content: what a member commits to and later reveals."""

    model: bytes
    included: int
    total: int
    salt: bytes

    @property
    def key(self) -> bytes:
        return vote_key(self.model, self.included, self.total)


@dataclass
class Agg:
    """What Jobs keeps of one account's committee record in one job."""

    commit_attempt: int | None = None  # attempt of its latest vote commit
    ballot: Ballot | None = None  # what that commit hides (None: nothing it can reveal)
    reveal_round: int | None = None  # round of its latest reveal
    reveal_attempt: int | None = None
    reveal: Ballot | None = None
    settled: bool = False  # its latest reveal was claimed, slashed or followed by a commit


@dataclass
class Result:
    """A finalized round, as the model expects the contract to have recorded it."""

    ballot: Ballot
    attempt: int
    weights: dict[int, int]  # included trainer index -> the weight it committed in the round
    winners: frozenset[str]  # members that revealed it in the finalizing attempt


@dataclass
class JobModel:
    owner: str
    rounds: int
    reward: int
    min_trainers: int
    max_trainers: int
    quorum: int
    round_deadline: int
    deposited: int
    round_start: int
    named: bool
    committee_size: int
    signup_end: int
    trainer_stake: int
    aggregator_stake: int
    weight_cap: int
    status: int = OPEN
    round: int = 0
    attempt: int = 0
    reopens: int = 0
    ended_at: int = 0
    credited: int = 0  # claims, over the job's life
    refunded: int = 0
    trainers: list[str] = field(default_factory=list)
    joined_round: dict[int, int] = field(default_factory=dict)  # trainer index -> round
    last_commit: dict[int, int] = field(default_factory=dict)  # trainer index -> round
    # trainer index -> round parity -> [round of its latest commit of that parity, weight, claimed]
    slots: dict[int, dict[int, list[Any]]] = field(default_factory=dict)
    evicted: set[int] = field(default_factory=set)
    committee: list[str] = field(default_factory=list)  # named at creation, or drawn
    members: set[str] = field(default_factory=set)  # joined (named) or drawn (open)
    removed: set[str] = field(default_factory=set)
    volunteers: list[str] = field(default_factory=list)
    aggs: dict[str, Agg] = field(default_factory=dict)
    released: set[str] = field(default_factory=set)
    locks: Counter[str] = field(default_factory=Counter)
    phase_attempt: int | None = None  # attempt of the latest vote-commit phase
    phase_time: int = 0
    phase_commits: int = 0
    vote_counts: Counter[bytes] = field(default_factory=Counter)  # this attempt
    results: dict[int, Result] = field(default_factory=dict)
    trainer_paid: Counter[int] = field(default_factory=Counter)  # round -> trainer claims
    plans: dict[int, str] = field(default_factory=dict)  # attempt -> the driver's plan
    stuck: set[tuple[int, str]] = field(default_factory=set)  # (attempt, member): reveal refused
    doomed: bool = False  # the driver lets it die: nobody volunteers, or nobody commits
    rogues: set[int] = field(default_factory=set)  # attempts in which the driver sent a rogue

    @property
    def escrow(self) -> int:
        return self.deposited - self.credited - self.refunded

    @property
    def sealed(self) -> bool:
        return self.named or bool(self.committee)

    @property
    def active(self) -> list[int]:
        return [i for i in range(len(self.trainers)) if i not in self.evicted]

    @property
    def voters(self) -> int:
        return self.committee_size - len(self.removed) if self.sealed else 0

    @property
    def trainer_pool(self) -> int:
        return self.reward - self.reward * AGGREGATOR_SHARE_BPS // BPS

    @property
    def member_share(self) -> int:
        return self.reward * AGGREGATOR_SHARE_BPS // BPS // self.quorum

    def deadline(self) -> int:
        return self.round_start + self.round_deadline

    def in_good_standing(self, account: str) -> bool:
        return account in self.members and account not in self.removed

    def commits(self) -> dict[int, int]:
        """Trainer index -> weight of the current round's commits."""
        parity = self.round % 2
        return {i: s[parity][1] for i, s in self.slots.items() if s[parity][0] == self.round}

    def since(self, index: int) -> int:
        if index in self.last_commit:
            return self.last_commit[index] + 1
        return self.joined_round[index]

    def result(self, round_: int) -> Result | None:
        """A finalized round's result while the contract's ring still holds it."""
        if self.round - RESULT_RING <= round_ < self.round:
            return self.results[round_]
        return None

    def reserved(self) -> int:
        return self.reward * self.round - self.credited

    def claims_open(self, now: int) -> bool:
        return self.status == OPEN or now < self.ended_at + CHALLENGE_WINDOW

    def reveals_open(self, now: int) -> bool:
        if self.phase_attempt != self.attempt:
            return False
        return self.phase_commits >= self.voters or now > self.phase_time + self.round_deadline

    def attempt_over(self, now: int) -> bool:
        if now <= self.deadline():
            return False
        if self.phase_attempt != self.attempt:
            return True
        return now > self.phase_time + 2 * self.round_deadline

    def attempt_over_at(self) -> int:
        """The first second at which the current attempt is over."""
        at = self.deadline() + 1
        if self.phase_attempt == self.attempt:
            at = max(at, self.phase_time + 2 * self.round_deadline + 1)
        return at

    def provably_wrong(self, account: str) -> bool:
        agg = self.aggs.get(account)
        if agg is None or agg.settled or agg.reveal_round is None or agg.reveal is None:
            return False
        result = self.result(agg.reveal_round)
        if result is None or result.attempt != agg.reveal_attempt:
            return False
        return (
            result.ballot.included == agg.reveal.included and result.ballot.key != agg.reveal.key
        )

    def trainer_claim(self, index: int, round_: int, ballot: Ballot) -> int:
        """What a claim by trainer ``index`` of ``round_`` with ``ballot`` credits (0: refused)."""
        return self.why_trainer_claim(index, round_, ballot)[0]

    def why_trainer_claim(self, index: int, round_: int, ballot: Ballot) -> tuple[int, str]:
        """The claim's credit, and what it is (why it is refused)."""
        result = self.result(round_)
        if result is None:
            return 0, "claim of a round not final or out of the ring"
        if ballot.key != result.ballot.key:
            return 0, "claim with a forged result"
        if not ballot.included >> index & 1:
            return 0, "claim by a trainer not included"
        slot = self.slots[index][round_ % 2]
        if slot[0] != round_:
            return 0, "claim after its commit was overwritten"
        if slot[2]:
            return 0, "double claim"
        amount = self.trainer_pool * slot[1] // ballot.total
        if self.weight_cap and self.trainer_paid[round_] + amount > self.trainer_pool:
            return 0, "claim beyond the round's trainer pool"
        return amount, "claim by an included trainer"

    def member_claim(self, account: str, round_: int) -> int:
        """What ``account``'s claim_vote of ``round_`` credits (0: refused)."""
        agg = self.aggs.get(account)
        if agg is None or agg.settled or agg.reveal_round != round_ or agg.reveal is None:
            return 0
        result = self.result(round_)
        if result is None or result.attempt != agg.reveal_attempt:
            return 0
        return self.member_share if agg.reveal.key == result.ballot.key else 0


class Storage:
    """Reads a contract's storage words directly, at the slots of its storage layout (a
    HashMap value at keccak256(slot ++ key), nested per key; a struct's fields one word
    each from there): the invariants read every account, node, lock and job after every
    step, and a view call for each would cost a millisecond."""

    # word offsets of the struct fields the invariants read
    JOB_ESCROW, JOB_PAID = 9, 25
    NODE_STAKE, NODE_UNBONDING = 11, 12  # after endpoint (String[256]: 9 words), roles, metadata

    def __init__(self, contract: Any) -> None:
        self.address = contract.address
        layout = contract.compiler_data.storage_layout["storage_layout"]
        self.base = {name: entry["slot"] for name, entry in layout.items()}
        self._slots: dict[tuple[Any, ...], int] = {}

    def slot(self, name: str, *keys: Any) -> int:
        cached = self._slots.get((name, *keys))
        if cached is None:
            cached = self.base[name]
            for key in keys:
                word = key.to_bytes(32, "big") if isinstance(key, int) else (
                    bytes.fromhex(str(key)[2:]).rjust(32, b"\0"))
                cached = int.from_bytes(keccak(cached.to_bytes(32, "big") + word), "big")
            self._slots[(name, *keys)] = cached
        return cached

    def get(self, name: str, *keys: Any, field: int = 0) -> int:
        return int(boa.env.evm.get_storage(self.address, self.slot(name, *keys) + field))


def honest_model(job_id: int, round_: int, included: int, total: int) -> bytes:
    """The aggregate every honest member computes from the same inputs."""
    return h(f"model {job_id} {round_} {included} {total}")


class JobsMachine(RuleBasedStateMachine):
    world: World  # set by the test before it runs the machine

    def __init__(self) -> None:
        super().__init__()
        self._anchor = boa.env.anchor()
        self._anchor.__enter__()
        world = self.world
        self.registry, self.jobs = world.registry, world.jobs
        self.jobs_storage, self.registry_storage = Storage(self.jobs), Storage(self.registry)
        self.nodes, self.owners, self.roles = world.nodes, world.owners, world.roles
        self.stake = dict(world.stake)
        self.locked: Counter[str] = Counter()
        self.unbonding: Counter[str] = Counter()
        self.unbond_at: dict[str, int] = {}
        self.model: dict[int, JobModel] = {}
        self.next_job_id = 1
        self.owed: Counter[str] = Counter()  # Jobs' credits not yet withdrawn
        self.slash_owed: Counter[str] = Counter()  # Registry's slash proceeds not yet withdrawn
        self.paid_in: Counter[str] = Counter()  # wei each account sent: stakes and escrow
        self.paid_out: Counter[str] = Counter()  # wei each account should have received
        self.credits: list[tuple[int, int, str, int]] = []  # Credited events, as emitted
        self.checked_credits = 0
        self.slashes: list[tuple[int, str, int, int]] = []  # (job, member, lock before, taken)
        self.calls: Counter[str] = Counter()  # calls by function and outcome, for the report
        self.scenarios: Counter[str] = Counter()  # what the calls were, for the report
        self.start_balance = {a: boa.env.get_balance(a) for a in self.accounts}
        self._start_jobs()
        # the storage offsets the invariants read agree with the contracts' own views
        node = self.nodes[0]
        assert self.jobs_storage.get("jobs", 1, field=Storage.JOB_ESCROW) == self.jobs.jobs(
            1).escrow == self.model[1].deposited
        assert self.registry_storage.get("nodes", node, field=Storage.NODE_STAKE) == (
            self.registry.stake_of(node)) == self.stake[node]

    def _start_jobs(self) -> None:
        """Two running jobs, so every run starts busy: job 1 (5 rounds, declared weights up
        to 2**64 - 1, 2 to 4 trainers) has a named committee of nodes 3, 4 and 5 (all joined,
        quorum 2) and trainers 0, 1, 2 (2 is a squatter in the driver); job 2 (equal
        weights) an open committee of two drawn from three volunteers (nodes 1, 3, 5), still
        in its signup, with trainer 0."""
        stakes = (MIN_STAKE // 4, MIN_STAKE // 2)
        self._create(self.owners[0], (5, 3 * ETHER + 1, 2, 4, 2, DEADLINES[1]),
                     self.nodes[3:6], 3, *stakes, 2**64 - 1, 15 * ETHER + 5, expected=True)
        for who in range(3):
            self._join(1, self.nodes[who], TRAINER)
        for who in range(3, 6):
            self._join(1, self.nodes[who], AGGREGATOR)
        self._create(self.owners[1], (2, ETHER, 1, 2, 2, DEADLINES[0]), [], 2, *stakes, 0,
                     2 * ETHER, expected=True)
        for who in (1, 3, 5):
            self._join(2, self.nodes[who], AGGREGATOR)
        self._join(2, self.nodes[0], TRAINER)

    def teardown(self) -> None:
        self._anchor.__exit__(None, None, None)

    # --- helpers ---------------------------------------------------------------------------

    @property
    def accounts(self) -> list[str]:
        return self.nodes + self.owners

    def _now(self) -> int:
        return int(boa.env.evm.patch.timestamp)

    def _travel_to(self, when: int) -> None:
        if self._now() < when:
            boa.env.time_travel(seconds=when - self._now())

    def _call(
        self, sender: str, expected: bool, fn: Any, *args: Any, value: int = 0, to: Any = None
    ) -> Any:
        """Send ``fn(*args)`` to Jobs (or ``to``) from ``sender``; it must succeed exactly when
        the model expects.

        Returns the computation, or None on a revert. Sent as a raw message, since reverts are
        expected here and need no report. Every ``Credited`` event Jobs emits is recorded.
        """
        contract = to or self.jobs
        computation = boa.env.execute_code(
            to_address=contract.address, sender=sender, value=value,
            data=fn.prepare_calldata(*args),
        )
        name = fn.func_t.name
        if computation.is_error:
            assert not expected, f"model expected {name} to succeed; it reverted"
            self.calls[f"{name} reverted"] += 1
            return None
        assert expected, f"model expected {name} to revert; it succeeded"
        self.calls[name] += 1
        if contract is self.jobs:
            for event in self.jobs.get_logs(computation):
                if type(event).__name__ == "Credited":
                    self.credits.append(
                        (event.job_id, event.round, str(event.account), event.amount)
                    )
        return computation

    def _free(self, node: str) -> int:
        return self.stake[node] - self.locked[node]

    def _lock(self, job: JobModel, node: str, amount: int) -> None:
        self.locked[node] += amount
        job.locks[node] += amount

    def _unlock(self, job: JobModel, node: str) -> int:
        amount = job.locks.pop(node, 0)
        self.locked[node] -= amount
        return amount

    def _slash(self, job: JobModel, node: str, amount: int) -> int:
        """What Registry.slash takes: at most the job's lock, from stake, locked and the lock."""
        taken = min(amount, job.locks[node])
        job.locks[node] -= taken
        self.locked[node] -= taken
        self.stake[node] -= taken
        self.slash_owed[job.owner] += taken
        return taken

    def _credit(self, job: JobModel, account: str, amount: int) -> None:
        job.credited += amount
        self.owed[account] += amount

    def _job_id(self, pick: int) -> int:
        """Mostly an open job; sometimes a closed one or the next, not yet existing, id."""
        running = [job_id for job_id, job in sorted(self.model.items()) if job.status == OPEN]
        ids = [*running * 3, *sorted(self.model), self.next_job_id]
        return ids[pick % len(ids)]

    def _ended_job_id(self, pick: int) -> int:
        """Mostly a finished or cancelled job; sometimes any job or the next id."""
        ended = [job_id for job_id, job in sorted(self.model.items()) if job.status != OPEN]
        ids = [*ended * 3, *sorted(self.model), self.next_job_id]
        return ids[pick % len(ids)]

    def _pick(self, insiders: list[str], who: int, insider: bool) -> str:
        """One of ``insiders`` (if any and ``insider``), else any node."""
        if not insider or not insiders:
            return self.nodes[who % N_NODES]
        return insiders[who % len(insiders)]

    def _check_credits(self, accounts: Any) -> None:
        for account in accounts:
            assert self.jobs.owed(account) == self.owed[account]
            assert self.registry.owed(account) == self.slash_owed[account]

    def _check_stakes(self, nodes: Any) -> None:
        for node in nodes:
            record = self.registry.nodes(node)
            assert (record.stake, record.unbonding) == (self.stake[node], self.unbonding[node])
            assert self.registry.locked(node) == self.locked[node]

    def _open_round(self, job_id: int, round_: int) -> JobModel | None:
        job = self.model.get(job_id)
        if job is None or job.status != OPEN or round_ != job.round:
            return None
        return job

    def _draw(self, job_id: int, job: JobModel) -> list[str]:
        """The committee `seal` must draw: stake-weighted, without replacement, by the README."""
        weights = [self.stake[v] + 1 for v in job.volunteers]
        seed = keccak(bytes(boa.env.evm.patch.prevrandao) + job_id.to_bytes(32, "big"))
        chosen: list[str] = []
        for _ in range(job.committee_size):
            seed = keccak(seed)
            point = int.from_bytes(seed, "big") % sum(weights)
            index = 0
            while point >= weights[index]:
                point -= weights[index]
                index += 1
            chosen.append(job.volunteers[index])
            weights[index] = 0
        return chosen

    def _ballot(self, job_id: int, job: JobModel, account: str, kind: str) -> Ballot | None:
        """The ballot of ``kind`` for ``account`` in the job's current round and attempt."""
        commits = job.commits()
        included = sum(1 << i for i in commits)
        if kind == "partial" and included & (included - 1):
            included &= included - 1  # it missed the first trainer's update
        elif kind == "uncommitted":
            missing = [i for i in range(len(job.trainers)) if i not in commits]
            included |= 1 << missing[0] if missing else 0
        total = sum(commits.get(i, 1) for i in range(len(job.trainers)) if included >> i & 1)
        if kind == "wrong_total":
            total += 1
        model = honest_model(job_id, job.round, included, total)
        if kind == "wrong":
            model = h(f"junk {job_id} {job.round} {account}")
        salt = h(f"salt {account} {job.attempt}")
        return None if kind in ("withhold", "empty") else Ballot(model, included, total, salt)

    # --- actions: predict, call, check, update the model ----------------------------------

    def _create(
        self, sender: str, args: tuple[int, ...], committee: list[str], committee_size: int,
        trainer_stake: int, aggregator_stake: int, weight_cap: int, value: int, expected: bool,
    ) -> None:
        rounds, reward, min_trainers, max_trainers, quorum, round_deadline = args
        signup = 0 if committee else SIGNUP
        computation = self._call(
            sender, expected, self.jobs.create_job, h("spec"), h("model 0"), rounds, reward,
            min_trainers, max_trainers, quorum, round_deadline, committee, committee_size,
            signup, trainer_stake, aggregator_stake, weight_cap, value=value,
        )
        if computation is None:
            return
        job_id = int.from_bytes(computation.output[:32], "big")
        self.paid_in[sender] += value
        assert job_id == self.next_job_id
        self.next_job_id += 1
        now = self._now()
        job = JobModel(
            owner=sender, rounds=rounds, reward=reward, min_trainers=min_trainers,
            max_trainers=max_trainers, quorum=quorum, round_deadline=round_deadline,
            deposited=value, round_start=now if committee else 0, named=bool(committee),
            committee_size=committee_size, signup_end=0 if committee else now + SIGNUP,
            trainer_stake=trainer_stake, aggregator_stake=aggregator_stake,
            weight_cap=weight_cap, committee=list(committee),
        )
        job.aggs = {member: Agg() for member in committee}
        self.model[job_id] = job

    def _join(self, job_id: int, account: str, role: int) -> None:
        job = self.model.get(job_id)
        expected = (
            job is not None and job.status == OPEN and role in (TRAINER, AGGREGATOR)
            and self.stake[account] >= MIN_STAKE and self.roles[account] & role == role
        )
        if expected and job is not None:
            if role == TRAINER:
                expected = (
                    account not in job.trainers and len(job.active) < job.max_trainers
                    and self._free(account) >= job.trainer_stake
                )
            elif job.named:
                expected = (
                    account in job.committee and account not in job.members
                    and self._free(account) >= job.aggregator_stake
                )
            else:
                expected = (
                    not job.sealed and self._now() <= job.signup_end
                    and account not in job.volunteers and len(job.volunteers) < 64
                    and self._free(account) >= job.aggregator_stake
                )
        self._call(account, expected, self.jobs.join, job_id, role)
        if not expected or job is None:
            return
        if role == TRAINER:
            index = len(job.trainers)
            job.joined_round[index] = job.round
            job.slots[index] = {0: [-1, 0, False], 1: [-1, 0, False]}
            job.trainers.append(account)
            self._lock(job, account, job.trainer_stake)
        else:
            if job.named:
                job.members.add(account)
            else:
                job.volunteers.append(account)
                job.aggs[account] = Agg()
            self._lock(job, account, job.aggregator_stake)

    def _seal(self, job_id: int) -> None:
        job = self.model.get(job_id)
        expected = (
            job is not None and job.status == OPEN and not job.named and not job.sealed
            and self._now() > job.signup_end and len(job.volunteers) >= job.committee_size
        )
        self._call(self.owners[0], expected, self.jobs.seal, job_id)
        if not expected or job is None:
            return
        job.committee = self._draw(job_id, job)
        job.members = set(job.committee)
        job.round_start = self._now()
        for volunteer in job.volunteers:
            if volunteer in job.members or job.aggregator_stake == 0:
                continue
            self._unlock(job, volunteer)
            if volunteer in job.trainers:
                self._lock(job, volunteer, job.trainer_stake)
        committee = [self.jobs.aggregator_at(job_id, i) for i in range(job.committee_size)]
        assert committee == job.committee

    def _commit(self, job_id: int, account: str, round_: int, weight: int) -> None:
        job = self._open_round(job_id, round_)
        index = job.trainers.index(account) if job and account in job.trainers else -1
        expected = (
            job is not None and job.sealed and index >= 0 and index not in job.evicted
            and (weight == 1 if job.weight_cap == 0 else 0 < weight <= job.weight_cap)
            and index not in job.commits() and self._now() <= job.deadline()
        )
        update = h(f"update {job_id} {round_} {account}")
        self._call(account, expected, self.jobs.commit_update, job_id, round_, update, weight)
        if expected and job is not None:
            job.slots[index][round_ % 2] = [round_, weight, False]
            job.last_commit[index] = round_

    def _commit_vote(self, job_id: int, account: str, round_: int, kind: str) -> None:
        job = self._open_round(job_id, round_)
        ballot = self._ballot(job_id, job, account, kind) if job else None
        if ballot is not None:
            secret = commitment(ballot.model, ballot.included, ballot.total, ballot.salt, account)
        elif kind == "empty":
            secret = b"\0" * 32
        else:
            secret = h(f"withheld {account} {round_}")  # nobody knows its preimage
        expected = False
        now = self._now()
        if job is not None and job.in_good_standing(account) and kind != "empty":
            period_end = job.phase_time + job.round_deadline
            in_period = job.phase_attempt != job.attempt or now <= period_end
            expected = (
                job.aggs[account].commit_attempt != job.attempt
                and (len(job.commits()) >= len(job.active) or now > job.deadline())
                and not job.provably_wrong(account)
            )
            if expected and not in_period:
                self.scenarios["vote commit after the commit period"] += 1
            if job.provably_wrong(account):
                self.scenarios["vote commit by an unchallenged wrong member"] += 1
            expected = expected and in_period
        if expected and kind == "withhold":
            self.scenarios["vote commit that will never be revealed"] += 1
        self._call(account, expected, self.jobs.commit_vote, job_id, round_, secret)
        if not expected or job is None:
            return
        if job.phase_attempt != job.attempt:
            job.phase_attempt, job.phase_time, job.phase_commits = job.attempt, now, 0
        job.phase_commits += 1
        agg = job.aggs[account]
        agg.commit_attempt, agg.ballot, agg.settled = job.attempt, ballot, True

    def _result_ok(self, job: JobModel, ballot: Ballot) -> bool:
        """`_check_result`: a model, joined trainers only, min_trainers, a total in range."""
        count = bin(ballot.included).count("1")
        if ballot.included >> len(job.trainers) or count < job.min_trainers:
            return False
        if job.weight_cap == 0:
            return ballot.total == count
        return count <= ballot.total <= count * job.weight_cap

    def _reveal(self, job_id: int, account: str, round_: int, tamper: bool) -> None:
        """A member reveals what it committed (or, with ``tamper``, another salt). The reveal
        that brings its result to the quorum finalizes the round, and then reverts as a whole
        unless every included trainer committed this round."""
        job = self._open_round(job_id, round_)
        agg = job.aggs.get(account) if job else None
        ballot = agg.ballot if agg and agg.ballot else Ballot(
            h(f"no ballot {account}"), 1, 1, h("salt"))
        if tamper:
            ballot = Ballot(ballot.model, ballot.included, ballot.total, h("another salt"))
        expected = finalizes = False
        if job is not None and agg is not None and job.in_good_standing(account):
            expected = (
                agg.commit_attempt == job.attempt and agg.reveal_attempt != job.attempt
                and job.reveals_open(self._now()) and agg.ballot == ballot
                and self._result_ok(job, ballot)
            )
            finalizes = expected and job.vote_counts[ballot.key] + 1 == job.quorum
            if finalizes:
                commits = job.commits()
                expected = all(
                    i in commits for i in range(len(job.trainers)) if ballot.included >> i & 1
                )
                if not expected:
                    self.scenarios["quorum reveal naming a trainer that did not commit"] += 1
        self._call(account, expected, self.jobs.reveal, job_id, round_, ballot.model,
                   words(ballot.included), ballot.total, ballot.salt)
        if not expected and job is not None and agg is not None:
            job.stuck.add((job.attempt, account))
        if not expected or job is None or agg is None:
            return
        agg.reveal_round, agg.reveal_attempt, agg.reveal = round_, job.attempt, ballot
        agg.settled = False
        job.vote_counts[ballot.key] += 1
        if finalizes:
            self._finalize(job, round_, ballot)
            self._check_finalized_votes(job_id, job, round_)
        state = self.jobs.jobs(job_id)  # final exactly when this reveal reached the quorum
        assert (state.current_round, state.status, state.attempt) == (
            job.round, job.status, job.attempt)

    def _finalize(self, job: JobModel, round_: int, ballot: Ballot) -> None:
        commits = job.commits()
        winners = frozenset(
            a for a, agg in job.aggs.items()
            if agg.reveal_attempt == job.attempt and agg.reveal is not None
            and agg.reveal.key == ballot.key
        )
        assert len(winners) == job.quorum
        weights = {i: commits[i] for i in commits if ballot.included >> i & 1}
        job.results[round_] = Result(ballot, job.attempt, weights, winners)
        job.round += 1
        job.attempt += 1
        job.reopens = 0
        job.round_start = self._now()
        job.vote_counts = Counter()
        if job.round == job.rounds:
            job.status = FINISHED
            job.ended_at = self._now()

    def _check_finalized_votes(self, job_id: int, job: JobModel, round_: int) -> None:
        """Right after a finalization, what the chain says of each member's vote in the
        finalizing attempt: paid, provably wrong (the same included set, another result),
        or neither (another included set, or a commitment never revealed)."""
        result = job.results[round_]
        for account in job.committee:
            agg = job.aggs[account]
            if agg.commit_attempt != result.attempt:
                continue
            revealed = agg.reveal_attempt == result.attempt and agg.reveal is not None
            if not revealed:
                what = "withheld reveal in a finalizing attempt"
            elif agg.reveal.key == result.ballot.key:
                what = "reveal of the finalized result"
            elif agg.reveal.included == result.ballot.included:
                what = "reveal of another result for the finalized set"
            else:
                what = "reveal of another included set"
            self.scenarios[what] += 1
            wrong = what == "reveal of another result for the finalized set"
            assert self.jobs.provably_wrong(job_id, account) == wrong == job.provably_wrong(
                account), (what, account)

    def _claim(self, job_id: int, account: str, round_: int, ballot: Ballot) -> None:
        job = self.model.get(job_id)
        amount, what = 0, "claim by a non-trainer or after the claims closed"
        if job is not None and job.claims_open(self._now()) and account in job.trainers:
            amount, what = job.why_trainer_claim(job.trainers.index(account), round_, ballot)
        self.scenarios[what] += 1
        self._call(account, amount > 0, self.jobs.claim, job_id, round_, ballot.model,
                   words(ballot.included), ballot.total)
        if amount > 0 and job is not None:
            job.slots[job.trainers.index(account)][round_ % 2][2] = True
            if job.weight_cap:
                job.trainer_paid[round_] += amount
            self._credit(job, account, amount)

    def _claim_vote(self, job_id: int, account: str, round_: int) -> None:
        job = self.model.get(job_id)
        amount = 0
        if job is not None and job.claims_open(self._now()):
            amount = job.member_claim(account, round_)
        self._call(account, amount > 0, self.jobs.claim_vote, job_id, round_)
        if amount > 0 and job is not None:
            job.aggs[account].settled = True
            self._credit(job, account, amount)

    def _slash_wrong(self, job_id: int, job: JobModel, account: str) -> int:
        """Slash a provably wrong vote: the slash amount, capped at the lock, to the owner;
        a member the slash took stake from leaves the committee's later votes."""
        job.aggs[account].settled = True
        before = job.locks[account]
        taken = self._slash(job, account, SLASH_AMOUNT)
        self.slashes.append((job_id, account, before, taken))
        if taken > 0 and job.in_good_standing(account):
            job.removed.add(account)
        return taken

    def _challenge(self, job_id: int, caller: str, account: str) -> None:
        job = self.model.get(job_id)
        expected = job is not None and job.provably_wrong(account)
        before = self.registry.lock_of(self.jobs.address, job_id, account)
        computation = self._call(caller, expected, self.jobs.challenge, job_id, account)
        if computation is None or job is None:
            return
        taken = self._slash_wrong(job_id, job, account)
        after = self.registry.lock_of(self.jobs.address, job_id, account)
        assert before - after == taken <= SLASH_AMOUNT
        (slashed,) = [e for e in self.jobs.get_logs(computation)
                      if type(e).__name__ == "AggregatorSlashed"]
        assert (str(slashed.aggregator), slashed.amount) == (account, taken)
        assert self.jobs.is_aggregator(job_id, account) == job.in_good_standing(account)
        assert self.jobs.voters(job_id) == job.voters

    def _reopen(self, job_id: int) -> None:
        job = self.model.get(job_id)
        expected = (
            job is not None and job.status == OPEN and job.sealed
            and job.attempt_over(self._now()) and job.reopens < MAX_REOPENS
        )
        self._call(self.owners[1], expected, self.jobs.reopen, job_id)
        if expected and job is not None:
            job.round_start = self._now()
            job.attempt += 1
            job.reopens += 1
            job.vote_counts = Counter()

    def _evict(self, job_id: int, index: int) -> None:
        job = self.model.get(job_id)
        expected = (
            job is not None and job.status == OPEN and index < len(job.trainers)
            and index not in job.evicted
            and job.round >= job.since(index) + MISSED_ROUNDS_ALLOWED
        )
        trainer = job.trainers[index] if job and index < len(job.trainers) else self.nodes[0]
        before = self.registry_storage.get("lock_of", self.jobs.address, job_id, trainer)
        computation = self._call(self.owners[0], expected, self.jobs.evict, job_id, index)
        if computation is not None and job is not None:
            job.evicted.add(index)
            taken = self._slash(job, trainer, job.trainer_stake) if job.trainer_stake else 0
            after = self.registry_storage.get("lock_of", self.jobs.address, job_id, trainer)
            assert before - after == taken <= job.trainer_stake
            (evicted,) = [e for e in self.jobs.get_logs(computation)
                          if type(e).__name__ == "TrainerEvicted"]
            assert (str(evicted.trainer), evicted.slashed) == (trainer, taken)

    def _cancel(self, job_id: int, sender: str) -> None:
        job = self.model.get(job_id)
        expected = job is not None and job.owner == sender and job.status == OPEN
        if expected and job is not None:
            if job.sealed:
                expected = job.attempt_over(self._now()) and job.reopens == MAX_REOPENS
            else:
                expected = (
                    self._now() > job.signup_end and len(job.volunteers) < job.committee_size
                )
        self._call(sender, expected, self.jobs.cancel, job_id)
        if expected and job is not None:
            job.status = CANCELLED
            job.ended_at = self._now()

    def _refund(self, job_id: int, sender: str) -> None:
        job = self.model.get(job_id)
        amount = 0
        if job is not None and job.owner == sender and job.status in (FINISHED, CANCELLED):
            amount = job.escrow
            if self._now() < job.ended_at + CHALLENGE_WINDOW:
                amount -= job.reserved()
        self._call(sender, amount > 0, self.jobs.refund, job_id)
        if amount > 0 and job is not None:
            job.refunded += amount
            self.owed[sender] += amount

    def _release(self, job_id: int, account: str) -> None:
        job = self.model.get(job_id)
        expected = (
            job is not None and job.status in (FINISHED, CANCELLED)
            and self._now() >= job.ended_at + CHALLENGE_WINDOW
            and (account in job.trainers or account in job.members or account in job.volunteers)
            and account not in job.released
        )
        computation = self._call(account, expected, self.jobs.release, job_id)
        if computation is not None and job is not None:
            job.released.add(account)
            # an unchallenged provably wrong vote is slashed first, then the rest unlocked
            wrong = job.provably_wrong(account)
            taken = self._slash_wrong(job_id, job, account) if wrong else 0
            slashed = [e.amount for e in self.jobs.get_logs(computation)
                       if type(e).__name__ == "AggregatorSlashed"]
            assert slashed == ([taken] if wrong else [])
            released = [e.amount for e in self.jobs.get_logs(computation)
                        if type(e).__name__ == "StakeReleased"]
            assert released == [self._unlock(job, account)]

    def _withdraw(self, account: str) -> None:
        amount = self.owed[account]
        self._call(account, amount > 0, self.jobs.withdraw)
        self.paid_out[account] += amount
        self.owed[account] = 0

    # --- rules -----------------------------------------------------------------------------

    @precondition(lambda self: len(self.model) < MAX_JOBS)
    @rule(
        owner=st.integers(0, N_OWNERS - 1),
        rounds=st.integers(1, 6),
        reward=st.integers(1, 10 * ETHER),
        min_trainers=st.integers(1, 3),
        extra_trainers=st.integers(0, 3),
        named=st.booleans(),
        first=st.integers(0, N_NODES - 1),
        committee_size=st.integers(1, 4),
        quorum_pick=st.integers(0, 3),
        round_deadline=st.sampled_from(DEADLINES),
        stakes=st.tuples(st.sampled_from(STAKES), st.sampled_from(STAKES)),
        weight_cap=st.sampled_from(CAPS),
        fault=st.sampled_from(CREATE_FAULTS),
        doomed=st.sampled_from((False, False, False, True)),
    )
    def create_job(
        self, owner: int, rounds: int, reward: int, min_trainers: int, extra_trainers: int,
        named: bool, first: int, committee_size: int, quorum_pick: int, round_deadline: int,
        stakes: tuple[int, int], weight_cap: int, fault: str | None, doomed: bool,
    ) -> None:
        committee = (
            [self.nodes[(first + k) % N_NODES] for k in range(committee_size)] if named else []
        )
        if fault == "duplicate" and committee:
            committee.append(committee[0])  # a member named twice
            committee_size = len(committee)
        lowest = 1 if named else committee_size // 2 + 1  # a strict majority for open ones
        quorum = lowest + quorum_pick % (committee_size - lowest + 1)
        args = (
            0 if fault == "rounds" else rounds,
            reward,
            0 if fault == "min_trainers" else min_trainers,
            min_trainers + extra_trainers,
            (lowest - 1 if fault == "quorum" else quorum),
            2_592_001 if fault == "deadline" else round_deadline,
        )
        value = args[0] * reward - (1 if fault == "underpay" else 0)
        cap = 2**64 if fault == "weight_cap" else weight_cap
        self._create(self.owners[owner], args, committee, committee_size, *stakes, cap,
                     value, expected=fault is None or (fault == "duplicate" and not named))
        if self.next_job_id - 1 in self.model:
            self.model[self.next_job_id - 1].doomed = doomed

    @rule(job_pick=job_picks, who=st.integers(0, N_NODES - 1),
          role=st.sampled_from((TRAINER, TRAINER, AGGREGATOR, 3)))
    def join(self, job_pick: int, who: int, role: int) -> None:
        self._join(self._job_id(job_pick), self.nodes[who], role)

    @rule(job_pick=job_picks)
    def seal(self, job_pick: int) -> None:
        self._seal(self._job_id(job_pick))

    @rule(job_pick=job_picks, who=st.integers(0, N_NODES - 1), insider=st.booleans(),
          round_offset=st.sampled_from((0, 0, 0, 1, -1)),
          weight=st.sampled_from(("one", "small", "cap", "over", "zero")))
    def commit_update(
        self, job_pick: int, who: int, insider: bool, round_offset: int, weight: str
    ) -> None:
        job_id = self._job_id(job_pick)
        job = self.model.get(job_id)
        cap = job.weight_cap if job else 0
        value = {"one": 1, "small": 1 + who % 5, "cap": max(cap, 1), "over": max(cap, 1) + 1,
                 "zero": 0}[weight]
        if job is None:
            self._commit(job_id, self.nodes[who], max(round_offset, 0), value)
            return
        pending = [job.trainers[i] for i in job.active if i not in job.commits()]
        account = self._pick(pending or job.trainers, who, insider)
        self._commit(job_id, account, max(job.round + round_offset, 0), value)

    @rule(job_pick=job_picks, who=st.integers(0, N_NODES - 1), insider=st.booleans(),
          kind=st.sampled_from(BALLOTS), round_offset=st.sampled_from((0, 0, 0, 1)))
    def commit_vote(
        self, job_pick: int, who: int, insider: bool, kind: str, round_offset: int
    ) -> None:
        job_id = self._job_id(job_pick)
        job = self.model.get(job_id)
        insiders = sorted(job.members) if job else []
        account = self._pick(insiders, who, insider)
        self._commit_vote(job_id, account, (job.round if job else 0) + round_offset, kind)

    @rule(job_pick=job_picks, who=st.integers(0, N_NODES - 1), insider=st.booleans(),
          tamper=st.sampled_from((False, False, False, True)))
    def reveal(self, job_pick: int, who: int, insider: bool, tamper: bool) -> None:
        job_id = self._job_id(job_pick)
        job = self.model.get(job_id)
        insiders = sorted(
            a for a, g in job.aggs.items() if g.commit_attempt == job.attempt
        ) if job else []
        account = self._pick(insiders, who, insider)
        self._reveal(job_id, account, job.round if job else 0, tamper)

    @rule(job_pick=job_picks, who=st.integers(0, N_NODES - 1), insider=st.booleans(),
          back=st.sampled_from((1, 1, 2, 3, 0, 9)),
          forge=st.sampled_from(("none", "none", "add_self", "total")))
    def claim(self, job_pick: int, who: int, insider: bool, back: int, forge: str) -> None:
        """A trainer claims a round: ``back`` rounds ago (0: the current, not final yet; 9:
        out of the ring), with the round's result or a forged one (naming itself too, or
        another total)."""
        job_id = self._ended_job_id(job_pick) if who % 3 == 0 else self._job_id(job_pick)
        job = self.model.get(job_id)
        account = self._pick(job.trainers if job else [], who, insider)
        round_ = max((job.round if job else 0) - back, 0)
        result = job.results.get(round_) if job else None
        ballot = result.ballot if result else Ballot(h("never final"), 1, 1, b"")
        if forge == "add_self" and job and account in job.trainers:
            included = ballot.included | 1 << job.trainers.index(account)
            ballot = Ballot(ballot.model, included, ballot.total + 1, b"")
        elif forge == "total":
            ballot = Ballot(ballot.model, ballot.included, max(ballot.total - 1, 1), b"")
        self._claim(job_id, account, round_, ballot)

    @rule(job_pick=job_picks, who=st.integers(0, N_NODES - 1), insider=st.booleans(),
          back=st.sampled_from((1, 1, 2, 0, 9)))
    def claim_vote(self, job_pick: int, who: int, insider: bool, back: int) -> None:
        job_id = self._ended_job_id(job_pick) if who % 3 == 0 else self._job_id(job_pick)
        job = self.model.get(job_id)
        account = self._pick(job.committee if job else [], who, insider)
        self._claim_vote(job_id, account, max((job.round if job else 0) - back, 0))

    @rule(job_pick=job_picks, who=st.integers(0, N_NODES - 1), insider=st.booleans())
    def challenge(self, job_pick: int, who: int, insider: bool) -> None:
        job_id = self._job_id(job_pick)
        job = self.model.get(job_id)
        account = self._pick(job.committee if job else [], who, insider)
        self._challenge(job_id, self.owners[who % N_OWNERS], account)

    @rule(job_pick=job_picks, who=st.integers(0, N_NODES - 1), actions=st.integers(1, 25),
          weight=st.integers(1, 5))
    def progress(self, job_pick: int, who: int, actions: int, weight: int) -> None:
        """Drive an open job forward by a few useful actions (join, seal, commit, the vote's
        commits and reveals, claims, challenges; reopen or cancel a dead round; after the
        end, refund, release and withdraw)."""
        job_id = self._job_id(job_pick)
        for action in range(actions):
            self._next_action(job_id, who + action, weight)

    @rule(job_pick=job_picks, who=st.integers(0, N_NODES - 1), weight=st.integers(1, 5))
    def progress_round(self, job_pick: int, who: int, weight: int) -> None:
        """The driver, until the job's round finalizes or the job ends (at most 60 actions)."""
        job_id = self._job_id(job_pick)
        job = self.model.get(job_id)
        for action in range(60):
            if job is None or job.status != OPEN:
                break
            round_ = job.round
            self._next_action(job_id, who + action, weight)
            if job.round != round_:
                break

    @rule(job_pick=job_picks, who=st.integers(0, N_NODES - 1), weight=st.integers(1, 5))
    def progress_to_the_end(self, job_pick: int, who: int, weight: int) -> None:
        """The driver, until the job ended and everyone released and withdrew (at most 150
        actions), so jobs reach their end within a run."""
        job_id = self._job_id(job_pick)
        job = self.model.get(job_id)
        for action in range(150):
            if job is None or (job.status != OPEN and job.escrow == 0 and not {
                    *job.trainers, *job.members, *job.volunteers} - job.released):
                break
            self._next_action(job_id, who + action, weight)

    def _next_action(self, job_id: int, who: int, weight: int) -> None:
        job = self.model.get(job_id)
        if job is None:
            return
        now = self._now()
        if job.status != OPEN:
            self._wind_down(job_id, job, who)
            return
        eligible = [n for n in self.nodes if self.stake[n] >= MIN_STAKE]
        newcomers = [n for n in eligible if n not in job.trainers]
        commits = job.commits()
        # job 1's trainer 2 squats: it joined and never commits, so it gets evicted
        pending = [
            job.trainers[i] for i in job.active if i not in commits and (job_id, i) != (1, 2)
        ]
        unjoined = [m for m in job.committee if m not in job.members] if job.named else []
        volunteers = [
            n for n in eligible if n not in job.volunteers and self.roles[n] & AGGREGATOR
        ]
        wrong = [a for a in job.aggs if job.provably_wrong(a)]
        claims = self._claimable(job)
        if unjoined and who % 4:
            self._join(job_id, unjoined[who % len(unjoined)], AGGREGATOR)
        elif not job.sealed:
            if now <= job.signup_end and volunteers and not job.doomed and (
                len(job.volunteers) < job.committee_size or who % 2
            ):
                self._join(job_id, volunteers[who % len(volunteers)], AGGREGATOR)
            elif newcomers and len(job.trainers) < job.min_trainers:
                self._join(job_id, newcomers[who % len(newcomers)], TRAINER)
            elif len(job.volunteers) < job.committee_size and now > job.signup_end:
                self._cancel(job_id, job.owner)  # nobody can ever seal it
            else:
                self._travel_to(job.signup_end + 1)  # wait for the signup to end
                self._seal(job_id)
        elif wrong and who % 3:
            self._challenge(job_id, self.owners[who % N_OWNERS], wrong[0])
        elif job.results and who % 9 == 0:
            self._hostile_claim(job_id, job, who // 9)
        elif claims and who % 5 != 4:
            self._claim_one(job_id, job, claims[who % len(claims)])
        elif evictable := [
            i for i in job.active if job.round >= job.since(i) + MISSED_ROUNDS_ALLOWED
        ]:
            self._evict(job_id, evictable[0])
        elif newcomers and len(job.active) < min(job.max_trainers, job.min_trainers + 2):
            self._join(job_id, newcomers[who % len(newcomers)], TRAINER)
        elif job.doomed and len(commits) < job.min_trainers:
            self._revive(job_id)  # nobody commits: reopened 3 times, then cancelled
        elif pending and now <= job.deadline() and job.phase_attempt != job.attempt:
            if who % 6 == 5 and commits:  # the others miss this round: let it pass
                self._travel_to(job.deadline() + 1)
            else:
                cap = job.weight_cap
                self._commit(job_id, pending[who % len(pending)], job.round,
                             1 if cap == 0 else min(weight * (who % 3 + 1), cap))
        elif len(commits) < job.min_trainers:
            self._revive(job_id)
        else:
            self._vote_step(job_id, job, who)

    def _claimable(self, job: JobModel) -> list[tuple[str, int, int]]:
        """The claims that would succeed now: (kind, trainer index or member, round)."""
        if not job.claims_open(self._now()):
            return []
        out: list[tuple[str, Any, int]] = []
        for round_ in range(max(job.round - RESULT_RING, 0), job.round):
            result = job.results[round_]
            for index in result.weights:
                if job.trainer_claim(index, round_, result.ballot):
                    out.append(("trainer", index, round_))
            for member in sorted(result.winners):
                if job.member_claim(member, round_):
                    out.append(("member", member, round_))
        return out

    def _hostile_claim(self, job_id: int, job: JobModel, who: int) -> None:
        """A claim of the latest finalized round that must fail: by a trainer it did not
        include, with the result forged to name it, or a second claim of a paid share."""
        round_ = max(job.results)
        ballot = job.results[round_].ballot
        outsiders = [i for i in range(len(job.trainers)) if not ballot.included >> i & 1]
        claimed = [
            i for i in range(len(job.trainers))
            if job.slots[i][round_ % 2][0] == round_ and job.slots[i][round_ % 2][2]
        ]
        if who % 3 == 0 and outsiders:
            self._claim(job_id, job.trainers[outsiders[who % len(outsiders)]], round_, ballot)
        elif who % 3 == 1 and outsiders:
            index = outsiders[who % len(outsiders)]
            forged = Ballot(ballot.model, ballot.included | 1 << index, ballot.total + 1, b"")
            self._claim(job_id, job.trainers[index], round_, forged)
        elif who % 3 == 2 and claimed:
            self._claim(job_id, job.trainers[claimed[who % len(claimed)]], round_, ballot)
        else:  # a share of an older round, its commit overwritten since
            for old in range(max(job.round - RESULT_RING, 0), job.round):
                result = job.results[old]
                for index in result.weights:
                    if job.slots[index][old % 2][0] != old:
                        self._claim(job_id, job.trainers[index], old, result.ballot)
                        return

    def _claim_one(self, job_id: int, job: JobModel, claim: tuple[str, Any, int]) -> None:
        kind, who, round_ = claim
        if kind == "trainer":
            self._claim(job_id, job.trainers[who], round_, job.results[round_].ballot)
        else:
            self._claim_vote(job_id, who, round_)

    def _vote_step(self, job_id: int, job: JobModel, who: int) -> None:
        """One step of the current attempt's vote: commit, wait, reveal, or give up."""
        now = self._now()
        if len(job.commits()) < len(job.active) and now <= job.deadline():
            # a squatter holds the round up: the committee waits for the deadline
            self._travel_to(job.deadline() + 1)
            now = self._now()
        plan = job.plans.setdefault(job.attempt, PLANS[who % len(PLANS)])
        standing = [a for a in job.committee if job.in_good_standing(a)]
        to_commit = [a for a in standing if job.aggs[a].commit_attempt != job.attempt]
        to_reveal = [
            a for a in standing
            if job.aggs[a].commit_attempt == job.attempt and job.aggs[a].ballot is not None
            and job.aggs[a].reveal_attempt != job.attempt and (job.attempt, a) not in job.stuck
        ]
        phase = job.phase_attempt == job.attempt
        if phase and job.reveals_open(now):
            if not to_reveal:
                self._revive(job_id)
                return
            # the dishonest reveal first, so they are in the finalizing attempt
            to_reveal.sort(key=lambda a: job.aggs[a].ballot != self._ballot(
                job_id, job, a, "honest"), reverse=True)
            self._reveal(job_id, to_reveal[0], job.round, tamper=False)
        elif to_commit and (not phase or now <= job.phase_time + job.round_deadline):
            spare = len(to_commit) > job.quorum
            if plan == "late" and phase and len(to_commit) == 1 and len(standing) > job.quorum:
                # the last member is late: it commits after the period, and is refused
                self._travel_to(job.phase_time + job.round_deadline + 1)
                self._commit_vote(job_id, to_commit[0], job.round, "honest")
                return
            kind = "honest"
            if plan == "uncommitted":
                kind = "uncommitted"
            elif plan in ("wrong", "partial", "withhold", "wrong_total") and spare and (
                    job.attempt not in job.rogues):
                kind = plan  # one voter of the attempt; the others can still reach the quorum
                job.rogues.add(job.attempt)
            self._commit_vote(job_id, to_commit[who % len(to_commit)], job.round, kind)
        elif phase:
            self._travel_to(job.phase_time + job.round_deadline + 1)
        else:
            self._revive(job_id)

    def _wind_down(self, job_id: int, job: JobModel, who: int) -> None:
        """After a job ended: claims, the owner's refunds, then the participants' releases
        once the challenge window passed, then withdrawals."""
        holders = sorted({*job.trainers, *job.members, *job.volunteers} - job.released)
        owed = [a for a in self.accounts if self.owed[a] > 0]
        claims = self._claimable(job)
        wrong = [a for a in job.aggs if job.provably_wrong(a) and a not in job.released]
        refundable = job.escrow - (
            job.reserved() if self._now() < job.ended_at + CHALLENGE_WINDOW else 0)
        if claims and who % 4:
            self._claim_one(job_id, job, claims[who % len(claims)])
        elif wrong and who % 2:
            self._challenge(job_id, self.owners[who % N_OWNERS], wrong[0])
        elif refundable > 0:
            self._refund(job_id, job.owner)
        elif holders or job.escrow > 0:
            self._travel_to(job.ended_at + CHALLENGE_WINDOW)
            if job.escrow > 0:
                self._refund(job_id, job.owner)
            else:
                self._release(job_id, holders[who % len(holders)])
        elif owed:
            self._withdraw(owed[who % len(owed)])

    def _revive(self, job_id: int) -> None:
        """A round that cannot finalize: wait until its attempt is over, then reopen it, or
        once the reopens are used up, cancel the job."""
        job = self.model[job_id]
        self._travel_to(job.attempt_over_at())
        if job.reopens < MAX_REOPENS:
            self._reopen(job_id)
        else:
            self._cancel(job_id, job.owner)

    @rule(job_pick=job_picks)
    def reopen(self, job_pick: int) -> None:
        self._reopen(self._job_id(job_pick))

    @rule(job_pick=job_picks, index=st.integers(0, 4))
    def evict(self, job_pick: int, index: int) -> None:
        self._evict(self._job_id(job_pick), index)

    @rule(job_pick=job_picks, caller=st.integers(0, N_OWNERS - 1))
    def cancel(self, job_pick: int, caller: int) -> None:
        self._cancel(self._job_id(job_pick), self.owners[caller])

    @rule(job_pick=job_picks, caller=st.integers(0, N_OWNERS - 1))
    def refund(self, job_pick: int, caller: int) -> None:
        self._refund(self._ended_job_id(job_pick), self.owners[caller])

    @rule(job_pick=job_picks, who=st.integers(0, N_NODES - 1))
    def release(self, job_pick: int, who: int) -> None:
        self._release(self._ended_job_id(job_pick), self.nodes[who])

    @rule(who=st.integers(0, N_NODES + N_OWNERS - 1))
    def withdraw(self, who: int) -> None:
        self._withdraw(self.accounts[who])

    @rule(who=st.integers(0, N_NODES + N_OWNERS - 1))
    def withdraw_slash_proceeds(self, who: int) -> None:
        account = self.accounts[who]
        amount = self.slash_owed[account]
        self._call(account, amount > 0, self.registry.withdraw, to=self.registry)
        self.paid_out[account] += amount
        self.slash_owed[account] = 0

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

    @rule(who=st.integers(0, N_NODES + N_OWNERS - 1),
          share=st.sampled_from(("zero", "one wei", "half", "free", "free + 1", "all")))
    def request_unbond(self, who: int, share: str) -> None:
        """Unbond some stake; locked stake never unbonds ("free + 1" and often "all" fail)."""
        account = self.accounts[who]
        stake = self.stake.get(account, 0)
        free = stake - self.locked[account]
        amount = {"zero": 0, "one wei": 1, "half": free // 2, "free": free,
                  "free + 1": free + 1, "all": stake}[share]
        expected = account in self.nodes and 0 < amount <= free
        self._call(account, expected, self.registry.request_unbond, amount, to=self.registry)
        if expected:
            self.stake[account] -= amount
            self.unbonding[account] += amount
            self.unbond_at[account] = self._now() + UNBOND_DELAY

    @rule(who=st.integers(0, N_NODES + N_OWNERS - 1))
    def withdraw_unbonded(self, who: int) -> None:
        account = self.accounts[who]
        amount = self.unbonding[account]
        expected = amount > 0 and self._now() >= self.unbond_at[account]
        self._call(account, expected, self.registry.withdraw_unbonded, to=self.registry)
        if expected:
            self.paid_out[account] += amount
            self.unbonding[account] = 0

    @rule(seconds=st.sampled_from((1, 30, 120, 250, 301, 601, CHALLENGE_WINDOW, UNBOND_DELAY)),
          randao=st.integers(0, 2**32))
    def advance_time(self, seconds: int, randao: int) -> None:
        boa.env.time_travel(seconds=seconds)
        boa.env.evm.patch.prevrandao = randao.to_bytes(32, "big")

    @precondition(lambda self: bool(self.model))
    @rule(job_pick=job_picks)
    def check_views(self, job_pick: int) -> None:
        job_id = self._job_id(job_pick)
        job = self.model.get(job_id)
        if job is None:
            return
        now = self._now()
        state = self.jobs.jobs(job_id)
        assert (state.status, state.current_round) == (job.status, job.round)
        assert (state.attempt, state.reopens, state.escrow, state.paid) == (
            job.attempt, job.reopens, job.escrow, job.credited)
        assert self.jobs.ended_at(job_id) == job.ended_at
        assert self.jobs.reserved(job_id) == job.reserved()
        assert (state.n_trainers, state.n_active_trainers) == (len(job.trainers), len(job.active))
        assert (state.sealed, state.n_volunteers) == (job.sealed, len(job.volunteers))
        assert self.jobs.voters(job_id) == job.voters
        assert self.jobs.reveals_open(job_id) == job.reveals_open(now)
        commits = job.commits()
        for index, trainer in enumerate(job.trainers):
            weight = commits.get(index, 0)
            assert self.jobs.commit_of(job_id, job.round, trainer)[1] == weight
            assert self.jobs.is_trainer_active(job_id, trainer) == (index not in job.evicted)
        self._check_credits([job.owner, *job.trainers[:2]])
        self._check_stakes(job.trainers[:2])
        for round_ in range(max(job.round - 2, 0), job.round):
            assert self.jobs.round_result(job_id, round_) == (
                job.results[round_].ballot.key[:14], job.results[round_].attempt)
        for account in {*job.committee, *job.volunteers[:2], self.nodes[0]}:
            assert self.jobs.is_aggregator(job_id, account) == job.in_good_standing(account)
            assert self.jobs.provably_wrong(job_id, account) == job.provably_wrong(account)
            agg = job.aggs.get(account)
            committed = agg is not None and agg.commit_attempt == job.attempt
            assert self.jobs.vote_committed(job_id, account) == committed

    # --- invariants ------------------------------------------------------------------------

    # The invariants read the contracts' storage (see Storage): every step checks every
    # account, node, job and lock.

    @invariant()
    def balance_is_escrow_plus_owed(self) -> None:
        """Jobs holds its total escrow + total owed; that total escrow is the sum of the jobs'
        escrows, the total owed the sum of the accounts' credits, both as the model has them."""
        balance = boa.env.get_balance(self.jobs.address)
        storage = self.jobs_storage
        total_escrow, total_owed = storage.get("total_escrow"), storage.get("total_owed")
        assert balance == total_escrow + total_owed
        escrows = [storage.get("jobs", job_id, field=Storage.JOB_ESCROW) for job_id in self.model]
        assert total_escrow == sum(escrows) == sum(j.escrow for j in self.model.values())
        assert total_owed == sum(self.owed.values())

    @invariant()
    def credits_and_refunds_add_up_to_the_deposit(self) -> None:
        """Per job: escrow held + credited + refunded == deposited, and the chain's escrow and
        claimed sum are the model's; once the escrow is empty, credits + refunds == deposit."""
        events: Counter[int] = Counter()
        for job_id, _, _, amount in self.credits:
            events[job_id] += amount
        storage = self.jobs_storage
        for job_id, job in self.model.items():
            escrow = storage.get("jobs", job_id, field=Storage.JOB_ESCROW)
            paid = storage.get("jobs", job_id, field=Storage.JOB_PAID)
            assert (escrow, paid, events[job_id]) == (job.escrow, job.credited, job.credited)
            assert escrow + paid + job.refunded == job.deposited == job.rounds * job.reward

    @invariant()
    def nobody_is_credited_for_a_round_it_was_not_included_in(self) -> None:
        """Every Credited event, as the chain emitted it, names a finalized round of its job and
        a trainer included in it that committed in it, or a member that revealed its result
        in the finalizing attempt; with that role's share, once."""
        seen = Counter((j, r, a) for j, r, a, _ in self.credits[: self.checked_credits])
        for job_id, round_, account, amount in self.credits[self.checked_credits:]:
            job = self.model[job_id]
            result = job.results.get(round_)
            assert result is not None and round_ < job.round, (job_id, round_, account)
            trainer = [
                i for i, t in enumerate(job.trainers) if t == account and i in result.weights
            ]
            shares = [job.member_share] if account in result.winners else []
            if trainer:
                shares.append(job.trainer_pool * result.weights[trainer[0]] // result.ballot.total)
            assert amount in shares, (job_id, round_, account, amount, shares)
            seen[job_id, round_, account] += 1  # once as a trainer, once as a member at most
            assert seen[job_id, round_, account] <= len(shares), (job_id, round_, account)
        self.checked_credits = len(self.credits)

    @invariant()
    def a_slash_takes_at_most_the_slash_amount_from_the_lock(self) -> None:
        for _, _, before, taken in self.slashes:
            assert 0 <= taken <= min(SLASH_AMOUNT, before)

    @invariant()
    def registry_holds_stakes_unbonding_and_slash_proceeds(self) -> None:
        held = sum(self.stake.values()) + sum(self.unbonding.values())
        assert boa.env.get_balance(self.registry.address) == held + sum(self.slash_owed.values())

    @invariant()
    def stakes_locks_and_credits_match_the_model(self) -> None:
        registry, jobs = self.registry_storage, self.jobs_storage
        for node in self.nodes:
            assert (
                registry.get("nodes", node, field=Storage.NODE_STAKE),
                registry.get("nodes", node, field=Storage.NODE_UNBONDING),
                registry.get("locked", node),
            ) == (self.stake[node], self.unbonding[node], self.locked[node]), node
            for job_id, job in self.model.items():
                lock = registry.get("lock_of", self.jobs.address, job_id, node)
                assert lock == job.locks[node], (job_id, node)
        for account in self.accounts:
            assert jobs.get("owed", account) == self.owed[account], account
            assert registry.get("owed", account) == self.slash_owed[account], account
        assert self.jobs.address not in self.accounts
        for node in self.nodes:
            assert self.locked[node] == sum(j.locks[node] for j in self.model.values())
            assert self.locked[node] <= self.stake[node]

    @invariant()
    def every_account_received_exactly_what_it_was_paid_out(self) -> None:
        for account in self.accounts:
            expected = self.start_balance[account] - self.paid_in[account]
            assert boa.env.get_balance(account) == expected + self.paid_out[account], account

    @invariant()
    def finalized_results_never_change(self) -> None:
        """The result words of the last 8 finalized rounds: round + 1, the result key's high
        112 bits, the high 80 bits of the included set's hash, attempt + 1."""
        for job_id, job in self.model.items():
            for round_ in range(max(job.round - RESULT_RING, 0), job.round):
                result = job.results[round_]
                included = keccak(abi_encode(["uint256[4]"], [words(result.ballot.included)]))
                assert self.jobs_storage.get("_results", job_id, round_ % RESULT_RING) == (
                    (round_ + 1) << 224 | int.from_bytes(result.ballot.key[:14], "big") << 112
                    | int.from_bytes(included[:10], "big") << 32 | result.attempt + 1)


class CountingMachine(JobsMachine):
    """The machine, counting the rule steps it ran: hypothesis checks the invariants once
    when a run starts and again after every step."""

    steps = 0
    totals: ClassVar[Counter[str]] = Counter()

    def __init__(self) -> None:
        super().__init__()
        type(self).steps -= 1  # this run's first invariant check follows no step

    def check_invariants(self, *args: Any, **kwargs: Any) -> None:
        type(self).steps += 1
        super().check_invariants(*args, **kwargs)

    def teardown(self) -> None:
        totals = type(self).totals
        totals["finalized rounds"] += sum(j.round for j in self.model.values())
        totals["slashes taking stake"] += sum(taken > 0 for *_, taken in self.slashes)
        totals["finished jobs"] += sum(j.status == FINISHED for j in self.model.values())
        totals["cancelled jobs"] += sum(j.status == CANCELLED for j in self.model.values())
        totals.update(self.calls)
        totals.update(self.scenarios)
        super().teardown()


# Each must have happened in a run, or the machine did not test what it says it does.
FUNCTIONS = (
    "create_job", "join", "seal", "commit_update", "commit_vote", "reveal", "claim",
    "claim_vote", "challenge", "reopen", "evict", "cancel", "refund", "release", "withdraw",
)
SCENARIOS = (
    "reveal of the finalized result", "reveal of another result for the finalized set",
    "reveal of another included set", "withheld reveal in a finalizing attempt",
    "vote commit that will never be revealed", "vote commit after the commit period",
    "quorum reveal naming a trainer that did not commit", "claim by an included trainer",
    "claim by a trainer not included", "claim with a forged result", "double claim",
    "claim of a round not final or out of the ring", "claim after its commit was overwritten",
    "finished jobs", "cancelled jobs", "slashes taking stake",
)


def _run(profile: str, minimum: int) -> None:
    CountingMachine.world = World.build()
    CountingMachine.steps = 0
    CountingMachine.totals = Counter()
    CountingMachine.TestCase.settings = settings.get_profile(profile)
    CountingMachine.TestCase().runTest()
    totals = CountingMachine.totals
    print(f"{CountingMachine.steps:,} stateful steps of Jobs and Registry")
    for name, count in sorted(totals.items()):
        print(f"  {name}: {count}")
    assert CountingMachine.steps >= minimum, f"only {CountingMachine.steps} steps ran"
    missing = [name for name in (*FUNCTIONS, *SCENARIOS) if not totals[name]]
    assert not missing, f"never happened: {missing}"


def test_jobs_state_machine() -> None:
    _run("jobs-invariants", 2_000)


@pytest.mark.long
def test_jobs_state_machine_long() -> None:
    _run("jobs-invariants-long", 30_000)


def _rogue_slash(world: World, node: str, beneficiary: str) -> None:
    """Lock and slash ``node``'s stake through a slasher the model does not know of."""
    rogue = boa.env.generate_address()
    with boa.env.prank(world.admin):
        world.registry.propose_slasher(rogue, True)
    boa.env.time_travel(seconds=ADMIN_DELAY)
    world.registry.apply_slasher(rogue)
    with boa.env.prank(rogue):
        world.registry.lock(node, 1, SLASH_AMOUNT)
        world.registry.slash(node, 1, SLASH_AMOUNT, beneficiary)


def test_each_invariant_can_fail() -> None:
    """Each check notices when the chain's money (or a credit) moves behind the model's back."""
    world = World.build()
    JobsMachine.world = world
    node, owner = world.nodes[0], world.owners[0]

    def stray_credit(machine: JobsMachine) -> None:  # a credit for a round nobody finalized
        machine.credits.append((1, 0, node, 1))

    def slash_over_cap(machine: JobsMachine) -> None:
        machine.slashes.append((1, node, SLASH_AMOUNT, SLASH_AMOUNT + 1))

    def lost_refund(machine: JobsMachine) -> None:
        machine.model[1].refunded += 1

    tamperings = {
        "balance_is_escrow_plus_owed": lambda m: boa.env.set_balance(
            world.jobs.address, boa.env.get_balance(world.jobs.address) + 1),
        "credits_and_refunds_add_up_to_the_deposit": lost_refund,
        "nobody_is_credited_for_a_round_it_was_not_included_in": stray_credit,
        "a_slash_takes_at_most_the_slash_amount_from_the_lock": slash_over_cap,
        "registry_holds_stakes_unbonding_and_slash_proceeds": lambda m: boa.env.set_balance(
            world.registry.address, boa.env.get_balance(world.registry.address) - 1),
        "stakes_locks_and_credits_match_the_model": lambda m: _rogue_slash(world, node, owner),
        "every_account_received_exactly_what_it_was_paid_out": lambda m: boa.env.set_balance(
            owner, boa.env.get_balance(owner) + 1),
    }
    for name, tamper in tamperings.items():
        machine = JobsMachine()
        try:
            for check in tamperings:
                getattr(machine, check)()  # all hold before the tampering
            tamper(machine)
            with pytest.raises(AssertionError):
                getattr(machine, name)()
        finally:
            machine.teardown()
