"""What the typed contract bindings share: calling, transacting, and building records."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from allmende.chain.client import ChainClient, Receipt
from allmende.chain.deployment import ContractInfo
from allmende.chain.events import ChainEvent, EventDecoder
from allmende.errors import ChainError

Record = TypeVar("Record")
HASH_BYTES = 32


def to_bytes32(value: bytes | str) -> bytes:
    """A 32-byte hash from bytes or hex (with or without ``0x``); ValueError otherwise."""
    raw = value if isinstance(value, bytes) else bytes.fromhex(value.removeprefix("0x"))
    if len(raw) != HASH_BYTES:
        raise ValueError(f"A hash must be {HASH_BYTES} bytes, got {len(raw)}.")
    return raw


class ContractBinding:
    """A deployed contract reached through one :class:`ChainClient`."""

    def __init__(self, client: ChainClient, info: ContractInfo) -> None:
        self.client = client
        self.info = info
        self.address = info.address
        self._contract = client.contract(info)
        self._decoder = self._make_decoder(info)

    @staticmethod
    def _make_decoder(info: ContractInfo) -> EventDecoder:
        """Each binding says which contract's event records its logs decode into."""
        raise NotImplementedError

    def events(self, receipt: Receipt) -> list[ChainEvent]:
        """The typed events this contract emitted in a transaction, in log order."""
        return self._decoder.decode_all(receipt.logs)

    def _call(self, name: str, *args: Any) -> Any:
        return self.client.call(self._contract.functions[name](*args))

    def _send(self, name: str, *args: Any, value: int = 0) -> Receipt:
        return self.client.transact(self._contract.functions[name](*args), value=value)

    def _record(self, record: type[Record], name: str, *args: Any) -> Record:
        """Call a view returning a struct or tuple and name its parts after the ABI outputs."""
        values = self._call(name, *args)
        outputs = next(
            item["outputs"]
            for item in self.info.abi
            if item.get("type") == "function" and item.get("name") == name
        )
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
