"""Signing EIP-1559 transactions directly with libsecp256k1.

A node sends a few transactions every round; the general-purpose signer of ``eth_account``
validates and normalises every field through several layers and takes over a millisecond a
transaction (and importing it most of a second). The transactions this project sends have one
shape: contract calls, plain transfers and contract creations. :class:`CallSigner` encodes them
straight to the typed-transaction bytes (EIP-2718 type 2, EIP-1559 fields, empty access list;
a creation has an empty ``to``)::

    payload = 0x02 || rlp([chain_id, nonce, max_priority_fee, max_fee, gas, to, value, data, []])
    signature = secp256k1_sign_recoverable(keccak256(payload))         # low-s, y parity
    raw = 0x02 || rlp([chain_id, nonce, ..., data, [], y_parity, r, s])

The bytes are identical to ``eth_account``'s for the same transaction (a test checks it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import rlp
from coincurve import PrivateKey
from eth_utils import keccak, to_bytes

TYPE_1559 = b"\x02"
CALL_FIELDS = frozenset(
    {"chainId", "nonce", "maxPriorityFeePerGas", "maxFeePerGas", "gas", "to", "value", "data",
     "from"}
)  # fmt: skip


class CallSigner:
    """Signs EIP-1559 transactions with one private key."""

    def __init__(self, private_key: bytes) -> None:
        self._key = PrivateKey(private_key)

    @staticmethod
    def can_sign(tx: Mapping[str, Any]) -> bool:
        """Whether ``tx`` has the shape this signer encodes: EIP-1559 fees and no other fields
        than :data:`CALL_FIELDS` (no access list, no legacy gas price)."""
        return set(tx) <= CALL_FIELDS and "maxFeePerGas" in tx

    def sign(self, tx: Mapping[str, Any]) -> bytes:
        """The raw signed transaction (what ``eth_sendRawTransaction`` takes)."""
        fields = [
            int(tx["chainId"]),
            int(tx["nonce"]),
            int(tx["maxPriorityFeePerGas"]),
            int(tx["maxFeePerGas"]),
            int(tx["gas"]),
            to_bytes(hexstr=tx["to"]) if tx.get("to") else b"",  # empty: a contract creation
            int(tx.get("value", 0)),
            _data_bytes(tx.get("data", b"")),
            [],  # access list
        ]
        digest = keccak(TYPE_1559 + rlp.encode(fields))
        signature = self._key.sign_recoverable(digest, hasher=None)  # r (32) || s (32) || v (1)
        r = int.from_bytes(signature[:32], "big")
        s = int.from_bytes(signature[32:64], "big")
        y_parity = signature[64]
        return TYPE_1559 + rlp.encode([*fields, y_parity, r, s])


def _data_bytes(data: str | bytes) -> bytes:
    return to_bytes(hexstr=data) if isinstance(data, str) else bytes(data)
