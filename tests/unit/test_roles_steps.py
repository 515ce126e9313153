"""One step of the trainer and the aggregator against an in-memory Jobs contract.

The fake contract models, for one job, the rules of ``contracts/Jobs.vy`` the roles meet:
commits kept per parity slot, commit-reveal votes (the vote-commit period ends when every voter
committed or ``round_deadline`` after the first commit), finalization by the reveal that reaches
the quorum, claims with claimed flags, challenges of provably wrong votes, reopens, evictions
and stake locks (the real contract is exercised by the contract tests and tests/e2e). The store
and state database are the real ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

import pytest
import torch

from allmende.chain import Commit, Job
from allmende.chain._binding import to_bytes32
from allmende.chain.events import (
    ChainEvent,
    JobFinished,
    Proposed,
    RoundFinalized,
    UpdateCommitted,
)
from allmende.chain.jobs import (
    MAX_REOPENS,
    RESULT_RING,
    RoundResult,
    vote_commitment,
    vote_key,
)
from allmende.errors import ContractRevert, PeerError
from allmende.learn.aggregate import aggregate
from allmende.net.client import FetchResult
from allmende.node.config import AggregatorSection, TrainerSection
from allmende.node.jobdata import update_metadata
from allmende.node.jobspec import parse_jobspec
from allmende.node.roles.aggregator import AggregatorRole
from allmende.node.roles.trainer import TrainerRole
from allmende.node.submit import initial_model_bytes
from allmende.store.blobs import BlobStore
from allmende.store.codec import decode_blob, decode_state, encode_state
from allmende.store.state import StateDB

ME = "0x00000000000000000000000000000000000000aa"
B = "0x00000000000000000000000000000000000000bb"  # the other committee members
C = "0x00000000000000000000000000000000000000cc"
OWNER = "0x00000000000000000000000000000000000000ee"
T = ["0x0000000000000000000000000000000000000003", "0x0000000000000000000000000000000000000001",
     "0x0000000000000000000000000000000000000002"]  # fmt: skip
MAX_WEIGHT = 1000  # declared weights: the commits below weigh 10, 11 and 12
SPEC_FIELDS: dict[str, Any] = {
    "task": "digits-mlp", "rounds": 2, "min_trainers": 2, "max_trainers": 3, "quorum": 1,
    "reward_per_round": 100, "round_deadline": 60, "norm_bound": 5.0, "seed": 1,
    "optimizer": {"name": "sgd", "lr": 0.1}, "aggregation": {"rule": "fedavg"},
    "weighting": "declared", "max_weight": MAX_WEIGHT,
}  # fmt: skip
SPEC = parse_jobspec(SPEC_FIELDS)
EMPTY = bytes(32)
AGGREGATOR_SHARE_BPS = 2_000  # of each round's 100 wei: 20 to the quorum, 80 to the trainers
SLASH_AMOUNT = 10**17
CHALLENGE_WINDOW = 100
LIFECYCLE = {"seal", "reopen", "evict", "release"}


class Reveal(NamedTuple):
    """A reveal the contract accepted."""

    sender: str
    round: int
    digest: str
    included: int
    total_weight: int


@dataclass
class Member:
    """A committee member's vote record, as the contract's aggregator word and vote slot keep it."""

    committed: int = 0  # attempt + 1 of its latest vote commit (0: none)
    slot: bytes = EMPTY  # its commitment; once revealed, its result's key
    round: int = 0  # round + 1 of its latest reveal (0: none)
    attempt: int = 0  # attempt + 1 of its latest reveal
    included: int = 0  # the included set of its latest reveal
    settled: bool = True  # claimed, forfeited or slashed: nothing to claim or challenge
    removed: bool = False  # slashed: out of the job's later votes


def refused(function: str, why: str) -> ContractRevert:
    return ContractRevert(f"jobs: {why}", function=function)


class FakeJobs:
    """The views and transactions of Jobs the roles use, for one job (id 1). Transactions come
    from ``sender`` (this node; :meth:`by` sends as another account); every one attempted is in
    ``sent``, accepted or not. A transaction's "receipt" is the list of its events."""

    def __init__(self, job: Job, trainers: list[str]) -> None:
        self.record = job
        self.trainer_list = list(trainers)
        self.aggregator_list: list[str] = []  # the committee
        self.volunteer_list: list[str] = []
        self.by_round: dict[int, dict[str, Commit]] = {}  # round -> trainer -> its commit
        self.members: dict[str, Member] = {}  # lower-cased member -> its vote record
        self.phase: list[int] | None = None  # [attempt + 1, vote commits, first commit's time]
        self.tally: Counter[tuple[int, bytes]] = Counter()  # (attempt, result key) -> reveals
        self.results: dict[int, RoundResult] = {}
        self.final_attempt: dict[int, int] = {}  # round -> attempt + 1 that finalized it
        self.claimed: dict[tuple[str, int], int] = {}  # (trainer, round) -> share claimed
        self.trainer_paid: Counter[int] = Counter()  # round -> trainer shares paid
        self.owed: Counter[str] = Counter()
        self.sent: list[tuple[str, str]] = []  # (sender, "function [argument]")
        self.vote_commits: list[tuple[str, int, int, bytes]] = []  # (sender, round, attempt, hash)
        self.reveals: list[Reveal] = []
        self.finalized: list[tuple[int, str, int]] = []  # (round, model hash, included)
        self.slashed: list[tuple[str, int]] = []  # (member, wei taken)
        self.pending: dict[str, tuple[str, int, int, bytes]] = {}  # others' unrevealed votes
        self.joined: list[tuple[str, int]] = []
        self.commit_reads: list[tuple[int, str]] = []
        self.listeners: list[Any] = []  # roles' ``observe``: what the event stream would call
        self.sender = ME
        self.evictable: set[int] = set()  # trainer indices the contract would evict
        self.evicted: set[str] = set()
        self.locks: dict[str, int] = {}  # Registry.lock_of(jobs, 1, node)
        self.clock: Callable[[], float] = time.time  # block.timestamp

    # -- what the tests read and do ------------------------------------------------------------

    @property
    def commits(self) -> dict[str, Commit]:
        """The current round's commits (trainer -> commit); the tests add to it directly."""
        return self.by_round.setdefault(self.record.current_round, {})

    @property
    def calls(self) -> list[str]:
        """The committee, liveness and lock transactions anyone sent (seal, reopen, evict,
        release)."""
        return [tx for _, tx in self.sent if tx.split()[0] in LIFECYCLE]

    def mine(self, *names: str) -> list[str]:
        """The transactions this node sent (only those of ``names``, if given), in order."""
        return [tx for who, tx in self.sent if who == ME and (not names or tx.split()[0] in names)]

    def by(self, sender: str, function: str, *args: Any) -> Any:
        """Send ``function(1, *args)`` from ``sender`` (the contract's own code, not a test's
        wrapper of it)."""
        me, self.sender = self.sender, sender
        try:
            return getattr(FakeJobs, function)(self, 1, *args)
        finally:
            self.sender = me

    def commit_as(self, member: str, digest: str, included: int, total_weight: int) -> None:
        """Another member commits its vote for the result (its salt kept for its reveal)."""
        salt = hashlib.sha256(f"{member}:{self.record.attempt}".encode()).digest()
        self.pending[member] = (digest, included, total_weight, salt)
        commitment = vote_commitment(digest, included, total_weight, salt, member)
        self.by(member, "commit_vote", self.record.current_round, commitment)

    def reveal_as(self, member: str) -> list[ChainEvent]:
        return self.by(member, "reveal", self.record.current_round, *self.pending.pop(member))

    def lose_claim(self, trainer: str, round_: int) -> None:
        """Undo a trainer's claim, as a chain that lost the claim's block does."""
        amount = self.claimed.pop((trainer.lower(), round_))
        self.trainer_paid[round_] -= amount
        self._pay(trainer, -amount)

    def now(self) -> int:
        return int(self.clock())

    # -- views -----------------------------------------------------------------------------------

    def job(self, job_id: int) -> Job:
        return self.record

    def trainer_index(self, job_id: int, address: str) -> int | None:
        lowered = [t.lower() for t in self.trainer_list]
        return lowered.index(address.lower()) if address.lower() in lowered else None

    def trainer_at(self, job_id: int, i: int) -> str:
        return self.trainer_list[i]

    def aggregator_at(self, job_id: int, i: int) -> str:
        return self.aggregator_list[i]

    def aggregators(self, job_id: int) -> list[str]:
        return list(self.aggregator_list)

    def is_aggregator(self, job_id: int, address: str) -> bool:
        """A committee member in good standing."""
        return address.lower() in {a.lower() for a in self.aggregator_list} and not (
            self._member(address).removed
        )

    def is_trainer_active(self, job_id: int, address: str) -> bool:
        lowered = {t.lower() for t in self.trainer_list}
        return address.lower() in lowered and address.lower() not in self.evicted

    def is_volunteer(self, job_id: int, address: str) -> bool:
        return address in self.volunteer_list

    def challenge_window(self) -> int:
        return CHALLENGE_WINDOW

    def commit_of(self, job_id: int, round_: int, trainer: str) -> Commit:
        """Only a trainer's latest commit is kept: empty for any other round."""
        self.commit_reads.append((round_, trainer))
        rounds = [r for r, commits in self.by_round.items() if trainer in commits]
        if not rounds or max(rounds) != round_:
            return Commit(EMPTY, 0)
        return self.by_round[round_][trainer]

    def vote_committed(self, job_id: int, aggregator: str) -> bool:
        return self._member(aggregator).committed == self.record.attempt + 1

    def voted_in_attempt(self, job_id: int, aggregator: str) -> bool:
        """Whether the member revealed in the current attempt."""
        return self._member(aggregator).attempt == self.record.attempt + 1

    def reveals_open(self, job_id: int) -> bool:
        """A vote commit was made in this attempt, and every voter committed or the vote-commit
        period (round_deadline from the first commit) passed."""
        phase = self.phase
        if phase is None or phase[0] != self.record.attempt + 1:
            return False
        return phase[1] >= self._voters() or self.now() > phase[2] + self.record.round_deadline

    def provably_wrong(self, job_id: int, aggregator: str) -> bool:
        return self._wrong(self._member(aggregator))

    def round_result(self, job_id: int, round_: int) -> RoundResult:
        return self.results.get(round_, RoundResult(EMPTY, 0, 0))

    def events(self, receipt: list[ChainEvent]) -> list[ChainEvent]:
        return list(receipt)

    # -- the committee, liveness and locks ---------------------------------------------------------

    def join(self, job_id: int, role: int) -> None:
        self._send("join")
        self.joined.append((self.sender, role))
        if role == 1:
            self.trainer_list.append(self.sender)
        elif not self.record.sealed:
            self.volunteer_list.append(self.sender)
        else:
            self.aggregator_list.append(self.sender)
        stake = self.record.trainer_stake if role == 1 else self.record.aggregator_stake
        self.locks[self.sender] = self.locks.get(self.sender, 0) + stake
        self.record = replace(
            self.record,
            n_trainers=len(self.trainer_list),
            n_active_trainers=len(self.trainer_list),
            n_aggregators=len(self.aggregator_list),
        )

    def seal(self, job_id: int) -> None:
        self._send("seal")
        if self.record.sealed or self.now() <= self.record.signup_end:
            raise refused("seal", "signup not over, or sealed")
        self.aggregator_list = self.volunteer_list[: self.record.committee_size]  # "the draw"
        self.record = replace(
            self.record, sealed=True, round_start=self.now(),
            n_aggregators=len(self.aggregator_list),
        )  # fmt: skip

    def reopen(self, job_id: int) -> None:
        """Once the attempt is over: its deadline passed and, if a vote started, its commit
        period and one more round_deadline for the reveals; at most MAX_REOPENS a round."""
        self._send("reopen")
        job = self.record
        if job.status != 1 or not job.sealed:
            raise refused("reopen", "job is not open, or not sealed")
        over = self.now() > job.round_start + job.round_deadline and (
            self.phase is None
            or self.phase[0] != job.attempt + 1
            or self.now() > self.phase[2] + 2 * job.round_deadline
        )
        if not over:
            raise refused("reopen", "the round's attempt is not over")
        if job.reopens >= MAX_REOPENS:
            raise refused("reopen", "round was already reopened 3 times")
        self.record = replace(
            job, round_start=self.now(), reopens=job.reopens + 1, attempt=job.attempt + 1
        )

    def evict(self, job_id: int, index: int) -> None:
        self._send("evict", str(index))
        if index not in self.evictable:
            raise refused("evict", "the trainer has not missed enough rounds")
        self.evicted.add(self.trainer_list[index].lower())
        self.record = replace(self.record, n_active_trainers=self.record.n_active_trainers - 1)

    def release(self, job_id: int) -> None:
        self._send("release")
        if self.record.status == 1:
            raise refused("release", "job has not ended")
        if self.now() < self.record.round_start + CHALLENGE_WINDOW:
            raise refused("release", "the challenge window has not passed")
        member = self._member(self.sender)
        if self._wrong(member):
            self._slash(self.sender, member)
        self.locks[self.sender] = 0

    # -- the round: commits, votes, finalization ---------------------------------------------------

    def commit_update(self, job_id: int, round_: int, digest: str, weight: int) -> None:
        self._send("commit_update")
        self._check_open_round("commit_update", round_)
        job = self.record
        if not job.sealed:
            raise refused("commit_update", "the committee is not sealed yet")
        if self.now() > job.round_start + job.round_deadline:
            raise refused("commit_update", "round deadline has passed")
        if self.trainer_index(job_id, self.sender) is None:
            raise refused("commit_update", "caller is not a trainer of the job")
        if not (weight == 1 if job.weight_cap == 0 else 1 <= weight <= job.weight_cap):
            raise refused("commit_update", "weight out of range")
        if self.sender.lower() in self.evicted:
            raise refused("commit_update", "caller was evicted from the job")
        if self.sender in self.commits:
            raise refused("commit_update", "already committed this round")
        self.commits[self.sender] = Commit(to_bytes32(digest), weight)

    def commit_vote(self, job_id: int, round_: int, commitment: bytes) -> None:
        self._send("commit_vote")
        self._check_open_round("commit_vote", round_)
        member = self._good_standing("commit_vote")
        job = self.record
        if commitment == EMPTY:
            raise refused("commit_vote", "commitment is empty")
        if member.committed == job.attempt + 1:
            raise refused("commit_vote", "already committed a vote in this attempt")
        if len(self.commits) < job.n_active_trainers and (
            self.now() <= job.round_start + job.round_deadline
        ):
            raise refused(
                "commit_vote", "a trainer has not committed and the deadline has not passed"
            )
        if self._wrong(member):
            raise refused("commit_vote", "caller's last vote is provably wrong")
        if self.phase is None or self.phase[0] != job.attempt + 1:
            self.phase = [job.attempt + 1, 0, self.now()]
        elif self.now() > self.phase[2] + job.round_deadline:
            raise refused("commit_vote", "the vote-commit period is over")
        self.phase[1] += 1
        member.slot, member.committed, member.settled = commitment, job.attempt + 1, True
        self.vote_commits.append((self.sender, round_, job.attempt, commitment))

    def reveal(
        self,
        job_id: int,
        round_: int,
        model_hash: bytes | str,
        included: int,
        total_weight: int,
        salt: bytes,
    ) -> list[ChainEvent]:
        self._send("reveal")
        self._check_open_round("reveal", round_)
        member = self._good_standing("reveal")
        job = self.record
        if member.committed != job.attempt + 1:
            raise refused("reveal", "caller committed no vote in this attempt")
        if member.attempt == job.attempt + 1:
            raise refused("reveal", "already revealed in this attempt")
        if not self.reveals_open(job_id):
            raise refused("reveal", "reveals are not open yet")
        if vote_commitment(model_hash, included, total_weight, salt, self.sender) != member.slot:
            raise refused("reveal", "the reveal does not match the caller's commitment")
        model = to_bytes32(model_hash)
        self._check_result(model, included, total_weight)
        key = vote_key(model, included, total_weight)
        final = self.tally[(job.attempt, key)] + 1 == job.quorum
        committed = {t.lower() for t in self.commits}
        if final and any(self.trainer_list[i].lower() not in committed for i in bits(included)):
            raise refused("reveal", "an included trainer did not commit this round")
        self.tally[(job.attempt, key)] += 1
        member.round, member.attempt, member.included = round_ + 1, job.attempt + 1, included
        member.slot, member.settled = key, False
        self.reveals.append(Reveal(self.sender, round_, model.hex(), included, total_weight))
        where = {"block_number": 12, "tx_hash": "0x", "address": "0x", "job_id": job_id}
        receipt: list[ChainEvent] = [Proposed(
            **where, log_index=0, round=round_, aggregator=self.sender, model_hash=model,
            included=included, total_weight=total_weight,
        )]  # fmt: skip
        if final:
            self._finalize(round_, model, included, total_weight)
            receipt.append(RoundFinalized(
                **where, log_index=1, round=round_, model_hash=model, included=included,
                total_weight=total_weight,
            ))  # fmt: skip
            if self.record.status == 2:
                receipt.append(JobFinished(**where, log_index=2, final_model_hash=model))
        return receipt

    def _finalize(self, round_: int, model: bytes, included: int, total_weight: int) -> None:
        self.finalized.append((round_, model.hex(), included))
        self.results[round_] = RoundResult(model, included, total_weight)
        self.final_attempt[round_] = self.record.attempt + 1
        last = round_ + 1 == self.record.rounds
        self.record = replace(
            self.record, current_round=round_ + 1, model_hash=model, round_start=self.now(),
            attempt=self.record.attempt + 1, reopens=0, status=2 if last else 1,
        )  # fmt: skip

    # -- claims and challenges --------------------------------------------------------------------

    def claim(self, job_id: int, round_: int, result: RoundResult) -> None:
        self._send("claim", str(round_))
        self._check_claims_open("claim")
        recorded = self._result(round_)
        if recorded is None:
            raise refused("claim", "round is not final or too old")
        if key_of(result) != key_of(recorded):
            raise refused("claim", "that is not the round's finalized result")
        index = self.trainer_index(job_id, self.sender)
        if index is None:
            raise refused("claim", "caller is not a trainer of the job")
        if not result.included >> index & 1:
            raise refused("claim", "caller was not included in that round")
        commit = self._commit_slot(self.sender, round_)
        if commit is None:
            raise refused("claim", "caller's commit of that round was overwritten")
        if (self.sender.lower(), round_) in self.claimed:
            raise refused("claim", "already claimed")
        reward = self.record.reward_per_round
        pool = reward - reward * AGGREGATOR_SHARE_BPS // 10_000
        amount = pool * commit.weight // result.total_weight
        if amount == 0:
            raise refused("claim", "the share is 0 wei")
        if self.record.weight_cap and self.trainer_paid[round_] + amount > pool:
            raise refused("claim", "the round's trainer pool is used up")
        self.trainer_paid[round_] += amount
        self.claimed[(self.sender.lower(), round_)] = amount
        self._pay(self.sender, amount)

    def claim_vote(self, job_id: int, round_: int) -> None:
        self._send("claim_vote", str(round_))
        self._check_claims_open("claim_vote")
        member = self._member(self.sender)
        if member.settled or member.round != round_ + 1:
            raise refused("claim_vote", "caller has no unclaimed vote for that round")
        recorded = self._result(round_)
        if recorded is None:
            raise refused("claim_vote", "round is not final or too old")
        if self.final_attempt.get(round_) != member.attempt:
            raise refused("claim_vote", "caller's vote was not in the finalizing attempt")
        if member.slot != key_of(recorded):
            raise refused("claim_vote", "caller voted for another result")
        member.settled = True
        self._pay(self.sender, self.record.reward_per_round * AGGREGATOR_SHARE_BPS // 10_000
                  // self.record.quorum)  # fmt: skip

    def challenge(self, job_id: int, aggregator: str) -> None:
        self._send("challenge", aggregator)
        member = self._member(aggregator)
        if not self._wrong(member):
            raise refused("challenge", "that vote is not provably wrong")
        self._slash(aggregator, member)

    # -- the contract's internals ------------------------------------------------------------------

    def _send(self, function: str, argument: str = "") -> None:
        self.sent.append((self.sender, f"{function} {argument}".strip()))

    def _check_open_round(self, function: str, round_: int) -> None:
        if self.record.status != 1:
            raise refused(function, "job is not open")
        if round_ != self.record.current_round:
            raise refused(function, "wrong round")

    def _member(self, address: str) -> Member:
        return self.members.setdefault(address.lower(), Member())

    def _good_standing(self, function: str) -> Member:
        if not self.is_aggregator(1, self.sender):
            raise refused(function, "caller is not an aggregator of the job in good standing")
        return self._member(self.sender)

    def _voters(self) -> int:
        return sum(not self._member(a).removed for a in self.aggregator_list)

    def _check_result(self, model: bytes, included: int, total_weight: int) -> None:
        job = self.record
        count = included.bit_count()
        if model == EMPTY:
            raise refused("reveal", "model hash is empty")
        if included >> job.n_trainers:
            raise refused("reveal", "included names a trainer index that has not joined")
        if count < job.min_trainers:
            raise refused("reveal", "included has fewer than min_trainers trainers")
        if job.weight_cap == 0 and total_weight != count:
            raise refused("reveal", "total_weight must equal the included count")
        if job.weight_cap and not count <= total_weight <= count * job.weight_cap:
            raise refused("reveal", "total_weight is out of range")

    def _result(self, round_: int) -> RoundResult | None:
        """A finalized round's result while the contract keeps it (its last 8 rounds)."""
        if round_ not in self.results or self.record.current_round - round_ > RESULT_RING:
            return None
        return self.results[round_]

    def _commit_slot(self, trainer: str, round_: int) -> Commit | None:
        """The trainer's commit of ``round_`` unless a later commit of the same parity (its
        slot) overwrote it."""
        same_parity = [
            r for r, commits in self.by_round.items()
            if r % 2 == round_ % 2 and trainer.lower() in {t.lower() for t in commits}
        ]  # fmt: skip
        if not same_parity or max(same_parity) != round_:
            return None
        return next(c for t, c in self.by_round[round_].items() if t.lower() == trainer.lower())

    def _wrong(self, member: Member) -> bool:
        """The latest, unsettled reveal was in the attempt that finalized its round, named the
        finalized included set, and another model hash or total weight."""
        if member.settled or member.round == 0:
            return False
        recorded = self._result(member.round - 1)
        return (
            recorded is not None
            and self.final_attempt[member.round - 1] == member.attempt
            and recorded.included == member.included
            and member.slot != key_of(recorded)
        )

    def _slash(self, address: str, member: Member) -> None:
        member.settled = True
        taken = min(SLASH_AMOUNT, self.locks.get(address, 0))
        self.locks[address] = self.locks.get(address, 0) - taken
        self.slashed.append((address, taken))
        if taken:
            member.removed = True

    def _check_claims_open(self, function: str) -> None:
        if self.record.status != 1 and self.now() >= self.record.round_start + CHALLENGE_WINDOW:
            raise refused(function, "the claim period is over")

    def _pay(self, account: str, amount: int) -> None:
        self.owed[account] += amount
        self.record = replace(
            self.record, escrow=self.record.escrow - amount, paid=self.record.paid + amount
        )


def key_of(result: RoundResult) -> bytes:
    return vote_key(result.model_hash, result.included, result.total_weight)


def bits(bitmap: int) -> list[int]:
    return [i for i in range(bitmap.bit_length()) if bitmap >> i & 1]


@dataclass
class FakeDirectory:
    async def endpoints(self, addresses: list[str], *, exclude: str = "") -> list[str]:
        return [f"http://{a}" for a in addresses if a.lower() != exclude.lower()]


class FakePeers:
    """Serves blobs from ``network`` (digest -> bytes); anything else is "not found"."""

    def __init__(self, store: BlobStore, network: dict[str, bytes] | None = None) -> None:
        self.store = store
        self.network: dict[str, bytes] = {} if network is None else network
        self.asked: list[tuple[str, list[str]]] = []

    async def fetch_blob(self, digest: str, peers: Any, *, max_bytes: int | None = None):
        self.asked.append((digest, list(peers)))
        if not self.store.has(digest):
            if digest not in self.network:
                raise PeerError(f"No peer served blob {digest}.")
            self.store.put_bytes(self.network[digest])
        return FetchResult(digest, self.store.size(digest), None)


class FakeRegistry:
    def __init__(self) -> None:
        self.jobs: FakeJobs | None = None

    def lock_of(self, slasher: str, job_id: int, address: str) -> int:
        assert slasher == JOBS_ADDRESS and self.jobs is not None
        return self.jobs.locks.get(address, 0)


JOBS_ADDRESS = "0x00000000000000000000000000000000000000dd"


def make_node(path: Path, network: dict[str, bytes] | None = None) -> SimpleNamespace:
    """A node's context: its own blob store and state database, peers serving ``network``."""
    store = BlobStore(path / "blobs")
    state = StateDB.open(path / "state.sqlite")
    peers = FakePeers(store, network)
    chain = SimpleNamespace(
        registry=FakeRegistry(),
        deployment=SimpleNamespace(chain_id=1, jobs=SimpleNamespace(address=JOBS_ADDRESS)),
    )
    return SimpleNamespace(
        address=ME, store=store, state=state, peers=peers, require_peers=lambda: peers,
        require_chain=lambda: chain, chain=chain,
    )  # fmt: skip


@pytest.fixture
def node(tmp_path: Path):
    """This node; ``node.another(name)`` is one more node (same address and blob network, its
    own store and state database), as another honest aggregator or a node that lost its disk."""
    opened: list[SimpleNamespace] = []

    def another(name: str) -> SimpleNamespace:
        ctx = make_node(tmp_path / name, first.peers.network)
        opened.append(ctx)
        return ctx

    first = make_node(tmp_path / "node")
    first.another = another
    opened.append(first)
    yield first
    for ctx in opened:
        ctx.state.close()


def publish(peers: FakePeers, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    peers.network[digest] = data
    return digest


def make_job(
    peers: FakePeers, *, n_trainers: int, round_start: float, quorum: int = 1, rounds: int = 2
) -> Job:
    spec = parse_jobspec({**SPEC_FIELDS, "quorum": quorum, "rounds": rounds})
    spec_hash = publish(peers, spec.canonical_bytes())
    model_hash = publish(peers, initial_model_bytes(SPEC))
    return Job(
        owner=OWNER, spec_hash=bytes.fromhex(spec_hash), model_hash=bytes.fromhex(model_hash),
        rounds=rounds, reward_per_round=100, min_trainers=2, max_trainers=3, quorum=quorum,
        round_deadline=60, escrow=100 * rounds, current_round=0, round_start=int(round_start),
        status=1, n_trainers=n_trainers, n_aggregators=0, committee_size=spec.committee_size,
        signup_end=1, sealed=True, trainer_stake=0, aggregator_stake=spec.aggregator_stake,
        weight_cap=spec.weight_cap, attempt=0, reopens=0, n_active_trainers=n_trainers,
        n_volunteers=0, paid=0,
    )  # fmt: skip


class Clock:
    """One clock for the chain's block times and the roles' machine clock."""

    def __init__(self, at: float) -> None:
        self.at = at

    def time(self) -> float:
        return self.at


def frozen_clock(monkeypatch: pytest.MonkeyPatch, jobs: FakeJobs, at: float) -> Clock:
    clock = Clock(at)
    monkeypatch.setattr("allmende.node.roles.base.time", clock)
    jobs.clock = clock.time
    return clock


def trainer_role(ctx: Any, jobs: FakeJobs) -> TrainerRole:
    ctx.chain.registry.jobs = jobs
    role = TrainerRole(
        TrainerSection(allowed_tasks=["digits-mlp"], dataset={"num_parts": 3, "part": 0})
    )
    role.attach(ctx, jobs=jobs, directory=FakeDirectory())  # type: ignore[arg-type]
    return role


def aggregator_role(ctx: Any, jobs: FakeJobs, grace: float = 10.0) -> AggregatorRole:
    ctx.chain.registry.jobs = jobs
    role = AggregatorRole(AggregatorSection(fetch_grace_seconds=grace))
    role.attach(ctx, jobs=jobs, directory=FakeDirectory())  # type: ignore[arg-type]
    return role


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- trainer ---------------------------------------------------------------------------------


def test_trainer_joins_trains_commits_once_and_recomputes_the_same_bytes(node) -> None:
    jobs = FakeJobs(make_job(node.peers, n_trainers=0, round_start=9e9), [])
    role = trainer_role(node, jobs)
    assert run(role.step(1)) is False
    assert jobs.joined == [(ME, 1)]
    assert ME not in jobs.commits  # joining is one step, training the next
    run(role.step(1))
    commit = jobs.commits[ME]
    examples = len(role.local_data(role.plans[1].task))
    assert commit.weight == min(examples, MAX_WEIGHT) > 1  # declared weights: its examples
    update = decode_state(node.store.read_bytes(commit.update_hash.hex()))
    assert node.store.has(commit.update_hash.hex())
    run(role.step(1))  # committed already: nothing happens
    assert jobs.mine("commit_update") == ["commit_update"]
    # a restarted node that lost its commit (crash before the transaction) makes the same bytes
    jobs.commits.clear()
    run(trainer_role(node, jobs).step(1))
    assert jobs.commits[ME] == commit
    assert all(torch.equal(update[k], v) for k, v in decode_state(
        node.store.read_bytes(commit.update_hash.hex())).items())  # fmt: skip


def test_trainer_serves_its_update_only_once_its_commit_is_mined(node) -> None:
    """Front-running a copy: while the commit is pending (its hash public in a mempool) nobody
    can fetch the blob, so a copier learns the tensors only after the commit is in a block."""
    jobs = FakeJobs(make_job(node.peers, n_trainers=1, round_start=9e9), [ME])
    stored_when_committed: list[bool] = []
    real_commit = jobs.commit_update

    def watched_commit(job_id: int, round_: int, digest: str, weight: int) -> None:
        stored_when_committed.append(node.store.has(digest))
        real_commit(job_id, round_, digest, weight)

    jobs.commit_update = watched_commit  # type: ignore[method-assign]
    run(trainer_role(node, jobs).step(1))
    digest = jobs.commits[ME].update_hash.hex()
    assert stored_when_committed == [False]
    blob = decode_blob(node.store.read_bytes(digest))  # served from now on
    assert blob.metadata == {"allmende.job": "1", "allmende.round": "0", "allmende.trainer": ME}


def test_trainer_that_crashed_between_commit_and_store_serves_the_same_bytes(node) -> None:
    jobs = FakeJobs(make_job(node.peers, n_trainers=1, round_start=9e9), [ME])
    run(trainer_role(node, jobs).step(1))
    digest = jobs.commits[ME].update_hash.hex()
    original = node.store.read_bytes(digest)
    node.store.delete(digest)  # the crash came before the blob was stored
    run(trainer_role(node, jobs).step(1))  # the restarted node: committed, nothing to serve
    assert node.store.read_bytes(digest) == original
    assert len(jobs.commits) == 1  # and it did not commit again


def test_trainer_asks_the_chain_for_its_commit_only_when_it_cannot_know(node) -> None:
    jobs = FakeJobs(make_job(node.peers, n_trainers=1, round_start=9e9), [ME])
    role = trainer_role(node, jobs)
    run(role.step(1))  # a fresh process: the chain says whether it committed in round 0
    assert jobs.commit_reads == [(0, ME)] and ME in jobs.commits

    def next_round(round_: int) -> None:  # the same model again: only the round matters here
        jobs.record = replace(jobs.record, current_round=round_)
        jobs.commit_reads.clear()

    next_round(1)
    run(role.step(1))  # it committed in round 0, so not yet in round 1
    assert jobs.commit_reads == [] and ME in jobs.commits

    next_round(2)
    jobs.commits[ME] = Commit(b"\x01" * 32, 5)  # its transaction went through, the receipt lost
    with pytest.raises(ContractRevert):
        run(role.step(1))
    run(role.step(1))  # unsure after a failed commit: the chain says it committed
    assert jobs.commit_reads == [(2, ME)] and jobs.commits[ME].weight == 5


def test_trainer_does_not_train_after_the_deadline(node) -> None:
    jobs = FakeJobs(make_job(node.peers, n_trainers=1, round_start=0), [ME])
    run(trainer_role(node, jobs).step(1))
    assert jobs.commits == {} and jobs.mine() == []


def test_trainer_refuses_a_full_job(node, caplog) -> None:
    jobs = FakeJobs(make_job(node.peers, n_trainers=3, round_start=9e9), T)
    assert run(trainer_role(node, jobs).step(1)) is True
    assert jobs.joined == []
    assert "already has its 3 trainers" in caplog.text


def test_trainer_waits_while_the_spec_is_unavailable(node) -> None:
    jobs = FakeJobs(make_job(node.peers, n_trainers=0, round_start=9e9), [])
    node.peers.network.clear()
    assert run(trainer_role(node, jobs).step(1)) is False  # asks again later
    assert jobs.joined == []


def finalize_as(jobs: FakeJobs, member: str, included: int) -> int:
    """``member``, the committee of a quorum-1 job, votes for the round's global model with
    the commits of ``included``: the round is final. Returns the result's total weight."""
    total = sum(jobs.commits[jobs.trainer_list[i]].weight for i in bits(included))
    jobs.commit_as(member, jobs.record.model_hash.hex(), included, total)
    round_ = jobs.record.current_round
    jobs.reveal_as(member)
    assert jobs.finalized[-1][0] == round_
    return total


def trainer_share(weight: int, total_weight: int) -> int:
    """A trainer's claim: the round's reward less the aggregators' share, by weight."""
    return (100 - 100 * AGGREGATOR_SHARE_BPS // 10_000) * weight // total_weight


def test_a_trainer_claims_its_share_of_each_finalized_round_once_and_a_lost_claim_again(
    node,
) -> None:
    jobs = FakeJobs(make_job(node.peers, n_trainers=2, round_start=9e9), [ME, T[0]])
    jobs.aggregator_list = [B]
    role = trainer_role(node, jobs)
    shares = []
    for round_ in (0, 1):
        run(role.step(1))  # claims what is due, then trains and commits in this round
        jobs.by(T[0], "commit_update", round_, "11" * 32, 7)
        shares.append(trainer_share(jobs.commits[ME].weight, finalize_as(jobs, B, 0b11)))
    assert jobs.record.status == 2  # finished; the share of its last round is still due
    assert jobs.mine("claim") == ["claim 0"] and jobs.owed[ME] == shares[0] > 0
    assert run(role.step(1)) is True  # claims round 1; it locked nothing: done with the job
    run(role.step(1))
    run(trainer_role(node, jobs).step(1))  # a restarted node: its state database says claimed
    assert jobs.mine("claim") == ["claim 0", "claim 1"]  # once each
    assert jobs.owed[ME] == jobs.record.paid == sum(shares)
    jobs.lose_claim(ME, 1)  # the chain lost the claim's block (a rollback) ...
    run(role.step(1))
    assert jobs.mine("claim") == ["claim 0", "claim 1"] and jobs.owed[ME] == shares[0]
    role.reconcile()  # ... which the event stream noticed: the role claims again
    run(role.step(1))
    assert jobs.mine("claim") == ["claim 0", "claim 1", "claim 0", "claim 1"]
    assert jobs.owed[ME] == sum(shares)  # round 0's claim stood: sent again, refused


def test_a_restarted_trainer_claims_before_its_commit_overwrites_the_round(node) -> None:
    """The contract keeps a trainer's commits of its last two rounds: a process that starts in
    round r + 2 with the share of round r unclaimed claims it before it commits again."""
    job = make_job(node.peers, n_trainers=3, round_start=9e9, rounds=3)
    jobs = FakeJobs(job, [ME, T[0], T[1]])
    jobs.aggregator_list = [B]
    run(trainer_role(node, jobs).step(1))  # commits in round 0; then the process stops
    for trainer in T[:2]:
        jobs.by(trainer, "commit_update", 0, "11" * 32, 7)
    share = trainer_share(jobs.commits[ME].weight, finalize_as(jobs, B, 0b111))
    for trainer in T[:2]:
        jobs.by(trainer, "commit_update", 1, "22" * 32, 7)
    jobs.clock = lambda: time.time() + 3600  # round 1's deadline passes without this node
    finalize_as(jobs, B, 0b110)
    jobs.clock = time.time  # round 2 started "in an hour": its deadline is far
    run(trainer_role(node, jobs).step(1))  # a new process, in round 2
    assert jobs.mine("claim", "commit_update") == ["commit_update", "claim 0", "commit_update"]
    assert jobs.owed[ME] == share > 0


# -- aggregator ------------------------------------------------------------------------------


def commit_updates(
    node: Any,
    jobs: FakeJobs,
    states: dict[str, dict[str, torch.Tensor] | bytes],
    *,
    announce: bool = True,
    block: int = 10,
) -> None:
    """The trainers commit ``states`` (tensors, encoded as each trainer's own update, or the
    blob's bytes as they are) in ``block``, in the order given; with ``announce``, the roles
    see the events too (without it, the commits happened in blocks the roles' event stream has
    not read yet)."""
    for index, (trainer, state) in enumerate(states.items()):
        round_ = jobs.record.current_round
        blob = state if isinstance(state, bytes) else own_update(trainer, round_, state)
        digest = publish(node.peers, blob)
        commit = jobs.commits[trainer] = Commit(bytes.fromhex(digest), 10 + T.index(trainer))
        event = UpdateCommitted(
            block_number=block, log_index=index, tx_hash="0x", address="0x", job_id=1,
            round=jobs.record.current_round, trainer=trainer, update_hash=commit.update_hash,
            weight=commit.weight,
        )  # fmt: skip
        for observe in jobs.listeners if announce else ():
            observe(event)


def own_update(trainer: str, round_: int, state: dict[str, torch.Tensor], job_id: int = 1) -> bytes:
    """``state`` as ``trainer``'s own update blob for the round (as a trainer node writes it)."""
    return encode_state(state, metadata=update_metadata(job_id, round_, trainer))


def trained_like(seed: int) -> dict[str, torch.Tensor]:
    initial = decode_state(initial_model_bytes(SPEC))
    generator = torch.Generator().manual_seed(seed)
    return {k: v + 0.01 * torch.randn(v.shape, generator=generator) for k, v in initial.items()}


def joined_aggregator(node: Any, job: Job, grace: float = 10.0) -> tuple[FakeJobs, AggregatorRole]:
    """This node as a member of the job's committee (with B and C when it has 3 seats), each
    member's aggregator stake locked."""
    jobs = FakeJobs(job, T)
    jobs.aggregator_list = [ME, B, C][: job.committee_size]
    jobs.locks = {member: job.aggregator_stake for member in jobs.aggregator_list}
    jobs.record = replace(jobs.record, n_aggregators=len(jobs.aggregator_list))
    role = aggregator_role(node, jobs, grace)
    jobs.listeners.append(role.observe)
    return jobs, role


def committed_vote(jobs: FakeJobs, role: AggregatorRole) -> tuple[str, int, int]:
    """(model hash, included, total weight) of this node's vote commit in the current attempt:
    the vote it saved, checked against the commitment on chain."""
    job = jobs.record
    saved = role.saved_proposal(1, job.current_round, job.attempt)
    assert saved is not None
    where = (ME, job.current_round, job.attempt)
    (commitment,) = [c for who, r, a, c in jobs.vote_commits if (who, r, a) == where]
    assert vote_commitment(*saved, ME) == commitment
    return saved[:3]


def finalize_lines(caplog: Any) -> list[str]:
    """The aggregator's "proposed" and "finalized" lines, in order (the benchmarks parse them)."""
    return [
        r.getMessage() for r in caplog.records
        if r.name == "allmende.node.roles.aggregator"
        and (": proposed model" in r.getMessage() or ": finalized model" in r.getMessage())
    ]  # fmt: skip


def test_aggregator_waits_for_every_commit_then_proposes_and_finalizes(node, caplog) -> None:
    caplog.set_level(logging.INFO, logger="allmende.node.roles.aggregator")
    jobs, role = joined_aggregator(node, make_job(node.peers, n_trainers=3, round_start=9e9))
    states = {t: trained_like(i) for i, t in enumerate(T)}
    commit_updates(node, jobs, {T[0]: states[T[0]], T[1]: states[T[1]]})
    run(role.step(1))
    assert jobs.mine() == []  # one trainer has not committed and the deadline is far
    commit_updates(node, jobs, {T[2]: states[T[2]]})
    run(role.step(1))
    (reveal,) = jobs.reveals
    assert reveal[:2] == (ME, 0) and reveal[3:] == (0b111, 10 + 11 + 12)
    initial = decode_state(initial_model_bytes(SPEC))
    expected = aggregate("fedavg", initial, [(t, states[t], 10 + T.index(t)) for t in T], {})
    assert decode_state(node.store.read_bytes(reveal.digest)).keys() == expected.keys()
    assert encode_state(expected) == node.store.read_bytes(reveal.digest)
    # the only voter: its commit ends the vote-commit period, its reveal completes quorum 1
    assert jobs.mine() == ["commit_vote", "reveal"]
    assert jobs.finalized == [(0, reveal.digest, 0b111)] and jobs.record.current_round == 1
    (proposed, finalized) = finalize_lines(caplog)
    assert proposed.startswith("Job 1 round 0: proposed model ")
    assert finalized == f"Job 1 round 0: finalized model {reveal.digest[:16]}."
    run(role.step(1))
    assert jobs.mine() == ["commit_vote", "reveal", "claim_vote 0"]  # round 1 waits for commits
    # updates are asked for from their author first
    asked = dict(node.peers.asked)
    assert asked[jobs.by_round[0][T[1]].update_hash.hex()][0] == f"http://{T[1]}"


def test_aggregator_reads_no_commit_while_it_waits_for_the_announcements(node) -> None:
    jobs, role = joined_aggregator(node, make_job(node.peers, n_trainers=3, round_start=9e9))
    states = {t: trained_like(i) for i, t in enumerate(T)}
    commit_updates(node, jobs, {T[0]: states[T[0]], T[1]: states[T[1]]})
    commit_updates(node, jobs, {T[2]: states[T[2]]}, announce=False)  # in an unread block
    run(role.step(1))
    assert jobs.commit_reads == []  # the deadline is far: wait for the events
    assert jobs.mine() == []
    role.observe(
        UpdateCommitted(
            block_number=11, log_index=0, tx_hash="0x", address="0x", job_id=1, round=0,
            trainer=T[2], update_hash=jobs.commits[T[2]].update_hash,
            weight=jobs.commits[T[2]].weight,
        )
    )  # fmt: skip
    run(role.step(1))
    assert jobs.commit_reads == []
    assert jobs.reveals and jobs.reveals[0].included == 0b111


def test_aggregator_reads_unannounced_commits_before_going_ahead_without_them(
    node, monkeypatch
) -> None:
    """After the deadline the aggregator may go ahead with fewer trainers, but only with the
    chain's word that the others did not commit: events it has not read yet may hold them."""
    now = 1_000_000.0
    job = make_job(node.peers, n_trainers=3, round_start=now)
    jobs, role = joined_aggregator(node, job)
    states = {t: trained_like(i) for i, t in enumerate(T)}
    commit_updates(node, jobs, {T[0]: states[T[0]], T[1]: states[T[1]]})
    commit_updates(node, jobs, {T[2]: states[T[2]]}, announce=False)
    frozen_clock(monkeypatch, jobs, now + job.round_deadline + 1)
    run(role.step(1))
    assert jobs.commit_reads == [(0, T[2])]  # only the one not announced
    assert jobs.reveals[0].included == 0b111  # and it is included, as every aggregator would


def test_aggregator_decides_on_missing_commits_only_once_it_could_go_ahead(
    node, monkeypatch
) -> None:
    now = 1_000_000.0
    job = make_job(node.peers, n_trainers=3, round_start=now, quorum=2)
    jobs, role = joined_aggregator(node, job, grace=30.0)
    commit_updates(node, jobs, {T[0]: trained_like(0)})
    commit_updates(node, jobs, {T[1]: trained_like(1)}, announce=False)
    frozen_clock(monkeypatch, jobs, now + job.round_deadline + 1)
    run(role.step(1))
    # One announced commit is fewer than min_trainers: nothing to decide, so nothing is read;
    # the stream brings the other commit's event in time.
    assert (jobs.commit_reads, jobs.mine()) == ([], [])
    commit_updates(node, jobs, {T[1]: trained_like(1)})
    run(role.step(1))
    assert jobs.commit_reads == [(0, T[2])]  # T[2] never committed: the chain says so
    assert committed_vote(jobs, role)[1] == 0b011
    jobs.commit_reads.clear()
    run(role.step(1))
    assert jobs.commit_reads == []  # committed, the reveals not open yet: nothing to read
    assert jobs.mine() == ["commit_vote"] and jobs.finalized == []


def test_aggregator_downloads_each_announced_update_before_the_round_is_complete(node) -> None:
    jobs, role = joined_aggregator(node, make_job(node.peers, n_trainers=3, round_start=9e9))

    async def scenario() -> None:
        await role.step(1)  # reads the job: nobody committed yet
        commit_updates(node, jobs, {T[1]: trained_like(1)})  # the stream calls observe here
        await asyncio.gather(*role._prefetching)

    run(scenario())
    digest = jobs.commits[T[1]].update_hash.hex()
    assert node.store.has(digest)  # downloaded while two trainers have still to commit
    asked, peers = node.peers.asked[-1]
    assert (asked, peers[0]) == (digest, f"http://{T[1]}")  # from its author first
    assert jobs.mine() == []


def test_aggregator_uses_the_updates_it_checked_when_they_were_announced(node) -> None:
    jobs, role = joined_aggregator(node, make_job(node.peers, n_trainers=3, round_start=9e9))
    states = {t: trained_like(i) for i, t in enumerate(T)}

    async def scenario() -> None:
        await role.step(1)
        commit_updates(node, jobs, {T[0]: states[T[0]], T[1]: states[T[1]]})
        await asyncio.gather(*role._prefetching)
        early = jobs.commits[T[1]].update_hash.hex()
        node.store.path(early).unlink()  # gone from the store and from every peer:
        del node.peers.network[early]  # only the tensors decoded on arrival are left
        commit_updates(node, jobs, {T[2]: states[T[2]]})
        await asyncio.gather(*role._prefetching)
        await role.step(1)

    run(scenario())
    (reveal,) = jobs.reveals
    assert reveal.included == 0b111  # trainer 1's update counted without being read again
    initial = decode_state(initial_model_bytes(SPEC))
    expected = aggregate("fedavg", initial, [(t, states[t], 10 + T.index(t)) for t in T], {})
    assert node.store.read_bytes(reveal.digest) == encode_state(expected)


def test_aggregator_starts_a_round_from_the_model_it_stored_and_checks_its_vote_once_a_round(
    node,
) -> None:
    jobs, role = joined_aggregator(node, make_job(node.peers, n_trainers=3, round_start=9e9))
    vote_reads: list[int] = []
    real_voted = jobs.voted_in_attempt

    def counted_voted(job_id: int, aggregator: str) -> bool:
        vote_reads.append(jobs.record.current_round)
        return real_voted(job_id, aggregator)

    jobs.voted_in_attempt = counted_voted  # type: ignore[method-assign]
    for round_ in (0, 1):
        states = {t: trained_like(10 * round_ + i) for i, t in enumerate(T)}
        commit_updates(node, jobs, states)
        run(role.step(1))
        assert jobs.finalized[-1][0] == round_
    round_1_model = jobs.finalized[0][1]  # the global model of round 1, stored by this node
    assert round_1_model not in [digest for digest, _ in node.peers.asked]  # not read back
    assert vote_reads == [0, 1]  # once before each vote: one of a process could predate it
    # and the round-1 result is still FedAvg over the round-1 global model
    global_1 = decode_state(node.store.read_bytes(round_1_model))
    expected = aggregate("fedavg", global_1, [(t, states[t], 10 + T.index(t)) for t in T], {})
    assert node.store.read_bytes(jobs.finalized[1][1]) == encode_state(expected)


def test_aggregator_checks_each_update_once_where_its_bytes_enter(node, monkeypatch) -> None:
    import allmende.learn.aggregate as aggregate_module
    import allmende.store.codec as codec_module

    checked: list[int] = []
    decoded: list[int] = []
    real_check, real_decode = aggregate_module.check_update, codec_module.decode_blob

    def counted_check(update, reference):  # type: ignore[no-untyped-def]
        checked.append(len(update))
        return real_check(update, reference)

    def counted_decode(data, *args, **kwargs):  # type: ignore[no-untyped-def]
        decoded.append(len(data))
        return real_decode(data, *args, **kwargs)

    updates = [{t: trained_like(10 * round_ + i) for i, t in enumerate(T)} for round_ in (0, 1)]
    monkeypatch.setattr(aggregate_module, "check_update", counted_check)
    monkeypatch.setattr(codec_module, "decode_blob", counted_decode)
    jobs, role = joined_aggregator(node, make_job(node.peers, n_trainers=3, round_start=9e9))
    for round_ in (0, 1):
        commit_updates(node, jobs, updates[round_])
        run(role.step(1))
        assert jobs.finalized[-1][0] == round_
    # Round 0: the initial model and three updates, each decoded and checked once; round 1:
    # three updates (its global model is the one this node stored, neither decoded nor checked).
    assert len(checked) == len(decoded) == 1 + 3 + 3


def test_aggregator_leaves_out_bad_updates_deterministically(node) -> None:
    huge = {k: v * 1000 for k, v in trained_like(1).items()}  # over the norm bound
    wrong_shape = {"0.weight": torch.zeros(3, 3)}
    jobs, role = joined_aggregator(node, make_job(node.peers, n_trainers=3, round_start=9e9))
    commit_updates(node, jobs, {T[0]: trained_like(0), T[1]: huge, T[2]: wrong_shape})
    run(role.step(1))
    assert jobs.mine() == []  # one good update is fewer than min_trainers (2)
    other = node.another("other")
    jobs, role = joined_aggregator(other, make_job(other.peers, n_trainers=3, round_start=9e9))
    commit_updates(other, jobs, {T[0]: trained_like(0), T[1]: huge, T[2]: trained_like(2)})
    run(role.step(1))
    assert jobs.reveals[0].included == 0b101  # trainer 1's update moved the model too far


def left_out(caplog: Any, trainer: str) -> list[str]:
    """The aggregator's lines leaving ``trainer``'s update out."""
    return [
        r.getMessage() for r in caplog.records
        if r.name == "allmende.node.roles.aggregator"
        and f"leaving out {trainer}'s" in r.getMessage()
    ]  # fmt: skip


def test_aggregator_leaves_out_a_trainer_that_committed_anothers_update_hash(node, caplog) -> None:
    jobs, role = joined_aggregator(node, make_job(node.peers, n_trainers=3, round_start=9e9))
    original = own_update(T[0], 0, trained_like(0))
    commit_updates(node, jobs, {T[0]: original, T[1]: trained_like(1), T[2]: original})
    run(role.step(1))
    assert jobs.reveals[0].included == 0b011  # T[2] committed T[0]'s bytes: left out, not paid
    (line,) = left_out(caplog, T[2])
    assert "(a copy): its blob names job 1, round 0, trainer " + T[0] in line, line
    run(role.step(1))
    assert len(left_out(caplog, T[2])) == 1  # logged once


def test_aggregator_leaves_out_an_update_from_another_round(node, caplog) -> None:
    jobs, role = joined_aggregator(node, make_job(node.peers, n_trainers=3, round_start=9e9))
    replayed = own_update(T[2], 5, trained_like(2))  # its own, but made for round 5
    commit_updates(node, jobs, {T[0]: trained_like(0), T[1]: trained_like(1), T[2]: replayed})
    run(role.step(1))
    assert jobs.reveals[0].included == 0b011
    assert "round 5" in left_out(caplog, T[2])[0]


def test_aggregator_leaves_out_the_same_tensors_rewrapped_by_a_later_commit(node, caplog) -> None:
    tensors = trained_like(0)
    jobs, role = joined_aggregator(node, make_job(node.peers, n_trainers=3, round_start=9e9))
    commit_updates(node, jobs, {T[0]: tensors, T[2]: trained_like(2)}, block=10)
    commit_updates(node, jobs, {T[1]: tensors}, block=11)  # re-wrapped under its own name
    run(role.step(1))
    assert jobs.reveals[0].included == 0b101
    (line,) = left_out(caplog, T[1])
    assert f"those of {T[0]}'s update, committed before it (block 10, log 0)" in line, line


def test_aggregator_keeps_the_first_commit_of_the_same_tensors_not_the_lowest_address(
    node,
) -> None:
    tensors = trained_like(0)
    jobs, role = joined_aggregator(node, make_job(node.peers, n_trainers=3, round_start=9e9))
    commit_updates(node, jobs, {T[1]: tensors}, block=10)  # T[1] (address ...01) first
    commit_updates(node, jobs, {T[2]: trained_like(2), T[0]: tensors}, block=10)  # logs 0 and 1
    run(role.step(1))
    assert jobs.reveals[0].included == 0b110  # T[0] committed the same tensors later in the block


def test_aggregator_leaves_out_the_global_model_unchanged(node, caplog) -> None:
    initial = decode_state(initial_model_bytes(SPEC))
    jobs, role = joined_aggregator(node, make_job(node.peers, n_trainers=3, round_start=9e9))
    commit_updates(node, jobs, {T[0]: trained_like(0), T[1]: trained_like(1), T[2]: initial})
    run(role.step(1))
    assert jobs.reveals[0].included == 0b011
    assert "global model unchanged (a zero update)" in left_out(caplog, T[2])[0]
    # the model's own blob (no author at all) is left out as well, by a node aggregating anew
    other = node.another("other")
    jobs, role = joined_aggregator(other, make_job(other.peers, n_trainers=3, round_start=9e9))
    bare = initial_model_bytes(SPEC)
    commit_updates(other, jobs, {T[0]: trained_like(0), T[1]: trained_like(1), T[2]: bare})
    run(role.step(1))
    assert jobs.reveals[0].included == 0b011
    assert len(left_out(caplog, T[2])) == 2


def test_aggregators_seeing_copies_in_any_order_propose_the_same(node) -> None:
    tensors = trained_like(0)
    jobs, role = joined_aggregator(node, make_job(node.peers, n_trainers=3, round_start=9e9))
    events: list[ChainEvent] = []
    jobs.listeners.append(events.append)
    commit_updates(node, jobs, {T[1]: tensors, T[2]: trained_like(2), T[0]: tensors}, block=10)
    run(role.step(1))
    assert jobs.reveals[0].included == 0b110  # of the same tensors only the first commit's
    for i, order in enumerate((events[::-1], [events[1], events[2], events[0]])):
        other = node.another(f"other{i}")  # its own store and state: it aggregates anew
        other_jobs, other_role = joined_aggregator(
            other, make_job(other.peers, n_trainers=3, round_start=9e9)
        )
        other_jobs.commits.update(jobs.by_round[0])
        for event in order:
            other_role.observe(event)
        run(other_role.step(1))
        assert other_jobs.reveals[0][2:] == jobs.reveals[0][2:]


def test_aggregator_waits_for_the_chain_order_of_the_same_tensors(node, monkeypatch) -> None:
    now = 1_000_000.0
    job = make_job(node.peers, n_trainers=3, round_start=now)
    jobs, role = joined_aggregator(node, job)
    tensors = trained_like(0)
    commit_updates(node, jobs, {T[0]: tensors, T[2]: trained_like(2)})
    commit_updates(node, jobs, {T[1]: tensors}, announce=False, block=12)  # its log: unread
    frozen_clock(monkeypatch, jobs, now + job.round_deadline + 1)
    run(role.step(1))
    assert jobs.commit_reads == [(0, T[1])] and jobs.mine() == []  # order unknown: wait
    role.observe(
        UpdateCommitted(
            block_number=12, log_index=0, tx_hash="0x", address="0x", job_id=1, round=0,
            trainer=T[1], update_hash=jobs.commits[T[1]].update_hash,
            weight=jobs.commits[T[1]].weight,
        )
    )  # fmt: skip
    run(role.step(1))
    assert jobs.reveals[0].included == 0b101


def test_aggregator_waits_for_an_unserved_update_until_its_grace_ends(node, monkeypatch) -> None:
    now = 1_000_000.0
    job = make_job(node.peers, n_trainers=3, round_start=now)
    jobs, role = joined_aggregator(node, job, grace=30.0)
    commit_updates(node, jobs, {t: trained_like(i) for i, t in enumerate(T)})
    del node.peers.network[jobs.commits[T[1]].update_hash.hex()]  # nobody serves it
    clock = frozen_clock(monkeypatch, jobs, now + 1)
    run(role.step(1))
    assert jobs.mine() == []  # before the deadline: wait for it
    clock.at = now + job.round_deadline + 29
    run(role.step(1))
    assert jobs.mine() == []  # still within the grace period
    clock.at = now + job.round_deadline + 31
    run(role.step(1))
    assert jobs.reveals[0].included == 0b101


# -- the vote: commit, reveal, claim, challenge ------------------------------------------------


def test_aggregator_whose_vote_completes_the_quorum_finalizes_the_round(node, caplog) -> None:
    caplog.set_level(logging.INFO, logger="allmende.node.roles.aggregator")
    job = make_job(node.peers, n_trainers=3, round_start=9e9, quorum=2)  # committee ME, B, C
    jobs, role = joined_aggregator(node, job)
    commit_updates(node, jobs, {t: trained_like(i) for i, t in enumerate(T)})
    run(role.step(1))  # aggregates and commits; B and C have not committed: no reveal yet
    result = committed_vote(jobs, role)
    assert jobs.mine() == ["commit_vote"] and jobs.reveals == []
    (proposed,) = finalize_lines(caplog)  # proposed, not finalized
    assert proposed.startswith("Job 1 round 0: proposed model ")
    for member in (B, C):
        jobs.commit_as(member, *result)
    run(role.step(1))  # every voter committed: it reveals, the first vote of two
    assert jobs.reveals == [Reveal(ME, 0, *result)] and jobs.finalized == []
    jobs.reveal_as(B)  # another member's reveal completed the quorum
    assert jobs.finalized == [(0, *result[:2])]
    run(role.step(1))  # round 1 waits for its commits; only its share of round 0 is claimed
    assert jobs.mine() == ["commit_vote", "reveal", "claim_vote 0"]
    assert not any("finalized" in line for line in finalize_lines(caplog))

    # the same round, but B revealed first: this node's reveal completes the quorum
    other = node.another("other")
    jobs, role = joined_aggregator(other, make_job(other.peers, n_trainers=3, round_start=9e9,
                                                   quorum=2))  # fmt: skip
    commit_updates(other, jobs, {t: trained_like(i) for i, t in enumerate(T)})
    run(role.step(1))
    assert committed_vote(jobs, role) == result  # the same bytes on every honest node
    for member in (B, C):
        jobs.commit_as(member, *result)
    jobs.reveal_as(B)
    caplog.clear()
    run(role.step(1))
    assert jobs.finalized == [(0, *result[:2])] and jobs.reveals[-1].sender == ME
    assert finalize_lines(caplog) == [f"Job 1 round 0: finalized model {result[0][:16]}."]


def test_a_restarted_aggregator_that_voted_sends_nothing(node, caplog, tmp_path) -> None:
    caplog.set_level(logging.INFO, logger="allmende.node.roles.aggregator")
    job = make_job(node.peers, n_trainers=3, round_start=9e9, quorum=2)
    jobs, role = joined_aggregator(node, job)
    commit_updates(node, jobs, {t: trained_like(i) for i, t in enumerate(T)})
    run(role.step(1))
    for member in (B, C):
        jobs.commit_as(member, *committed_vote(jobs, role))
    run(role.step(1))
    assert jobs.mine() == ["commit_vote", "reveal"] and jobs.finalized == []
    asked = len(node.peers.asked)
    restarted = aggregator_role(node, jobs)  # same state database: the saved vote
    run(restarted.step(1))
    assert jobs.mine() == ["commit_vote", "reveal"]  # no second commit, no second reveal
    assert len(node.peers.asked) == asked  # it did not fetch or aggregate again
    assert len([line for line in finalize_lines(caplog) if "proposed" in line]) == 1
    # a node that lost its state database: it aggregates again, and the chain has its vote
    lost = SimpleNamespace(**{**vars(node), "state": StateDB.open(tmp_path / "lost.sqlite")})
    run(aggregator_role(lost, jobs).step(1))
    lost.state.close()
    assert jobs.mine() == ["commit_vote", "reveal"] and jobs.finalized == []


def test_an_aggregator_reveals_exactly_what_it_committed_after_a_restart(node) -> None:
    """The salt is saved before the commit goes out: a node killed right after sending its
    commit still reveals it (another salt would not match the commitment)."""
    job = make_job(node.peers, n_trainers=3, round_start=9e9, quorum=2)
    jobs, role = joined_aggregator(node, job)
    commit_updates(node, jobs, {t: trained_like(i) for i, t in enumerate(T)})

    def killed_after_commit(job_id: int, round_: int, commitment: bytes) -> None:
        FakeJobs.commit_vote(jobs, job_id, round_, commitment)
        raise ConnectionError("the node was killed before it read the receipt")

    jobs.commit_vote = killed_after_commit  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        run(role.step(1))
    del jobs.commit_vote  # the contract's own again
    result = committed_vote(jobs, role)  # what it committed, as its state database has it
    for member in (B, C):
        jobs.commit_as(member, *result)
    asked = len(node.peers.asked)
    run(aggregator_role(node, jobs).step(1))  # the restarted node
    assert jobs.mine() == ["commit_vote", "reveal"]  # the commit not sent again
    assert jobs.reveals == [Reveal(ME, 0, *result)]  # the contract checked it hashes alike
    assert len(node.peers.asked) == asked  # from the saved vote, not aggregated again
    jobs.reveal_as(B)
    assert jobs.finalized == [(0, *result[:2])]  # and it counted towards the quorum


def test_reveals_open_once_the_vote_commit_period_passed_without_every_member(
    node, monkeypatch
) -> None:
    """A member that never commits delays the reveals by at most round_deadline seconds."""
    now = 1_000_000.0
    job = make_job(node.peers, n_trainers=3, round_start=now, quorum=2)
    jobs, role = joined_aggregator(node, job)
    commit_updates(node, jobs, {t: trained_like(i) for i, t in enumerate(T)})
    clock = frozen_clock(monkeypatch, jobs, now + 1)
    run(role.step(1))  # the attempt's first vote commit: its period ends at now + 1 + 60
    jobs.commit_as(B, *committed_vote(jobs, role))  # C withholds its commit
    clock.at = now + 1 + job.round_deadline
    run(role.step(1))
    assert jobs.mine() == ["commit_vote"]  # the period lasts to its end, inclusive
    clock.at += 1
    run(role.step(1))
    assert jobs.mine() == ["commit_vote", "reveal"]
    jobs.reveal_as(B)
    assert jobs.finalized and jobs.finalized[0][0] == 0


def test_aggregator_whose_vote_comes_after_the_quorum_moves_on(node, caplog) -> None:
    caplog.set_level(logging.INFO, logger="allmende.node.roles.aggregator")
    job = make_job(node.peers, n_trainers=3, round_start=9e9, quorum=2)
    jobs, role = joined_aggregator(node, job)
    commit_updates(node, jobs, {t: trained_like(i) for i, t in enumerate(T)})
    run(role.step(1))
    result = committed_vote(jobs, role)
    for member in (B, C):
        jobs.commit_as(member, *result)

    def others_first(*args: Any) -> list[ChainEvent]:  # B and C finalize between read and reveal
        jobs.reveal_as(B)
        jobs.reveal_as(C)
        return FakeJobs.reveal(jobs, *args)

    jobs.reveal = others_first  # type: ignore[method-assign]
    assert run(role.step(1)) is False
    assert jobs.mine() == ["commit_vote", "reveal"] and jobs.finalized == [(0, *result[:2])]
    assert [r.sender for r in jobs.reveals] == [B, C]  # its own was refused: the round was over
    assert "Job 1 round 0: finalized before this node's vote was revealed." in caplog.text
    assert not any("finalized model" in line for line in finalize_lines(caplog))


def test_an_aggregator_claims_its_share_once_a_round_and_challenges_a_provably_wrong_member(
    node,
) -> None:
    job = make_job(node.peers, n_trainers=3, round_start=9e9, quorum=2)
    jobs, role = joined_aggregator(node, job)
    commit_updates(node, jobs, {t: trained_like(i) for i, t in enumerate(T)})
    run(role.step(1))
    digest, included, total = committed_vote(jobs, role)
    jobs.commit_as(B, digest, included, total)
    jobs.commit_as(C, "ab" * 32, included, total)  # the same inputs, another model: wrong
    jobs.reveal_as(C)
    jobs.reveal_as(B)
    run(role.step(1))  # its reveal completes the quorum
    assert jobs.finalized == [(0, digest, included)]
    run(role.step(1))  # round 1: claims round 0's share, challenges C
    share = 100 * AGGREGATOR_SHARE_BPS // 10_000 // job.quorum
    assert jobs.mine("claim_vote", "challenge") == ["claim_vote 0", f"challenge {C}"]
    assert jobs.owed[ME] == share > 0
    assert jobs.slashed == [(C, SLASH_AMOUNT)] and not jobs.is_aggregator(1, C)
    run(role.step(1))
    run(aggregator_role(node, jobs).step(1))  # a restarted node: claimed already, C settled
    assert jobs.mine("claim_vote", "challenge") == ["claim_vote 0", f"challenge {C}"]
    # round 1, with C removed: ME and B are the voters; its share of the last round too
    commit_updates(node, jobs, {t: trained_like(10 + i) for i, t in enumerate(T)})
    run(role.step(1))
    jobs.commit_as(B, *committed_vote(jobs, role))
    jobs.reveal_as(B)
    run(role.step(1))
    assert jobs.record.status == 2 and jobs.finalized[-1][0] == 1
    assert run(role.step(1)) is False  # finished: claims, its stake locked until the window ends
    assert jobs.mine("claim_vote", "challenge") == [
        "claim_vote 0", f"challenge {C}", "claim_vote 1",
    ]  # fmt: skip
    assert jobs.owed[ME] == 2 * share


def test_aggregator_refuses_a_job_whose_owner_its_policy_rejects(node, caplog) -> None:
    signing_up = {"sealed": False, "signup_end": int(time.time()) + 3600}
    jobs = FakeJobs(replace(make_job(node.peers, n_trainers=3, round_start=9e9), **signing_up), T)
    role = AggregatorRole(AggregatorSection(allowed_owners=[T[0]]))
    role.attach(node, jobs=jobs, directory=FakeDirectory())  # type: ignore[arg-type]
    assert run(role.step(1)) is True
    assert jobs.joined == []
    assert f"Not joining job 1 as aggregator: the job owner {OWNER}" in caplog.text


# -- committee, liveness, locks ----------------------------------------------------------------


def test_aggregator_volunteers_during_the_signup_then_seals_and_works(node, caplog) -> None:
    caplog.set_level(logging.INFO)
    job = replace(make_job(node.peers, n_trainers=3, round_start=0), sealed=False,
                  signup_end=int(time.time()) + 3600)  # fmt: skip
    jobs = FakeJobs(job, T)
    role = aggregator_role(node, jobs)
    jobs.listeners.append(role.observe)
    assert run(role.step(1)) is False
    assert jobs.volunteer_list == [ME] and jobs.aggregator_list == []  # volunteered, not drawn
    assert run(role.step(1)) is False and jobs.calls == []  # no seal before the signup ends
    jobs.record = replace(jobs.record, signup_end=int(time.time()) - 1)
    run(role.step(1))
    assert jobs.calls == ["seal"] and jobs.record.sealed and jobs.aggregator_list == [ME]
    commit_updates(node, jobs, {t: trained_like(i) for i, t in enumerate(T)})
    run(role.step(1))
    assert jobs.finalized and jobs.finalized[0][0] == 0  # a drawn member votes; quorum 1


def test_a_volunteer_not_drawn_is_done_with_the_job(node, caplog) -> None:
    caplog.set_level(logging.INFO)
    job = replace(make_job(node.peers, n_trainers=3, round_start=0), sealed=True, signup_end=1)
    jobs = FakeJobs(job, T)
    jobs.volunteer_list = [ME]  # it signed up; the draw chose others
    role = aggregator_role(node, jobs)
    assert run(role.step(1)) is True
    assert "not drawn into the committee" in caplog.text and jobs.joined == []
    jobs.volunteer_list = []  # and one that never signed up cannot join a sealed committee
    other = aggregator_role(node, jobs)
    assert run(other.step(1)) is True and jobs.joined == []
    assert "was drawn without this node" in caplog.text


def test_a_stalled_round_is_reopened_after_its_deadline_and_grace_at_most_max_times(
    node, caplog
) -> None:
    now = time.time()
    jobs, role = joined_aggregator(node, make_job(node.peers, n_trainers=3, round_start=now))
    commit_updates(node, jobs, {T[0]: trained_like(0)})  # one commit, min_trainers is 2
    run(role.step(1))
    assert jobs.calls == []  # the deadline has not passed
    jobs.record = replace(jobs.record, round_start=int(now) - 61 - 10 - 1)  # deadline + grace
    run(role.step(1))
    assert jobs.calls == ["reopen"] and jobs.record.reopens == 1
    assert jobs.record.round_start >= int(now)  # a fresh deadline: the trainers commit again
    jobs.record = replace(jobs.record, round_start=int(now) - 100, reopens=MAX_REOPENS)
    run(role.step(1))
    assert jobs.calls == ["reopen"]  # no more: only the owner's cancel can end it now
    assert "only the owner's cancel can end the job now" in caplog.text


def test_a_waiting_round_asks_to_evict_trainers_absent_from_the_last_rounds(node) -> None:
    jobs, role = joined_aggregator(node, make_job(node.peers, n_trainers=3, round_start=9e9))
    for round_ in range(3):  # T[2] (index 2) is never included
        jobs.results[round_] = RoundResult(model_hash=b"\1" * 32, included=0b011, total_weight=2)
    jobs.record = replace(jobs.record, current_round=3)
    jobs.evictable = {2}
    commit_updates(node, jobs, {T[0]: trained_like(0), T[1]: trained_like(1)})
    run(role.step(1))
    assert jobs.calls == ["evict 2"] and jobs.record.n_active_trainers == 2
    run(role.step(1))  # the round now has every active trainer's commit
    assert jobs.calls == ["evict 2"] and jobs.finalized[-1][0] == 3


def test_stake_is_released_once_the_challenge_window_passed(node, caplog) -> None:
    caplog.set_level(logging.INFO)
    jobs, role = joined_aggregator(node, make_job(node.peers, n_trainers=3, round_start=9e9))
    jobs.locks[ME] = 5
    jobs.record = replace(jobs.record, status=2, round_start=int(time.time()))  # ended now
    assert run(role.step(1)) is False and jobs.calls == []  # still in the challenge window
    jobs.record = replace(jobs.record, round_start=int(time.time()) - CHALLENGE_WINDOW - 1)
    assert run(role.step(1)) is True and jobs.calls == ["release"]
    assert "released the 5 wei" in caplog.text
    assert run(role.step(1)) is True and jobs.calls == ["release"]  # nothing locked any more


def test_a_trainer_waits_for_the_committee_and_stops_once_evicted(node, caplog) -> None:
    job = replace(make_job(node.peers, n_trainers=0, round_start=0), sealed=False,
                  signup_end=int(time.time()) + 3600)  # fmt: skip
    jobs = FakeJobs(job, [])
    role = trainer_role(node, jobs)
    run(role.step(1))  # joins during the signup
    assert jobs.trainer_list == [ME]
    run(role.step(1))
    assert ME not in jobs.commits  # round 0 has not started
    jobs.record = replace(jobs.record, sealed=True, round_start=int(time.time()))
    jobs.evicted.add(ME.lower())
    assert run(role.step(1)) is True and ME not in jobs.commits
    assert "was evicted" in caplog.text


def test_deadlines_follow_a_chain_whose_clock_runs_ahead(monkeypatch) -> None:
    role = AggregatorRole(AggregatorSection())
    wall = [1_000.0]
    monkeypatch.setattr("allmende.node.roles.base.time.time", lambda: wall[0])
    assert role.now() == 1_000.0
    role.follow_chain_clock(1_024)  # a chain giving each block a second more than the last
    assert role.now() == 1_024.0
    wall[0] = 1_010.0  # no new block for 10 s: chain time goes on with the machine's clock
    role.follow_chain_clock(1_024)
    assert role.now() == 1_034.0
    role.follow_chain_clock(900)  # an idle dev chain's newest block is just old
    assert role.now() == 1_010.0


def test_a_far_future_block_is_believed_only_max_clock_lead_ahead(monkeypatch, caplog) -> None:
    """A hostile endpoint's block stamped a year ahead would make every deadline look passed
    (a trainer would skip its rounds); the node takes the chain to run at most
    ``max_clock_lead_seconds`` ahead, and says so once."""
    role = TrainerRole(TrainerSection(max_clock_lead_seconds=60))
    wall = [1_000.0]
    monkeypatch.setattr("allmende.node.roles.base.time.time", lambda: wall[0])
    with caplog.at_level(logging.WARNING):
        role.follow_chain_clock(1_000 + 365 * 86_400)
        role.follow_chain_clock(1_001 + 365 * 86_400)
    assert role.now() == 1_060.0
    assert caplog.text.count("ahead of this machine's clock") == 1
    role.follow_chain_clock(1_030)  # believable again
    assert role.now() == 1_030.0


def test_the_clock_lead_bound_is_300_s_on_a_public_chain_and_none_on_a_devnet() -> None:
    """Unset, ``max_clock_lead_seconds`` bounds a public chain's clock to 300 s ahead; a devnet's
    clock is moved forward by hand (``advance_time``) and believed however far ahead; a value
    set in the config holds on both."""
    unset, set_ = TrainerSection(), TrainerSection(max_clock_lead_seconds=60)
    assert unset.clock_lead_bound(1) == 300.0
    assert unset.clock_lead_bound(31337) == math.inf
    assert set_.clock_lead_bound(1) == set_.clock_lead_bound(31337) == 60.0
