"""Typed binding of ``contracts/Jobs.vy``: escrow, committee, rounds, quorum, locks, payouts."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum

from eth_abi import encode as abi_encode
from eth_utils import event_abi_to_log_topic, keccak

from allmende.chain._binding import ContractBinding, to_bytes32
from allmende.chain.client import Receipt
from allmende.chain.deployment import ContractInfo
from allmende.chain.events import EventDecoder, JobCreated, RoundFinalized
from allmende.errors import ChainError

# The Jobs contract's constants the roles plan with.
MAX_REOPENS = 3  # fresh deadlines a round may get before only the owner's cancel ends the job
MISSED_ROUNDS_ALLOWED = 3  # finalized rounds in a row a trainer may miss before it is evictable
MAX_TRAINERS = 1024  # trainers a job may ever have: its included bitmap has 4 words of 256 bits
WORD_BITS = 256
RESULT_RING = 8  # finalized rounds whose result (and so whose claims) the contract keeps


class JobStatus(IntEnum):
    OPEN = 1
    FINISHED = 2
    CANCELLED = 3


@dataclass(frozen=True)
class Job:
    """A job's on-chain record (``Jobs.jobs(job_id)``); amounts in wei, times in seconds."""

    owner: str
    spec_hash: bytes
    model_hash: bytes
    rounds: int
    reward_per_round: int
    min_trainers: int
    max_trainers: int
    quorum: int
    round_deadline: int
    escrow: int
    current_round: int
    round_start: int
    status: int
    n_trainers: int
    n_aggregators: int
    committee_size: int
    signup_end: int
    sealed: bool
    trainer_stake: int
    aggregator_stake: int
    weight_cap: int
    attempt: int
    reopens: int
    n_active_trainers: int
    n_volunteers: int
    paid: int

    @property
    def ended_at(self) -> int:
        """When the job finished or was cancelled (the contract keeps it in ``round_start``);
        0 while it is open."""
        return 0 if self.status == JobStatus.OPEN else self.round_start

    @property
    def final_model_hash(self) -> bytes:
        """The final model of a finished job (its last ``model_hash``); empty otherwise."""
        return self.model_hash if self.status == JobStatus.FINISHED else bytes(32)

    @property
    def open_committee(self) -> bool:
        """True when the committee is drawn from volunteers (not named by the owner)."""
        return self.signup_end > 0


@dataclass(frozen=True)
class Commit:
    """A trainer's commit for a round; ``weight`` 0 means it did not commit."""

    update_hash: bytes
    weight: int


@dataclass(frozen=True)
class RoundResult:
    """A finalized round: the new model, the included trainers (bitmap) and their total weight.
    All empty/0 for a round that is not final."""

    model_hash: bytes
    included: int
    total_weight: int


def to_bitmap(indices: Iterable[int]) -> int:
    """The contract's ``included`` bitmap of trainer indices (bit i = trainer i)."""
    bitmap = 0
    for index in indices:
        if index < 0:
            raise ValueError(f"Trainer index {index} is negative.")
        bitmap |= 1 << index
    return bitmap


def from_bitmap(bitmap: int) -> list[int]:
    """The trainer indices set in the contract's ``included`` bitmap, ascending."""
    if bitmap < 0:
        raise ValueError(f"Bitmap {bitmap} is negative.")
    return [i for i in range(bitmap.bit_length()) if bitmap >> i & 1]


def included_words(bitmap: int) -> list[int]:
    """The contract's ``included`` argument: the bitmap as its 4 words of 256 trainers."""
    if bitmap < 0 or bitmap >> MAX_TRAINERS:
        raise ValueError(f"Bitmap {bitmap:#x} does not fit {MAX_TRAINERS} trainers.")
    mask = (1 << WORD_BITS) - 1
    return [bitmap >> (WORD_BITS * i) & mask for i in range(MAX_TRAINERS // WORD_BITS)]


def from_words(words: Sequence[int]) -> int:
    """The bitmap of ``included`` words (the inverse of :func:`included_words`)."""
    return sum(int(word) << (WORD_BITS * i) for i, word in enumerate(words))


def vote_key(model_hash: bytes | str, included: int, total_weight: int) -> bytes:
    """``keccak256(abi_encode(model_hash, included, total_weight))``: the key of a round result
    (what a reveal votes for, and what a finalized round records)."""
    return bytes(
        keccak(
            abi_encode(
                ["bytes32", "uint256[4]", "uint256"],
                [to_bytes32(model_hash), included_words(included), total_weight],
            )
        )
    )


def vote_commitment(
    model_hash: bytes | str,
    included: int | Sequence[int],
    total_weight: int,
    salt: bytes,
    voter: str,
) -> bytes:
    """What ``commit_vote`` takes: ``keccak256(abi_encode(model_hash, included, total_weight,
    salt, voter))``; ``included`` as a bitmap or as its words."""
    words = included_words(included) if isinstance(included, int) else list(included)
    return bytes(
        keccak(
            abi_encode(
                ["bytes32", "uint256[4]", "uint256", "bytes32", "address"],
                [to_bytes32(model_hash), words, total_weight, to_bytes32(salt), voter],
            )
        )
    )


class Jobs(ContractBinding):
    """Every function of the Jobs contract; transactions are sent from the client's key."""

    @staticmethod
    def _make_decoder(info: ContractInfo) -> EventDecoder:
        return EventDecoder(jobs=info)

    # -- transactions --------------------------------------------------------------------------

    def create_job(
        self,
        *,
        spec_hash: bytes | str,
        model_hash: bytes | str,
        rounds: int,
        reward_per_round: int,
        min_trainers: int,
        max_trainers: int,
        quorum: int,
        round_deadline: int,
        committee: Sequence[str] = (),
        committee_size: int,
        signup_period: int = 0,
        trainer_stake: int = 0,
        aggregator_stake: int = 0,
        weight_cap: int = 0,
    ) -> tuple[int, Receipt]:
        """Create a job escrowing ``rounds * reward_per_round`` wei; return (job id, receipt).

        ``committee`` names the aggregators (then ``signup_period`` is 0); empty, an open
        committee of ``committee_size`` is drawn from the volunteers of ``signup_period``
        seconds. ``weight_cap`` 0: every trainer weighs 1."""
        receipt = self._send(
            "create_job",
            to_bytes32(spec_hash),
            to_bytes32(model_hash),
            rounds,
            reward_per_round,
            min_trainers,
            max_trainers,
            quorum,
            round_deadline,
            list(committee),
            committee_size,
            signup_period,
            trainer_stake,
            aggregator_stake,
            weight_cap,
            value=rounds * reward_per_round,
        )
        for event in self.events(receipt):
            if isinstance(event, JobCreated):
                return event.job_id, receipt
        raise ChainError(
            "create_job succeeded but emitted no JobCreated event; check the contract."
        )

    def join(self, job_id: int, role: int) -> Receipt:
        return self._send("join", job_id, role)

    def commit_update(
        self, job_id: int, round: int, update_hash: bytes | str, weight: int
    ) -> Receipt:
        return self._send("commit_update", job_id, round, to_bytes32(update_hash), weight)

    def commit_vote(self, job_id: int, round: int, commitment: bytes) -> Receipt:
        """Commit to a vote without showing it (see :func:`vote_commitment`)."""
        return self._send("commit_vote", job_id, round, to_bytes32(commitment))

    def reveal(
        self,
        job_id: int,
        round: int,
        model_hash: bytes | str,
        included: int,
        total_weight: int,
        salt: bytes,
    ) -> Receipt:
        """Reveal the committed vote for ``(model_hash, included, total_weight)``. The reveal
        that brings the result to the job's quorum finalizes the round in the same
        transaction: its receipt then holds ``RoundFinalized`` (and ``JobFinished``)."""
        return self._send(
            "reveal", job_id, round, to_bytes32(model_hash), included_words(included),
            total_weight, to_bytes32(salt),
        )  # fmt: skip

    def claim(self, job_id: int, round: int, result: RoundResult) -> Receipt:
        """Claim the caller's trainer share of a finalized round (credited to ``owed``)."""
        return self._send(
            "claim", job_id, round, result.model_hash, included_words(result.included),
            result.total_weight,
        )  # fmt: skip

    def claim_vote(self, job_id: int, round: int) -> Receipt:
        """Claim the caller's aggregator share of a finalized round it voted the result of."""
        return self._send("claim_vote", job_id, round)

    def challenge(self, job_id: int, aggregator: str) -> Receipt:
        """Slash an aggregator whose latest reveal is provably wrong."""
        return self._send("challenge", job_id, aggregator)

    def seal(self, job_id: int) -> Receipt:
        """Draw an open committee from the volunteers once the signup is over; round 0 starts."""
        return self._send("seal", job_id)

    def reopen(self, job_id: int) -> Receipt:
        """Give a round whose deadline passed unfinalized a fresh deadline (bounded retries)."""
        return self._send("reopen", job_id)

    def evict(self, job_id: int, trainer_index: int) -> Receipt:
        """Take the slot (and bond) of a trainer that missed too many rounds in a row."""
        return self._send("evict", job_id, trainer_index)

    def release(self, job_id: int) -> Receipt:
        """Release the caller's locked stake once the job ended and its challenge window passed."""
        return self._send("release", job_id)

    def cancel(self, job_id: int) -> Receipt:
        return self._send("cancel", job_id)

    def refund(self, job_id: int) -> Receipt:
        return self._send("refund", job_id)

    def withdraw(self) -> Receipt:
        """Pay out everything the caller is owed (rewards, refunds)."""
        return self._send("withdraw")

    # -- views ---------------------------------------------------------------------------------

    def job(self, job_id: int) -> Job:
        return self._record(Job, "jobs", job_id)

    def next_job_id(self) -> int:
        return int(self._call("next_job_id"))

    def trainer_at(self, job_id: int, index: int) -> str:
        return str(self._call("trainer_at", job_id, index))

    def trainer_index(self, job_id: int, address: str) -> int | None:
        """The trainer's index in the job (bit position in ``included``), None if not a trainer."""
        raw = int(self._call("trainer_index", job_id, address))
        return raw - 1 if raw > 0 else None

    def trainers(self, job_id: int) -> list[str]:
        """The job's trainers in index order."""
        return [self.trainer_at(job_id, i) for i in range(self.job(job_id).n_trainers)]

    def is_aggregator(self, job_id: int, address: str) -> bool:
        return bool(self._call("is_aggregator", job_id, address))

    def aggregator_at(self, job_id: int, index: int) -> str:
        return str(self._call("aggregator_at", job_id, index))

    def aggregators(self, job_id: int) -> list[str]:
        return [self.aggregator_at(job_id, i) for i in range(self.job(job_id).n_aggregators)]

    def volunteer_at(self, job_id: int, index: int) -> str:
        return str(self._call("volunteer_at", job_id, index))

    def volunteers(self, job_id: int) -> list[str]:
        """Who signed up for an open committee, in sign-up order."""
        return [self.volunteer_at(job_id, i) for i in range(self.job(job_id).n_volunteers)]

    def is_volunteer(self, job_id: int, address: str) -> bool:
        """Whether the account signed up for the job's open committee (drawn or not)."""
        return bool(self._call("is_volunteer", job_id, address))

    def voted_in_attempt(self, job_id: int, aggregator: str) -> bool:
        """Whether the aggregator revealed its vote in the job's current attempt."""
        return bool(self._call("voted_in_attempt", job_id, aggregator))

    def vote_committed(self, job_id: int, aggregator: str) -> bool:
        """Whether the aggregator committed a vote in the job's current attempt."""
        return bool(self._call("vote_committed", job_id, aggregator))

    def reveals_open(self, job_id: int) -> bool:
        """Whether the current attempt accepts reveals."""
        return bool(self._call("reveals_open", job_id))

    def provably_wrong(self, job_id: int, aggregator: str) -> bool:
        """Whether ``challenge(job_id, aggregator)`` would slash."""
        return bool(self._call("provably_wrong", job_id, aggregator))

    def reserved(self, job_id: int) -> int:
        """Escrow the job holds for unclaimed shares of its finalized rounds."""
        return int(self._call("reserved", job_id))

    def is_trainer_active(self, job_id: int, address: str) -> bool:
        return bool(self._call("is_trainer_active", job_id, address))

    def commit_of(self, job_id: int, round: int, trainer: str) -> Commit:
        return self._record(Commit, "commit_of", job_id, round, trainer)

    def round_result(self, job_id: int, round: int) -> RoundResult:
        """A finalized round's result, read from its ``RoundFinalized`` event (a round is
        finalized once) and, while the contract still keeps it (its last 8 finalized rounds),
        checked against the key prefix it recorded. Empty values while the round is not final."""
        empty = RoundResult(model_hash=bytes(32), included=0, total_weight=0)
        prefix = bytes(self._call("round_result", job_id, round)[0])
        if prefix == bytes(len(prefix)) and round >= self.job(job_id).current_round:
            return empty
        (abi,) = [i for i in self.info.abi if i.get("name") == "RoundFinalized"]
        topic = bytes(event_abi_to_log_topic(abi))  # type: ignore[arg-type]
        head = self.client.block_number()
        for log in self.client.get_logs(
            from_block=0, to_block=head, addresses=[self.address], topics=[topic],
            indexed=(job_id, round),
        ):
            event = self._decoder.decode(log)
            if not isinstance(event, RoundFinalized) or (event.job_id, event.round) != (
                job_id, round,
            ):  # fmt: skip
                continue
            result = RoundResult(event.model_hash, event.included, event.total_weight)
            key = vote_key(result.model_hash, result.included, result.total_weight)
            if prefix == bytes(len(prefix)) or key[: len(prefix)] == prefix:
                return result
        raise ChainError(
            f"Job {job_id} round {round} is final, but the chain has no RoundFinalized event "
            "matching its recorded result; is the RPC endpoint pruning logs?"
        )

    def votes(
        self, job_id: int, attempt: int, model_hash: bytes | str, included: int, total_weight: int
    ) -> int:
        """How many aggregators revealed ``(model_hash, included, total_weight)`` in the attempt
        (a round's attempt grows when it is finalized or reopened; see ``Job.attempt``)."""
        key = vote_key(model_hash, included, total_weight)
        return int(self._call("votes", job_id, attempt, key))

    def deadline(self, job_id: int) -> int:
        return int(self._call("deadline", job_id))

    def owed(self, address: str) -> int:
        return int(self._call("owed", address))

    def total_owed(self) -> int:
        return int(self._call("total_owed"))

    def total_escrow(self) -> int:
        return int(self._call("total_escrow"))

    def registry_address(self) -> str:
        return str(self._call("registry"))

    def unclaimed(self, job_id: int, account: str) -> list[tuple[int, str, int]]:
        """The shares ``account`` could claim now, as (round, "trainer" or "aggregator", wei):
        of the finalized rounds whose result the contract still keeps (the last 8), those its
        ``claim`` or ``claim_vote`` would pay (simulated, nothing is sent)."""
        job = self.job(job_id)
        last = job.current_round - 1  # a finished job's round counter is past its last round
        reward, bps = job.reward_per_round, self.aggregator_share_bps()
        pool = reward - reward * bps // 10_000
        is_trainer = self.trainer_index(job_id, account) is not None
        shares: list[tuple[int, str, int]] = []
        for round_ in range(max(0, last - RESULT_RING + 1), last + 1):
            if is_trainer:
                result = self.round_result(job_id, round_)
                args = (result.model_hash, included_words(result.included), result.total_weight)
                if result.total_weight and self._would_succeed(
                    "claim", job_id, round_, *args, sender=account
                ):
                    weight = self.commit_of(job_id, round_, account).weight
                    shares.append((round_, "trainer", pool * weight // result.total_weight))
            if job.quorum and self._would_succeed("claim_vote", job_id, round_, sender=account):
                shares.append((round_, "aggregator", reward * bps // 10_000 // job.quorum))
        return shares

    def aggregator_share_bps(self) -> int:
        return int(self._call("aggregator_share_bps"))

    def slash_amount(self) -> int:
        return int(self._call("slash_amount"))

    def challenge_window(self) -> int:
        return int(self._call("challenge_window"))
