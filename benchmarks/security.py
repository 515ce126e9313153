"""Issue 13's attacks performed against the real Registry and Jobs contracts, and what each got.

Each attack runs in process on titanoboa (the contracts compiled from ``contracts/``, as the
contract tests run them), from a fresh deployment, and is measured from the contracts' state
afterwards. Two figures per attack:

- **wei taken**: what the attacker's accounts gained over what they would hold had they played
  honestly (or, for an outsider, not taken part), counting their ETH balance, what Jobs and the
  Registry owe them and their Registry stake. Taken from the job's escrow or other nodes'
  stakes; a loss to the attacker counts 0 (its net figure is kept as ``attacker_net_wei``).
- **rounds stalled**: rounds beyond one deadline that could not make progress because of the
  attack (for the squatting trainer: rounds that waited their whole deadline beyond the 3 a
  trainer may miss before it is evicted).

Prints a table and writes ``benchmarks/results/security.json``; exits 1 when any attack took
wei or stalled a round.

    .venv/bin/python benchmarks/security.py [--draws 200] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path
from typing import Any

import boa
from boa.contracts.base_evm_contract import BoaError
from eth_utils import keccak
from rich.console import Console
from rich.table import Table

from allmende.chain.jobs import included_words, vote_commitment
from machine import describe_machine

CONTRACTS = Path(__file__).resolve().parents[1] / "contracts"
RESULT = Path(__file__).resolve().parent / "results" / "security.json"

ETHER = 10**18
MIN_STAKE = ETHER
UNBOND_DELAY = 3_600
ADMIN_DELAY = 2 * 86_400
CHALLENGE_WINDOW = 86_400
AGGREGATOR_SHARE_BPS = 2_000
SLASH_AMOUNT = ETHER // 2
ROUND_DEADLINE = 600
SIGNUP_PERIOD = 300
TRAINER_STAKE = MIN_STAKE // 4
AGGREGATOR_STAKE = MIN_STAKE
REWARD = 10 * ETHER + 7
MAX_REOPENS = 3
MISSED_ROUNDS_ALLOWED = 3
TRAINER, AGGREGATOR = 1, 2
DEFAULT_DRAWS = 200
# the open-committee attack: ten sybils at the minimum stake against three honest volunteers
SYBILS, SYBIL_STAKE = 10, MIN_STAKE
HONEST_VOLUNTEERS, HONEST_STAKE = 3, 50 * MIN_STAKE
COMMITTEE_SIZE, QUORUM = 3, 2
WEIGHT_CAP = 1_000  # the declared-weights job of the weight grab
HONEST_WEIGHTS = (100, 100)  # the other trainers' declared weights (their example counts)
GRAB = 2**53


def h(text: str) -> bytes:
    """A deterministic 32-byte hash for a label (stands in for a blob's SHA-256)."""
    return keccak(text=text)


def bitmap(indices: Iterable[int]) -> int:
    return sum(1 << i for i in indices)


@cache
def _deployers() -> tuple[Any, Any]:
    """Registry and Jobs compiled once per process."""
    return (boa.load_partial(str(CONTRACTS / "Registry.vy")),
            boa.load_partial(str(CONTRACTS / "Jobs.vy")))


def refusal(call: Callable[[], Any]) -> str | None:
    """Run ``call``; the contract's revert reason if it reverted, None if it went through."""
    try:
        call()
    except BoaError as error:
        frame = error.stack_trace.last_frame
        return str(getattr(frame, "pretty_vm_reason", frame)).strip()
    return None


@dataclass
class Job:
    """A created job with its owner, joined trainers and committee (joined or drawn)."""

    id: int
    owner: str
    trainers: list[str] = field(default_factory=list)
    aggregators: list[str] = field(default_factory=list)
    volunteers: list[str] = field(default_factory=list)


class Chain:
    """A fresh Registry and Jobs (the deployer is the Registry's admin and set Jobs as its
    first slasher), with helpers to make funded nodes and jobs and to count holdings."""

    def __init__(self, *, slash_amount: int = SLASH_AMOUNT) -> None:
        registry_deployer, jobs_deployer = _deployers()
        self.admin = boa.env.eoa
        with boa.env.prank(self.admin):
            self.registry = registry_deployer.deploy(MIN_STAKE, UNBOND_DELAY, ADMIN_DELAY)
            self.jobs = jobs_deployer.deploy(self.registry.address, AGGREGATOR_SHARE_BPS,
                                             slash_amount, CHALLENGE_WINDOW)
            self.registry.set_first_slasher(self.jobs.address)

    def account(self, balance: int = 1_000 * ETHER) -> str:
        account = boa.env.generate_address()
        boa.env.set_balance(account, balance)
        return account

    def node(self, roles: int, stake: int = 2 * MIN_STAKE) -> str:
        """A fresh account registered with ``roles`` and staked with ``stake`` wei."""
        account = self.account()
        with boa.env.prank(account):
            self.registry.register("http://127.0.0.1:9000", roles, h("metadata"))
            if stake:
                self.registry.stake(value=stake)
        return account

    def holdings(self, accounts: Iterable[str]) -> int:
        """What the accounts hold in wei: ETH, what Jobs and the Registry owe them, and their
        Registry stake (bonded, locked or unbonding)."""
        total = 0
        for account in set(accounts):
            record = self.registry.nodes(account)
            total += (boa.env.get_balance(account) + self.jobs.owed(account)
                      + self.registry.owed(account) + record.stake + record.unbonding)
        return total

    def create(self, owner: str, *, committee: list[str], committee_size: int, quorum: int,
               rounds: int, min_trainers: int, max_trainers: int, weight_cap: int,
               round_deadline: int = ROUND_DEADLINE, trainer_stake: int = TRAINER_STAKE,
               aggregator_stake: int = AGGREGATOR_STAKE) -> int:
        with boa.env.prank(owner):
            return int(self.jobs.create_job(
                h("spec"), h("model 0"), rounds, REWARD, min_trainers, max_trainers, quorum,
                round_deadline, committee, committee_size, 0 if committee else SIGNUP_PERIOD,
                trainer_stake, aggregator_stake, weight_cap, value=rounds * REWARD,
            ))

    def named_job(self, *, trainers: int = 3, aggregators: int = 2, quorum: int = 2,
                  rounds: int = 1, min_trainers: int = 1, weight_cap: int = 0,
                  trainer_stake: int = TRAINER_STAKE) -> Job:
        """A job with a named, joined committee of fresh nodes and ``trainers`` joined
        trainers; round 0 runs."""
        owner = self.account()
        committee = [self.node(AGGREGATOR) for _ in range(aggregators)]
        job = Job(self.create(owner, committee=committee, committee_size=len(committee),
                              quorum=quorum, rounds=rounds, min_trainers=min_trainers,
                              max_trainers=max(trainers, 1), weight_cap=weight_cap,
                              trainer_stake=trainer_stake),
                  owner, aggregators=committee)
        for member in committee:
            with boa.env.prank(member):
                self.jobs.join(job.id, AGGREGATOR)
        for _ in range(trainers):
            self.join_trainer(job, self.node(TRAINER))
        return job

    def join_trainer(self, job: Job, account: str) -> None:
        with boa.env.prank(account):
            self.jobs.join(job.id, TRAINER)
        job.trainers.append(account)

    def commit(self, job: Job, round_: int, trainers: Iterable[int],
               weights: dict[int, int] | None = None) -> None:
        for index in trainers:
            with boa.env.prank(job.trainers[index]):
                self.jobs.commit_update(job.id, round_, h(f"update {round_} {index}"),
                                        (weights or {}).get(index, 1))

    def total(self, job: Job, round_: int, included: int) -> int:
        return sum(int(self.jobs.commit_of(job.id, round_, t)[1])
                   for i, t in enumerate(job.trainers) if included >> i & 1)

    def commit_votes(self, job: Job, round_: int, ballots: list[tuple[str, bytes, int]]) -> None:
        """Each (member, model, included) commits its vote, hidden."""
        for member, model, included in ballots:
            secret = vote_commitment(model, included, self.total(job, round_, included),
                                     h(f"salt {member}"), member)
            with boa.env.prank(member):
                self.jobs.commit_vote(job.id, round_, secret)

    def reveal_votes(self, job: Job, round_: int, ballots: list[tuple[str, bytes, int]]) -> None:
        """The ballots are revealed in order (after the vote-commit period, when not every
        member committed) until the round is final; then anyone challenges the provably
        wrong votes and everyone included claims its share, as the nodes do."""
        if not self.jobs.reveals_open(job.id):
            boa.env.time_travel(seconds=ROUND_DEADLINE + 1)
        for member, model, included in ballots:
            if self.round_of(job) != round_:
                break
            with boa.env.prank(member):
                self.jobs.reveal(job.id, round_, model, included_words(included),
                                 self.total(job, round_, included), h(f"salt {member}"))
        if self.round_of(job) == round_:
            return
        for member in job.aggregators:
            if self.jobs.provably_wrong(job.id, member):
                self.jobs.challenge(job.id, member)
            with boa.env.prank(member):
                refusal(lambda: self.jobs.claim_vote(job.id, round_))
        for index, trainer in enumerate(job.trainers):
            for model, included in {(m, i) for _, m, i in ballots}:
                if included >> index & 1:
                    total = self.total(job, round_, included)
                    claim = partial(self.jobs.claim, job.id, round_, model,
                                    included_words(included), total)
                    with boa.env.prank(trainer):
                        refusal(claim)

    def votes(self, job: Job, round_: int, ballots: list[tuple[str, bytes, int]]) -> None:
        self.commit_votes(job, round_, ballots)
        self.reveal_votes(job, round_, ballots)

    def vote(self, job: Job, round_: int, model: bytes, included: int,
             voters: Iterable[str]) -> None:
        """The voters commit, then reveal, the same result (see :meth:`votes`)."""
        self.votes(job, round_, [(member, model, included) for member in voters])

    def round_of(self, job: Job) -> int:
        return int(self.jobs.jobs(job.id).current_round)

    def deadline_passed(self, job: Job) -> bool:
        return boa.env.evm.patch.timestamp > self.jobs.deadline(job.id)


def _row(name: str, defence: str, *, net: int, stalled: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "defence": defence, "wei_taken": max(net, 0),
            "rounds_stalled": stalled, "attacker_net_wei": net, **extra}


def _stalled_unless_final(chain: Chain, job: Job, round_: int) -> int:
    """1 if the round did not finalize within its (latest) deadline, else 0."""
    return 0 if chain.round_of(job) > round_ and not chain.deadline_passed(job) else 1


# 1 ------------------------------------------------------------------------------------------


def _theft(chain: Chain, job: Job, sybils: set[str], *, steal: bool) -> tuple[int, int]:
    """The job's round 0 with two honest trainers and one sybil trainer: the sybil members
    vote to pay the whole trainer pool to the sybil trainer (``steal``) or vote honestly, the
    honest members vote honestly. The sybils' holdings afterwards, and 1 if the round did not
    finalize within its deadline."""
    job = Job(job.id, job.owner, aggregators=list(job.aggregators))  # trainers of this run only
    for _ in range(2):
        chain.join_trainer(job, chain.node(TRAINER))
    sybil_trainer = chain.node(TRAINER)
    chain.join_trainer(job, sybil_trainer)
    chain.commit(job, 0, range(3))
    theft = (h("theft"), bitmap([2])) if steal else (h("m"), bitmap(range(3)))
    # sybil members reveal first: with a majority their pair finalizes
    members = sorted(job.aggregators, key=lambda member: member not in sybils)
    chain.votes(job, 0, [(member, *(theft if member in sybils else (h("m"), bitmap(range(3)))))
                         for member in members])
    return chain.holdings(sybils | {sybil_trainer}), _stalled_unless_final(chain, job, 0)


def _draws(chain: Chain, sybil_stake: int, draws: int
           ) -> tuple[int, int, dict[bool, tuple[int, int]]]:
    """SYBILS volunteers staking ``sybil_stake`` each and HONEST_VOLUNTEERS staking
    HONEST_STAKE sign up for ``draws`` jobs, one prevrandao seed each. How many draws gave the
    sybils the majority, their seats in all, and the theft's gain in the first draw they won
    and the first they lost, with the rounds it stalled (``captured? -> (wei, stalled)``)."""
    stakes = [sybil_stake] * SYBILS + [HONEST_STAKE] * HONEST_VOLUNTEERS
    # aggregator_stake 0 in the draws, so the same volunteers can sign up for every job
    volunteers = [chain.node(AGGREGATOR, stake=stake) for stake in stakes]
    sybils = set(volunteers[:SYBILS])
    captured, seats = 0, 0
    theft: dict[bool, tuple[int, int]] = {}
    for draw in range(draws):
        boa.env.evm.patch.prevrandao = (draw + 1).to_bytes(32, "big")
        owner = chain.account()
        job = Job(chain.create(owner, committee=[], committee_size=COMMITTEE_SIZE,
                               quorum=QUORUM, rounds=1, min_trainers=1, max_trainers=3,
                               weight_cap=0, aggregator_stake=0), owner)
        for volunteer in volunteers:
            with boa.env.prank(volunteer):
                chain.jobs.join(job.id, AGGREGATOR)
        with boa.env.anchor():
            boa.env.time_travel(seconds=SIGNUP_PERIOD + 1)
            chain.jobs.seal(job.id)
            job.aggregators = [chain.jobs.aggregator_at(job.id, i) for i in range(COMMITTEE_SIZE)]
            held = sum(member in sybils for member in job.aggregators)
            seats += held
            won = held >= QUORUM
            captured += won
            if won not in theft:
                with boa.env.anchor():
                    honest, _ = _theft(chain, job, sybils, steal=False)
                with boa.env.anchor():
                    stolen, stalled = _theft(chain, job, sybils, steal=True)
                theft[won] = (stolen - honest, stalled)
    return captured, seats, theft


def sybil_open_committee(draws: int = DEFAULT_DRAWS) -> dict[str, Any]:
    """Ten cheap sybil volunteers against three well-staked honest ones, over ``draws``
    prevrandao seeds: how often the stake-weighted draw gives the sybils the strict majority
    of a committee of three, and what their theft attempt gets when it does not. Then what it
    takes: the same with the sybils staking as much as the honest volunteers together."""
    chain = Chain()
    captured, seats, theft = _draws(chain, SYBIL_STAKE, draws)
    equal_stake = HONEST_VOLUNTEERS * HONEST_STAKE // SYBILS
    captured_equal, _, theft_equal = _draws(chain, equal_stake, draws)
    total = SYBILS + HONEST_VOLUNTEERS
    head_count = _uniform_capture(SYBILS, total)
    stake_share = SYBILS * SYBIL_STAKE / (SYBILS * SYBIL_STAKE + HONEST_VOLUNTEERS * HONEST_STAKE)
    note = (f"{SYBILS} sybils at {SYBIL_STAKE / ETHER:g} ETH against {HONEST_VOLUNTEERS} "
            f"honest volunteers at {HONEST_STAKE / ETHER:g} ETH ({SYBILS} of {total} slots, "
            f"{stake_share:.1%} of the stake): majority in {captured} of {draws} draws "
            f"({captured / draws:.1%}; by head count it would be {head_count:.1%}). What it "
            f"takes: staking as much as the honest ones ({equal_stake / ETHER:g} ETH each), "
            f"majority in {captured_equal} of {draws} ({captured_equal / draws:.1%})")
    with_majority = theft.get(True) or theft_equal.get(True)
    won = with_majority[0] if with_majority else None
    lost = theft.get(False, (0, 0))  # (0, 0) only if the sybils won every draw: see the note
    if won is not None:
        note += f"; with a majority the theft took {won / ETHER:.3f} ETH"
    return _row("sybil aggregators take over an open committee",
                "stake-weighted draw, strict-majority quorum",
                net=lost[0], stalled=lost[1], note=note,
                capture_rate=captured / draws, seats_per_draw=seats / draws,
                capture_rate_by_head_count=head_count, sybil_stake_share=stake_share,
                capture_rate_at_equal_stake=captured_equal / draws,
                theft_wei_with_majority=won)


def _uniform_capture(sybils: int, total: int) -> float:
    """P(sybils get >= QUORUM of COMMITTEE_SIZE seats) if seats went by head count."""
    return sum(math.comb(sybils, k) * math.comb(total - sybils, COMMITTEE_SIZE - k)
               for k in range(QUORUM, COMMITTEE_SIZE + 1)) / math.comb(total, COMMITTEE_SIZE)


# 2 ------------------------------------------------------------------------------------------


def outsider_joins_named_committee() -> dict[str, Any]:
    """A node outside a named committee tries to join it and to vote a theft."""
    chain = Chain()
    job = chain.named_job()
    outsider = chain.node(AGGREGATOR)
    before = chain.holdings([outsider])
    with boa.env.prank(outsider):
        joined = refusal(lambda: chain.jobs.join(job.id, AGGREGATOR))
    chain.commit(job, 0, range(3))
    with boa.env.prank(outsider):
        voted = refusal(lambda: chain.jobs.commit_vote(job.id, 0, h("theft")))
    chain.vote(job, 0, h("m"), bitmap(range(3)), job.aggregators)
    return _row("non-member joins a named committee", f"refused: {joined}; vote: {voted}",
                net=chain.holdings([outsider]) - before,
                stalled=_stalled_unless_final(chain, job, 0),
                refused=joined is not None and voted is not None)


# 3 ------------------------------------------------------------------------------------------


def weight_grab(weight_cap: int, others: tuple[int, ...] = HONEST_WEIGHTS) -> dict[str, Any]:
    """Trainer 0 declares 2**53 (refused), then the most the job accepts; the others declare
    ``others`` (under equal weights, 1). Its share of the trainer pool and the fair share."""
    chain = Chain()
    job = chain.named_job(trainers=1 + len(others), weight_cap=weight_cap)
    greedy = job.trainers[0]
    with boa.env.prank(greedy):
        grab = refusal(lambda: chain.jobs.commit_update(job.id, 0, h("greedy"), GRAB))
    most = weight_cap or 1
    weights = {0: most} | {i + 1: (w if weight_cap else 1) for i, w in enumerate(others)}
    chain.commit(job, 0, range(len(weights)), weights)
    chain.vote(job, 0, h("m"), bitmap(range(len(weights))), job.aggregators)
    pool = REWARD - REWARD * AGGREGATOR_SHARE_BPS // 10_000
    got = int(chain.jobs.owed(greedy))
    # the fair share: equal weights, 1/n; declared weights, what any trainer may claim (the cap)
    fair = pool * most // sum(weights.values())
    return {"refused": grab, "share": got / pool, "fair_share": fair / pool,
            "excess_wei": got - fair, "stalled": _stalled_unless_final(chain, job, 0)}


def weight_grab_row() -> dict[str, Any]:
    equal, declared = weight_grab(0), weight_grab(WEIGHT_CAP)
    note = (f"equal weights: 2**53 refused, share {equal['share']:.4f} (fair "
            f"{equal['fair_share']:.4f}); declared weights, cap {WEIGHT_CAP}: 2**53 refused, "
            f"share {declared['share']:.4f} at the cap against others declaring "
            f"{'+'.join(map(str, HONEST_WEIGHTS))} (a trainer's declared weight is trusted "
            "up to the owner's cap)")
    return _row("weight grab (declare 2**53)",
                f"equal weights: {equal['refused']}; declared: {declared['refused']}",
                net=max(equal["excess_wei"], declared["excess_wei"]),
                stalled=equal["stalled"] + declared["stalled"], note=note,
                equal_share=equal["share"], declared_share=declared["share"],
                declared_fair_share=declared["fair_share"])


# 4 ------------------------------------------------------------------------------------------


def unbond_while_working() -> dict[str, Any]:
    """A working trainer unbonds its whole stake; a node backs two jobs' bonds with one stake."""
    chain = Chain()
    job = chain.named_job(trainers=1)
    trainer = job.trainers[0]
    stake = int(chain.registry.stake_of(trainer))
    with boa.env.prank(trainer):
        unbond = refusal(lambda: chain.registry.request_unbond(stake))
    escaped = TRAINER_STAKE - int(chain.registry.lock_of(chain.jobs.address, job.id, trainer))
    # one stake for two bonds: a node staked with exactly one bond, two jobs asking that bond
    first = chain.named_job(trainers=0, trainer_stake=MIN_STAKE)
    second = chain.named_job(trainers=0, trainer_stake=MIN_STAKE)
    sybil = chain.node(TRAINER, stake=MIN_STAKE)
    with boa.env.prank(sybil):
        chain.jobs.join(first.id, TRAINER)
        shared = refusal(lambda: chain.jobs.join(second.id, TRAINER))
    bonds = sum(int(chain.registry.lock_of(chain.jobs.address, other.id, sybil))
                for other in (first, second))
    unbacked = max(0, bonds - int(chain.registry.stake_of(sybil)))  # bond backed by no stake
    chain.commit(job, 0, [0])
    chain.vote(job, 0, h("m"), bitmap([0]), job.aggregators)
    return _row("unbond while working / one stake for two locks",
                f"unbond: {unbond}; second lock: {shared}", net=escaped + unbacked,
                stalled=_stalled_unless_final(chain, job, 0))


# 5 ------------------------------------------------------------------------------------------


def _selective_round(*, selective: bool) -> tuple[int, int, int]:
    """Three trainers, three aggregators. The attacker (the owner, who receives slashes, and
    trainer 2) serves trainer 2's update only to aggregator 0 (``selective``), which includes
    it; the other two leave it out. The attacker's holdings, the honest aggregators' stake
    lost, and the stalled rounds."""
    chain = Chain()
    job = chain.named_job(trainers=3, aggregators=3, quorum=2)
    attacker = [job.owner, job.trainers[2]]
    stakes = [int(chain.registry.stake_of(member)) for member in job.aggregators]
    chain.commit(job, 0, range(3))
    served_all, *others = job.aggregators
    ballots = [(served_all, h("with 2"), bitmap(range(3)))]
    if selective:
        ballots += [(member, h("without 2"), bitmap([0, 1])) for member in others]
    else:  # the second vote for the full pair reaches the quorum
        ballots += [(others[0], h("with 2"), bitmap(range(3)))]
    chain.votes(job, 0, ballots)
    stalled = _stalled_unless_final(chain, job, 0)
    boa.env.time_travel(seconds=CHALLENGE_WINDOW)  # claims close; the owner takes the rest
    with boa.env.prank(job.owner):
        chain.jobs.refund(job.id)
    lost = sum(stake - int(chain.registry.stake_of(member))
               for stake, member in zip(stakes, job.aggregators, strict=True))
    return chain.holdings(attacker), lost, stalled


def selective_serving() -> dict[str, Any]:
    honest, _, _ = _selective_round(selective=False)
    attacked, lost, stalled = _selective_round(selective=True)
    return _row("selective serving splits included sets",
                "a vote for another included set is neither paid nor slashed",
                net=attacked - honest, stalled=stalled, honest_aggregator_stake_lost=lost,
                note=f"honest aggregators' stake lost: {lost} wei")


# 6 ------------------------------------------------------------------------------------------


def _dead_round(*, hold_back: bool, reopen: bool) -> tuple[int, int]:
    chain = Chain()
    job = chain.named_job(trainers=3, min_trainers=3)
    holdouts = job.trainers[1:]
    chain.commit(job, 0, [0] if hold_back else range(3))
    if hold_back:
        boa.env.time_travel(seconds=ROUND_DEADLINE + 1)
    stalled = 0
    for _ in range(MAX_REOPENS + 1):
        reason = None
        if hold_back:
            reason = refusal(partial(chain.jobs.reopen, job.id)) if reopen else "not called"
            if reason is None:
                chain.commit(job, 0, [1, 2])
        if reason is None:
            chain.vote(job, 0, h("m"), bitmap(range(3)), job.aggregators)
        if chain.round_of(job) > 0:
            break
        stalled += 1
        boa.env.time_travel(seconds=ROUND_DEADLINE + 1)
    return chain.holdings(holdouts), stalled


def dead_round(reopen: bool = True) -> dict[str, Any]:
    """Two of three trainers hold back past the deadline (min_trainers 3); after it, anyone
    reopens (unless ``reopen`` is False) and they commit. Stalled: deadlines after the first
    that passed without the round finalizing, up to MAX_REOPENS + 1. Wei: the holdouts
    against committing on time."""
    honest, _ = _dead_round(hold_back=False, reopen=reopen)
    attacked, stalled = _dead_round(hold_back=True, reopen=reopen)
    return _row("dead round (too few commits at the deadline)", "anyone reopens the round",
                net=attacked - honest, stalled=stalled)


# 7 ------------------------------------------------------------------------------------------


def squatting_trainer(rounds: int = 6, evict: bool = True) -> dict[str, Any]:
    """Trainer 2 joins and never commits. Each round the others commit and the committee votes
    at once; when that is refused (it waits for the squatter) the round waits its deadline.
    Anyone evicts the squatter as soon as the contract allows (unless ``evict`` is False)."""
    chain = Chain()
    job = chain.named_job(trainers=3, rounds=rounds)
    squatter = job.trainers[2]
    before = chain.holdings([squatter])
    waited, evicted_at = 0, None
    for round_ in range(rounds):
        if evict and evicted_at is None and refusal(lambda: chain.jobs.evict(job.id, 2)) is None:
            evicted_at = round_
        chain.commit(job, round_, [0, 1])
        with boa.env.anchor(), boa.env.prank(job.aggregators[0]):  # may it vote at once?
            early = refusal(partial(chain.jobs.commit_vote, job.id, round_, h("probe")))
        if early is not None:
            waited += 1
            boa.env.time_travel(seconds=ROUND_DEADLINE + 1)
        chain.vote(job, round_, h(f"m {round_}"), bitmap([0, 1]), job.aggregators)
    return _row("squatting trainer that never commits",
                f"evicted at round {evicted_at}, its bond to the owner",
                net=chain.holdings([squatter]) - before,
                stalled=max(0, waited - MISSED_ROUNDS_ALLOWED), rounds_waited=waited)


# 8 ------------------------------------------------------------------------------------------


def _cancel_race(*, attack: bool) -> tuple[int, list[str | None], int]:
    chain = Chain()
    job = chain.named_job(trainers=3)
    chain.commit(job, 0, range(3))
    ballots = [(member, h("m"), bitmap(range(3))) for member in job.aggregators]
    chain.commit_votes(job, 0, ballots)
    chain.reveal_votes(job, 0, ballots[:1])
    reasons: list[str | None] = []
    if attack:  # the reveal that would finalize is seen: cancel before it, and after the deadline
        with boa.env.prank(job.owner):
            reasons.append(refusal(lambda: chain.jobs.cancel(job.id)))
            boa.env.time_travel(seconds=ROUND_DEADLINE + 1)
            reasons.append(refusal(lambda: chain.jobs.cancel(job.id)))
    stalled = 0
    if refusal(lambda: chain.reveal_votes(job, 0, ballots[1:])):
        stalled = 1
    boa.env.time_travel(seconds=CHALLENGE_WINDOW)
    with boa.env.prank(job.owner):
        refusal(lambda: chain.jobs.refund(job.id))
    return chain.holdings([job.owner]), reasons, stalled


def owner_cancel_front_run() -> dict[str, Any]:
    honest, _, _ = _cancel_race(attack=False)
    attacked, reasons, stalled = _cancel_race(attack=True)
    return _row("owner front-runs a ready round with cancel",
                f"refused: {reasons[0]}; after the deadline: {reasons[1]}",
                net=attacked - honest, stalled=stalled)


# 9 ------------------------------------------------------------------------------------------


def huge_round_deadline() -> dict[str, Any]:
    """Jobs whose deadline (round_start + round_deadline) would overflow or lie past 30 days,
    so no round's deadline ever passes: no reopen, no cancel, locks held for ever."""
    chain = Chain()
    owner = chain.account()
    before = int(chain.jobs.next_job_id())
    reasons = [refusal(partial(
        chain.create, owner, committee=[chain.node(AGGREGATOR)], committee_size=1, quorum=1,
        rounds=1, min_trainers=1, max_trainers=1, weight_cap=0, round_deadline=huge))
        for huge in (2**256 - 1, 2**64, 30 * 86_400 + 1)]
    created = int(chain.jobs.next_job_id()) - before
    return _row("huge round_deadline overflow", f"refused at create: {reasons[0]}",
                net=0, stalled=created, refused=sum(r is not None for r in reasons))


# 10 -----------------------------------------------------------------------------------------


def rogue_slasher() -> dict[str, Any]:
    """The Registry admin authorizes its own slasher to take a working node's stake. Then it
    revokes Jobs in the middle of a round with a wrong vote to slash."""
    chain = Chain()
    job = chain.named_job(trainers=2, aggregators=3)
    victim = job.trainers[0]
    rogue = chain.account()
    attacker = [chain.admin, rogue]
    before = chain.holdings(attacker)
    with boa.env.prank(chain.admin):
        instant = refusal(lambda: chain.registry.set_first_slasher(rogue))
        chain.registry.propose_slasher(rogue, True)
    with boa.env.prank(rogue):
        early = refusal(lambda: chain.registry.slash(victim, job.id, MIN_STAKE, rogue))
    # the victim sees SlasherProposed and unbonds its free stake within the delay
    with boa.env.prank(victim):
        chain.registry.request_unbond(chain.registry.free_stake(victim))
    boa.env.time_travel(seconds=ADMIN_DELAY)
    chain.registry.apply_slasher(rogue)
    with boa.env.prank(rogue):
        refusal(lambda: chain.registry.lock(victim, 999, MIN_STAKE))
        refusal(lambda: chain.registry.slash(victim, 999, MIN_STAKE, rogue))
        refusal(lambda: chain.registry.slash(victim, job.id, MIN_STAKE, rogue))
        refusal(lambda: chain.registry.withdraw())
    taken = chain.holdings(attacker) - before
    # revoke Jobs, then a round whose finalization slashes a wrong vote
    with boa.env.prank(chain.admin):
        chain.registry.propose_slasher(chain.jobs.address, False)
    boa.env.time_travel(seconds=ADMIN_DELAY)
    chain.registry.apply_slasher(chain.jobs.address)
    chain.jobs.reopen(job.id)
    chain.commit(job, 0, range(2))
    wrong, *honest = job.aggregators
    ballots = [(wrong, h("wrong"), bitmap(range(2)))]
    ballots += [(member, h("m"), bitmap(range(2))) for member in honest]
    # the reveals finalize; the challenge of the wrong vote slashes 0 and reverts nothing
    finalize = refusal(lambda: chain.votes(job, 0, ballots))
    stalled = 0 if finalize is None and chain.round_of(job) == 1 else 1
    return _row("admin instantly authorizes a rogue slasher",
                f"refused: {instant}; before the delay: {early}; finalize after revoking "
                f"Jobs: {'ok' if finalize is None else finalize}", net=taken, stalled=stalled)


# 11 -----------------------------------------------------------------------------------------


def slash_beyond_lock(slash_amount: int = 100 * ETHER) -> dict[str, Any]:
    """A Jobs deployed with a slash far above the bond (its owner the attacker, who receives
    slashes) slashes a wrong vote: it takes only the aggregator's lock for the job."""
    chain = Chain(slash_amount=slash_amount)
    job = chain.named_job(trainers=2, aggregators=3)
    wrong, *honest = job.aggregators
    lock = int(chain.registry.lock_of(chain.jobs.address, job.id, wrong))
    chain.commit(job, 0, range(2))
    chain.votes(job, 0, [(wrong, h("wrong"), bitmap(range(2)))]
                + [(member, h("m"), bitmap(range(2))) for member in honest])
    slashed = int(chain.registry.owed(job.owner))
    return _row("slash beyond the job's lock", f"capped at the lock ({lock} wei)",
                net=slashed - lock, stalled=_stalled_unless_final(chain, job, 0),
                slashed_wei=slashed, slash_amount_wei=slash_amount)


def vote_copying() -> dict[str, Any]:
    """A lazy member does not aggregate: it waits for an honest reveal and copies the
    result. Once a reveal is possible no vote can be committed, so the copy is refused and
    the lazy member is paid nothing; copying another's commitment cannot be revealed."""
    chain = Chain()
    job = chain.named_job(trainers=3, aggregators=3, quorum=2)
    honest, other, lazy = job.aggregators
    before = chain.holdings([lazy])
    chain.commit(job, 0, range(3))
    ballots = [(honest, h("m"), bitmap(range(3))), (other, h("m"), bitmap(range(3)))]
    chain.commit_votes(job, 0, ballots)
    boa.env.time_travel(seconds=ROUND_DEADLINE + 1)  # the lazy member never committed
    chain.reveal_votes(job, 0, ballots[:1])
    copy = vote_commitment(h("m"), bitmap(range(3)), 3, h(f"salt {lazy}"), lazy)
    with boa.env.prank(lazy):
        copied = refusal(lambda: chain.jobs.commit_vote(job.id, 0, copy))
    chain.reveal_votes(job, 0, ballots[1:])
    with boa.env.prank(lazy):
        paid = refusal(lambda: chain.jobs.claim_vote(job.id, 0))
    return _row("copying another aggregator's revealed vote",
                f"commit-reveal: the copy is refused ({copied}); claim: {paid}",
                net=chain.holdings([lazy]) - before,
                stalled=_stalled_unless_final(chain, job, 0))


ATTACKS: tuple[Callable[[], dict[str, Any]], ...] = (
    outsider_joins_named_committee, weight_grab_row, unbond_while_working, selective_serving,
    dead_round, squatting_trainer, owner_cancel_front_run, huge_round_deadline, rogue_slasher,
    slash_beyond_lock, vote_copying,
)


def run_all(draws: int = DEFAULT_DRAWS, *, progress: Callable[[str], None] = print
            ) -> list[dict[str, Any]]:
    """Every attack, each from a fresh deployment rolled back afterwards; one row each."""
    attacks = [lambda: sybil_open_committee(draws), *ATTACKS]
    rows = []
    for number, attack in enumerate(attacks, 1):
        started = time.perf_counter()
        with boa.env.anchor():
            row = attack()
        rows.append(row)
        progress(f"  [{number}/{len(attacks)}] {row['name']}: {row['wei_taken']} wei taken, "
                 f"{row['rounds_stalled']} rounds stalled ({time.perf_counter() - started:.1f} s)")
    return rows


def print_table(rows: list[dict[str, Any]], *, console: Console) -> None:
    table = Table(title="Attacks on the real contracts (titanoboa)")
    for column, justify in (("attack", "left"), ("defence", "left"), ("wei taken", "right"),
                            ("rounds stalled", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(row["name"], row["defence"], str(row["wei_taken"]),
                      str(row["rounds_stalled"]))
    console.print(table)
    for row in rows:
        if "note" in row:
            console.print(f"  {row['name']}: {row['note']}")


def failed_attacks(rows: list[dict[str, Any]]) -> list[str]:
    """The attacks whose row shows wei taken or rounds stalled: each is a broken defence."""
    return [row["name"] for row in rows if row["wei_taken"] > 0 or row["rounds_stalled"] > 0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=DEFAULT_DRAWS,
                        help=f"seeds of the open-committee draw (default {DEFAULT_DRAWS})")
    parser.add_argument("--json", type=Path, default=RESULT,
                        help="where to write the result (default benchmarks/results/security.json)")
    args = parser.parse_args(argv)
    if args.draws < 1:
        parser.error("--draws must be at least 1")
    console = Console(width=max(Console().width, 150))
    rows = run_all(args.draws, progress=console.print)
    print_table(rows, console=console)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    result = {"machine": describe_machine(), "draws": args.draws, "attacks": rows}
    args.json.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    console.print(f"  written: {args.json}")
    failed = failed_attacks(rows)
    if failed:
        console.print(f"[red]attacks that took wei or stalled rounds: {', '.join(failed)}[/red]")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
