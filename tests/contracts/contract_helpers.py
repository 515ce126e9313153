"""Constants and helpers shared by the contract tests (titanoboa)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boa
from eth_abi import encode as abi_encode
from eth_utils import keccak

CONTRACTS = Path(__file__).resolve().parents[2] / "contracts"
HERE = Path(__file__).resolve().parent

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
DECLARED = 2**64 - 1  # weight_cap of the jobs in tests that commit declared weights
MAX_REOPENS = 3
MISSED_ROUNDS_ALLOWED = 3
REWARD = 10 * ETHER + 7
TRAINER, AGGREGATOR, VERIFIER, PROVIDER = 1, 2, 4, 8
OPEN, FINISHED, CANCELLED = 1, 2, 3
EMPTY = b"\0" * 32


def h(text: str) -> bytes:
    """A deterministic 32-byte hash for a label (stands in for a blob's SHA-256)."""
    return keccak(text=text)


def words(included: int) -> list[int]:
    """The contract's ``included`` argument: the bitmap as 4 words of 256 trainers."""
    return [included >> (256 * i) & (2**256 - 1) for i in range(4)]


def vote_key(model_hash: bytes, included: int, total_weight: int) -> bytes:
    """The key of a result: keccak256(abi_encode(model_hash, included, total_weight))."""
    return keccak(
        abi_encode(
            ["bytes32", "uint256[4]", "uint256"], [model_hash, words(included), total_weight]
        )
    )


def commitment(
    model_hash: bytes, included: int, total_weight: int, salt: bytes, voter: str
) -> bytes:
    """What commit_vote takes: keccak256(abi_encode(model, included, total_weight, salt, voter))."""
    return keccak(
        abi_encode(
            ["bytes32", "uint256[4]", "uint256", "bytes32", "address"],
            [model_hash, words(included), total_weight, salt, voter],
        )
    )


def salt_of(voter: str, round_: int) -> bytes:
    return keccak(text=f"salt {voter} {round_}")


def total_of(jobs: Any, job: JobSetup, round_: int, included: int) -> int:
    """The included trainers' committed weights in the round (what honest voters reveal)."""
    return sum(
        jobs.commit_of(job.id, round_, trainer)[1]
        for index, trainer in enumerate(job.trainers)
        if included >> index & 1
    )


def bitmap(indices: list[int] | range) -> int:
    return sum(1 << i for i in indices)


def funded(balance: int = 1_000 * ETHER) -> str:
    account = boa.env.generate_address()
    boa.env.set_balance(account, balance)
    return account


def node(registry: Any, roles: int, stake: int = 2 * MIN_STAKE) -> str:
    """A fresh account registered with ``roles`` and staked with ``stake`` wei."""
    account = funded()
    with boa.env.prank(account):
        registry.register("http://127.0.0.1:9000", roles, h("metadata"))
        if stake:
            registry.stake(value=stake)
    return account


@dataclass
class JobSetup:
    """A created job with its owner, joined trainers and its committee (joined or drawn)."""

    id: int
    owner: str
    trainers: list[str] = field(default_factory=list)
    aggregators: list[str] = field(default_factory=list)
    volunteers: list[str] = field(default_factory=list)


def join_trainers(jobs: Any, registry: Any, job: JobSetup, count: int) -> None:
    for _ in range(count):
        account = node(registry, TRAINER)
        with boa.env.prank(account):
            jobs.join(job.id, TRAINER)
        job.trainers.append(account)


def make_job(
    jobs: Any,
    registry: Any,
    *,
    trainers: int = 3,
    aggregators: int = 2,
    rounds: int = 2,
    reward: int = REWARD,
    min_trainers: int = 1,
    max_trainers: int | None = None,
    quorum: int = 2,
    trainer_stake: int = TRAINER_STAKE,
    aggregator_stake: int = AGGREGATOR_STAKE,
    weight_cap: int = DECLARED,
    round_deadline: int = ROUND_DEADLINE,
    join_committee: bool = True,
) -> JobSetup:
    """A job with a named committee of ``aggregators`` fresh nodes (each joins unless
    ``join_committee`` is False) and ``trainers`` joined trainers; round 0 runs."""
    owner = funded()
    committee = [node(registry, AGGREGATOR) for _ in range(aggregators)]
    with boa.env.prank(owner):
        job_id = jobs.create_job(
            h("spec"),
            h("model 0"),
            rounds,
            reward,
            min_trainers,
            max_trainers if max_trainers is not None else max(trainers, min_trainers),
            quorum,
            round_deadline,
            committee,
            len(committee),
            0,
            trainer_stake,
            aggregator_stake,
            weight_cap,
            value=rounds * reward,
        )
    setup = JobSetup(id=job_id, owner=owner, aggregators=committee)
    if join_committee:
        for account in committee:
            with boa.env.prank(account):
                jobs.join(job_id, AGGREGATOR)
    join_trainers(jobs, registry, setup, trainers)
    return setup


def make_open_job(
    jobs: Any,
    registry: Any,
    *,
    trainers: int = 3,
    volunteers: int | list[int] = 5,
    committee_size: int = 3,
    quorum: int = 2,
    rounds: int = 2,
    reward: int = REWARD,
    min_trainers: int = 1,
    max_trainers: int | None = None,
    trainer_stake: int = TRAINER_STAKE,
    aggregator_stake: int = AGGREGATOR_STAKE,
    weight_cap: int = DECLARED,
    seal: bool = True,
) -> JobSetup:
    """A job with an open committee: ``volunteers`` fresh aggregator nodes (a count, or a
    list of their stakes) sign up, ``trainers`` join, the signup ends and (unless ``seal``
    is False) anyone seals; ``aggregators`` is then the drawn committee, in order."""
    owner = funded()
    with boa.env.prank(owner):
        job_id = jobs.create_job(
            h("spec"),
            h("model 0"),
            rounds,
            reward,
            min_trainers,
            max_trainers if max_trainers is not None else max(trainers, min_trainers),
            quorum,
            ROUND_DEADLINE,
            [],
            committee_size,
            SIGNUP_PERIOD,
            trainer_stake,
            aggregator_stake,
            weight_cap,
            value=rounds * reward,
        )
    setup = JobSetup(id=job_id, owner=owner)
    stakes = volunteers if isinstance(volunteers, list) else [2 * MIN_STAKE] * volunteers
    for stake in stakes:
        account = node(registry, AGGREGATOR, stake=stake)
        with boa.env.prank(account):
            jobs.join(job_id, AGGREGATOR)
        setup.volunteers.append(account)
    join_trainers(jobs, registry, setup, trainers)
    if seal:
        boa.env.time_travel(seconds=SIGNUP_PERIOD + 1)
        with boa.env.prank(funded()):
            jobs.seal(job_id)
        setup.aggregators = [jobs.aggregator_at(job_id, i) for i in range(committee_size)]
    return setup


def commit_all(jobs: Any, job: JobSetup, round_: int, weights: list[int] | None = None) -> None:
    for index, trainer in enumerate(job.trainers):
        weight = weights[index] if weights else 1
        with boa.env.prank(trainer):
            jobs.commit_update(job.id, round_, h(f"update {round_} {index}"), weight)


def commit_votes(
    jobs: Any, job: JobSetup, round_: int, ballots: list[tuple[str, bytes, int]]
) -> dict[str, int]:
    """Each (aggregator, model, included) commits its vote; their total weights, by voter."""
    totals = {}
    for aggregator, model, included in ballots:
        totals[aggregator] = total_of(jobs, job, round_, included)
        secret = commitment(
            model, included, totals[aggregator], salt_of(aggregator, round_), aggregator
        )
        with boa.env.prank(aggregator):
            jobs.commit_vote(job.id, round_, secret)
    return totals


def reveal(
    jobs: Any,
    job: JobSetup,
    round_: int,
    aggregator: str,
    model: bytes,
    included: int,
    total: int | None = None,
) -> None:
    total = total_of(jobs, job, round_, included) if total is None else total
    with boa.env.prank(aggregator):
        jobs.reveal(job.id, round_, model, words(included), total, salt_of(aggregator, round_))


def vote(jobs: Any, job: JobSetup, round_: int, ballots: list[tuple[str, bytes, int]]) -> None:
    """The ballots' aggregators commit, in order; then (after the vote-commit period, when
    not every voter committed) they reveal, in order. The reveal that brings a result to the
    job's quorum finalizes the round; a reveal after it would revert."""
    totals = commit_votes(jobs, job, round_, ballots)
    if not jobs.reveals_open(job.id):
        boa.env.time_travel(seconds=ROUND_DEADLINE + 1)
    for aggregator, model, included in ballots:
        reveal(jobs, job, round_, aggregator, model, included, totals[aggregator])


def vote_all(
    jobs: Any,
    job: JobSetup,
    round_: int,
    model: bytes,
    included: int,
    *,
    voters: list[str] | None = None,
) -> None:
    """Every aggregator (or ``voters``) votes for the result (see :func:`vote`)."""
    voters = job.aggregators if voters is None else voters
    vote(jobs, job, round_, [(aggregator, model, included) for aggregator in voters])


def claim_round(
    jobs: Any, job: JobSetup, round_: int, model: bytes, included: int, *, voters: list[str] = ()
) -> None:
    """Every included trainer claims its share of a finalized round, and each of ``voters``
    its aggregator share."""
    total = total_of(jobs, job, round_, included)
    for index, trainer in enumerate(job.trainers):
        if included >> index & 1:
            with boa.env.prank(trainer):
                jobs.claim(job.id, round_, model, words(included), total)
    for aggregator in voters:
        with boa.env.prank(aggregator):
            jobs.claim_vote(job.id, round_)


def events(contract: Any, name: str) -> list[Any]:
    """The decoded events called ``name`` that the contract's last call emitted."""
    return [event for event in contract.get_logs() if type(event).__name__ == name]


def run_out_reopens(jobs: Any, job: JobSetup) -> None:
    """Let the current round die: its deadline passes MAX_REOPENS + 1 times, with a reopen
    after each but the last, so the owner may cancel."""
    for _ in range(MAX_REOPENS):
        boa.env.time_travel(seconds=ROUND_DEADLINE + 1)
        with boa.env.prank(funded()):
            jobs.reopen(job.id)
    boa.env.time_travel(seconds=ROUND_DEADLINE + 1)
