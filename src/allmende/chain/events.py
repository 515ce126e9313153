"""Typed records of the contracts' events, and decoding of raw logs into them.

Logs come from the chain and are untrusted: a log that does not match the ABI is reported as
:class:`ChainError` by :meth:`EventDecoder.decode` (the caller logs and skips it), never
half-decoded. Addresses are checksummed strings, hashes are 32-byte ``bytes``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from eth_abi import decode as abi_decode
from eth_utils import event_abi_to_log_topic, to_checksum_address

from allmende.chain.deployment import ContractInfo, Deployment
from allmende.errors import ChainError


@functools.lru_cache(maxsize=4096)
def checksummed(address: str) -> str:
    """The EIP-55 form of ``address``, remembered: a node sees the same few addresses in every
    log and result, and each checksum costs a Keccak hash. :class:`ValueError` if malformed."""
    return str(to_checksum_address(address))


@dataclass(frozen=True, kw_only=True)
class ChainEvent:
    """Where an event happened: its block, position in the block, transaction and contract."""

    block_number: int
    log_index: int
    tx_hash: str
    address: str


# -- Registry ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class NodeRegistered(ChainEvent):
    node: str
    endpoint: str
    roles: int
    metadata: bytes


@dataclass(frozen=True, kw_only=True)
class NodeUpdated(ChainEvent):
    node: str
    endpoint: str
    roles: int
    metadata: bytes


@dataclass(frozen=True, kw_only=True)
class Staked(ChainEvent):
    node: str
    amount: int
    total: int


@dataclass(frozen=True, kw_only=True)
class UnbondRequested(ChainEvent):
    node: str
    amount: int
    available_at: int


@dataclass(frozen=True, kw_only=True)
class Unbonded(ChainEvent):
    node: str
    amount: int


@dataclass(frozen=True, kw_only=True)
class SlasherSet(ChainEvent):
    account: str
    allowed: bool


@dataclass(frozen=True, kw_only=True)
class SlasherProposed(ChainEvent):
    account: str
    allowed: bool
    eta: int


@dataclass(frozen=True, kw_only=True)
class SlasherChangeCancelled(ChainEvent):
    account: str


@dataclass(frozen=True, kw_only=True)
class AdminTransferStarted(ChainEvent):
    admin: str
    pending: str


@dataclass(frozen=True, kw_only=True)
class AdminTransferred(ChainEvent):
    previous: str
    admin: str


@dataclass(frozen=True, kw_only=True)
class Slashed(ChainEvent):
    node: str
    job_id: int
    amount: int
    beneficiary: str
    slasher: str


@dataclass(frozen=True, kw_only=True)
class Locked(ChainEvent):
    """``Registry.Locked``: stake a node locked for a job (it cannot be unbonded until
    released)."""

    node: str
    slasher: str
    job_id: int
    amount: int


@dataclass(frozen=True, kw_only=True)
class Unlocked(ChainEvent):
    """``Registry.Unlocked``: a job's lock released."""

    node: str
    slasher: str
    job_id: int
    amount: int


@dataclass(frozen=True, kw_only=True)
class RegistryWithdrawn(ChainEvent):
    """``Registry.Withdrawn``: slashing proceeds paid out."""

    account: str
    amount: int


# -- Jobs --------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class JobCreated(ChainEvent):
    job_id: int
    owner: str
    spec_hash: bytes
    model_hash: bytes
    rounds: int
    reward_per_round: int


@dataclass(frozen=True, kw_only=True)
class Joined(ChainEvent):
    job_id: int
    node: str
    role: int
    index: int


@dataclass(frozen=True, kw_only=True)
class CommitteeSealed(ChainEvent):
    """``Jobs.CommitteeSealed``: an open committee drawn from its volunteers; round 0 starts."""

    job_id: int
    committee: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class UpdateCommitted(ChainEvent):
    job_id: int
    round: int
    trainer: str
    update_hash: bytes
    weight: int


def _bitmap(words: Any) -> int:
    """An ``included`` event field (4 words of 256 trainers) as one bitmap."""
    if isinstance(words, int):
        return words
    return sum(int(word) << (256 * i) for i, word in enumerate(words))


@dataclass(frozen=True, kw_only=True)
class VoteCommitted(ChainEvent):
    """``Jobs.VoteCommitted``: a committee member committed to a vote without showing it."""

    job_id: int
    round: int
    aggregator: str
    attempt: int
    commitment: bytes


@dataclass(frozen=True, kw_only=True)
class Proposed(ChainEvent):
    """``Jobs.Proposed``: a committee member revealed its vote (``included`` as a bitmap)."""

    job_id: int
    round: int
    aggregator: str
    model_hash: bytes
    included: int
    total_weight: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "included", _bitmap(self.included))


@dataclass(frozen=True, kw_only=True)
class RoundFinalized(ChainEvent):
    """``Jobs.RoundFinalized`` (``included`` as a bitmap); the shares are claimed later."""

    job_id: int
    round: int
    model_hash: bytes
    included: int
    total_weight: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "included", _bitmap(self.included))


@dataclass(frozen=True, kw_only=True)
class Credited(ChainEvent):
    job_id: int
    round: int
    account: str
    amount: int


@dataclass(frozen=True, kw_only=True)
class AggregatorSlashed(ChainEvent):
    job_id: int
    round: int
    aggregator: str
    amount: int


@dataclass(frozen=True, kw_only=True)
class AggregatorRemoved(ChainEvent):
    """``Jobs.AggregatorRemoved``: slashed below its lock, it leaves the job's later rounds."""

    job_id: int
    round: int
    aggregator: str


@dataclass(frozen=True, kw_only=True)
class RoundReopened(ChainEvent):
    """``Jobs.RoundReopened``: a round past its deadline got a fresh one."""

    job_id: int
    round: int
    reopens: int


@dataclass(frozen=True, kw_only=True)
class TrainerEvicted(ChainEvent):
    job_id: int
    trainer: str
    index: int
    slashed: int


@dataclass(frozen=True, kw_only=True)
class StakeReleased(ChainEvent):
    job_id: int
    node: str
    amount: int


@dataclass(frozen=True, kw_only=True)
class JobFinished(ChainEvent):
    job_id: int
    final_model_hash: bytes


@dataclass(frozen=True, kw_only=True)
class JobCancelled(ChainEvent):
    job_id: int
    round: int


@dataclass(frozen=True, kw_only=True)
class Refunded(ChainEvent):
    job_id: int
    owner: str
    amount: int


@dataclass(frozen=True, kw_only=True)
class JobsWithdrawn(ChainEvent):
    """``Jobs.Withdrawn``: rewards or refunds paid out."""

    account: str
    amount: int


REGISTRY_EVENTS: dict[str, type[ChainEvent]] = {
    "NodeRegistered": NodeRegistered,
    "NodeUpdated": NodeUpdated,
    "Staked": Staked,
    "UnbondRequested": UnbondRequested,
    "Unbonded": Unbonded,
    "SlasherSet": SlasherSet,
    "SlasherProposed": SlasherProposed,
    "SlasherChangeCancelled": SlasherChangeCancelled,
    "AdminTransferStarted": AdminTransferStarted,
    "AdminTransferred": AdminTransferred,
    "Slashed": Slashed,
    "Locked": Locked,
    "Unlocked": Unlocked,
    "Withdrawn": RegistryWithdrawn,
}
JOBS_EVENTS: dict[str, type[ChainEvent]] = {
    "JobCreated": JobCreated,
    "Joined": Joined,
    "CommitteeSealed": CommitteeSealed,
    "UpdateCommitted": UpdateCommitted,
    "VoteCommitted": VoteCommitted,
    "Proposed": Proposed,
    "RoundFinalized": RoundFinalized,
    "Credited": Credited,
    "AggregatorSlashed": AggregatorSlashed,
    "AggregatorRemoved": AggregatorRemoved,
    "RoundReopened": RoundReopened,
    "TrainerEvicted": TrainerEvicted,
    "StakeReleased": StakeReleased,
    "JobFinished": JobFinished,
    "JobCancelled": JobCancelled,
    "Refunded": Refunded,
    "Withdrawn": JobsWithdrawn,
}
_BASE_FIELDS = {field.name for field in dataclasses.fields(ChainEvent)}


class EventDecoder:
    """Decodes raw logs of the deployed contracts into the typed records above.

    ``only``: the event records wanted (default: all). Logs of other events then decode to
    None, and :attr:`topics` lets ``eth_getLogs`` leave them out at the source.
    """

    def __init__(
        self,
        *,
        registry: ContractInfo | None = None,
        jobs: ContractInfo | None = None,
        only: Iterable[type[ChainEvent]] | None = None,
    ) -> None:
        self._by_topic: dict[tuple[str, bytes], tuple[dict[str, Any], type[ChainEvent]]] = {}
        self.addresses: list[str] = []
        self._only = None if only is None else tuple(only)
        if registry is not None:
            self._add(registry, REGISTRY_EVENTS)
        if jobs is not None:
            self._add(jobs, JOBS_EVENTS)

    @property
    def topics(self) -> list[bytes] | None:
        """First topics of the wanted events; None when every event is wanted."""
        if self._only is None:
            return None
        return sorted({topic for _, topic in self._by_topic})

    @classmethod
    def for_deployment(cls, deployment: Deployment) -> EventDecoder:
        """A decoder for both contracts of a deployment."""
        return cls(registry=deployment.registry, jobs=deployment.jobs)

    def _add(self, contract: ContractInfo, records: dict[str, type[ChainEvent]]) -> None:
        self.addresses.append(contract.address)
        for abi in contract.abi:
            record = records.get(abi.get("name", "")) if abi.get("type") == "event" else None
            if record is None or (self._only is not None and not issubclass(record, self._only)):
                continue
            expected = [f.name for f in dataclasses.fields(record) if f.name not in _BASE_FIELDS]
            names = [item["name"] for item in abi["inputs"]]
            if names != expected:
                raise ChainError(
                    f"The deployed contract's event {abi['name']} has fields {names}, but this "
                    f"version of allmende expects {expected}; redeploy or upgrade allmende."
                )
            topic = bytes(event_abi_to_log_topic(abi))  # type: ignore[arg-type]
            self._by_topic[(contract.address.lower(), topic)] = (abi, record)

    def decode(self, log: Any) -> ChainEvent | None:
        """The typed event of one raw log; None for logs of other contracts or unknown events.

        Raises :class:`ChainError` when a log claims to be a known event but does not decode.
        """
        topics = [bytes(topic) for topic in log["topics"]]
        if not topics:
            return None
        entry = self._by_topic.get((str(log["address"]).lower(), topics[0]))
        if entry is None:
            return None
        abi, record = entry
        try:
            values = _decode_values(abi, topics[1:], bytes(log["data"]))
        except Exception as exc:  # malformed data from the chain
            raise ChainError(f"A {abi['name']} log does not match its ABI: {exc}.") from exc
        tx_hash = log["transactionHash"]
        return record(
            block_number=int(log["blockNumber"]),
            log_index=int(log["logIndex"]),
            tx_hash=tx_hash if isinstance(tx_hash, str) else "0x" + bytes(tx_hash).hex(),
            address=checksummed(str(log["address"])),
            **values,
        )

    def decode_all(self, logs: Any) -> list[ChainEvent]:
        """Typed events of a receipt's logs, in log order, skipping foreign logs."""
        return [event for event in (self.decode(log) for log in logs) if event is not None]


def _decode_values(abi: dict[str, Any], topics: list[bytes], data: bytes) -> dict[str, Any]:
    indexed = [item for item in abi["inputs"] if item["indexed"]]
    plain = [item for item in abi["inputs"] if not item["indexed"]]
    if len(topics) != len(indexed):
        raise ValueError(f"expected {len(indexed)} indexed topics, got {len(topics)}")
    values: dict[str, Any] = {}
    for item, topic in zip(indexed, topics, strict=True):
        (values[item["name"]],) = abi_decode([item["type"]], topic)
    decoded = abi_decode([item["type"] for item in plain], data, strict=True)
    for item, value in zip(plain, decoded, strict=True):
        values[item["name"]] = value
    for item in abi["inputs"]:
        if item["type"] == "address":
            values[item["name"]] = checksummed(values[item["name"]])
        elif item["type"] == "address[]":
            values[item["name"]] = tuple(checksummed(a) for a in values[item["name"]])
    return values
