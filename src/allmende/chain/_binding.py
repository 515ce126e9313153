"""What the typed contract bindings share: calling, transacting, and building records."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import collapse_if_tuple, function_abi_to_4byte_selector

from allmende.chain.client import ChainClient, Receipt
from allmende.chain.deployment import ContractInfo
from allmende.chain.events import ChainEvent, EventDecoder, checksummed
from allmende.errors import ChainError, ContractRevert

Record = TypeVar("Record")
HASH_BYTES = 32


def to_bytes32(value: bytes | str) -> bytes:
    """A 32-byte hash from bytes or hex (with or without ``0x``); ValueError otherwise."""
    raw = value if isinstance(value, bytes) else bytes.fromhex(value.removeprefix("0x"))
    if len(raw) != HASH_BYTES:
        raise ValueError(f"A hash must be {HASH_BYTES} bytes, got {len(raw)}.")
    return raw


@dataclass(frozen=True)
class AbiFunction:
    """One function of a contract's ABI, ready to encode calls and decode results."""

    name: str
    selector: bytes
    inputs: tuple[str, ...]  # canonical ABI types
    outputs: tuple[dict[str, Any], ...]  # the ABI's output items

    @classmethod
    def of(cls, item: dict[str, Any]) -> AbiFunction:
        return cls(
            name=item["name"],
            selector=function_abi_to_4byte_selector(item),  # type: ignore[arg-type]
            inputs=tuple(collapse_if_tuple(arg) for arg in item["inputs"]),
            outputs=tuple(item["outputs"]),
        )

    def encode(self, args: tuple[Any, ...]) -> bytes:
        """The calldata of a call with ``args``; :class:`ValueError` when they do not fit."""
        if len(args) != len(self.inputs):
            raise ValueError(f"{self.name} takes {len(self.inputs)} arguments, got {len(args)}")
        try:
            return self.selector + abi_encode(list(self.inputs), list(args))
        except Exception as exc:  # eth_abi's encoding errors share no useful base class
            raise ValueError(f"bad arguments for {self.name}: {exc}") from None

    def decode(self, data: bytes) -> Any:
        """The result, as web3 gives it: one value, or a tuple for several; addresses
        checksummed. :class:`ChainError` when the bytes do not decode."""
        try:
            values = abi_decode([collapse_if_tuple(item) for item in self.outputs], data)
        except Exception as exc:  # e.g. a call to an address without this contract's code
            raise ChainError(
                f"The contract's {self.name} returned {len(data)} bytes that do not decode as "
                f"its result ({type(exc).__name__}); is the deployment file right?"
            ) from None
        pairs = zip(self.outputs, values, strict=True)
        values = tuple(_checksummed(item, value) for item, value in pairs)
        return values[0] if len(values) == 1 else values


def _checksummed(item: dict[str, Any], value: Any) -> Any:
    """``value`` of ABI ``item`` with every address in it checksummed."""
    kind = str(item["type"])
    if kind.endswith("]"):
        inner = {**item, "type": kind[: kind.rindex("[")]}
        return [_checksummed(inner, element) for element in value]
    if kind == "address":
        return checksummed(value)
    if kind == "tuple":
        return tuple(_checksummed(c, v) for c, v in zip(item["components"], value, strict=True))
    return value


class ContractBinding:
    """A deployed contract reached through one :class:`ChainClient`.

    Calls are encoded and decoded here from the ABI with ``eth_abi`` and go to the chain as raw
    JSON-RPC (:meth:`ChainClient.call_data`, :meth:`ChainClient.send_data`).
    """

    def __init__(self, client: ChainClient, info: ContractInfo) -> None:
        self.client = client
        self.info = info
        self.address = info.address
        functions = [item for item in info.abi if item.get("type") == "function"]
        self._functions = {item["name"]: AbiFunction.of(item) for item in functions}
        self._decoder = self._make_decoder(info)

    @staticmethod
    def _make_decoder(info: ContractInfo) -> EventDecoder:
        """Each binding says which contract's event records its logs decode into."""
        raise NotImplementedError

    def events(self, receipt: Receipt) -> list[ChainEvent]:
        """The typed events this contract emitted in a transaction, in log order."""
        return self._decoder.decode_all(receipt.logs)

    def _function(self, name: str) -> AbiFunction:
        try:
            return self._functions[name]
        except KeyError:
            raise ChainError(
                f"The deployed {type(self).__name__} contract has no function {name}; redeploy "
                "the contracts or upgrade allmende."
            ) from None

    def _call(self, name: str, *args: Any) -> Any:
        function = self._function(name)
        data = function.encode(args)
        return function.decode(self.client.call_data(self.address, data, label=name))

    def _would_succeed(self, name: str, *args: Any, sender: str) -> bool:
        """Whether ``sender``'s transaction calling ``name`` would succeed now (an ``eth_call``
        as that account; nothing is sent)."""
        data = self._function(name).encode(args)
        try:
            self.client.call_data(self.address, data, label=name, sender=sender)
        except ContractRevert:
            return False
        return True

    def _send(self, name: str, *args: Any, value: int = 0) -> Receipt:
        data = self._function(name).encode(args)
        return self.client.send_data(self.address, data, value=value, label=name)

    def _record(self, record: type[Record], name: str, *args: Any) -> Record:
        """Call a view returning a struct or tuple and name its parts after the ABI outputs."""
        values = self._call(name, *args)
        outputs: Any = self._function(name).outputs
        if len(outputs) == 1 and outputs[0].get("components"):
            outputs = outputs[0]["components"]
        names = [item["name"] for item in outputs]
        expected = [field.name for field in dataclasses.fields(record)]  # type: ignore[arg-type]
        if names != expected and len(names) == len(expected) and all(n == "" for n in names):
            names = expected  # unnamed tuple outputs (``-> (bytes32, uint256)``): by position
        if names != expected:
            raise ChainError(
                f"The contract's {name} returns {names}, but this version of allmende expects "
                f"{expected}; redeploy the contracts or upgrade allmende."
            )
        return record(**dict(zip(names, values, strict=True)))
