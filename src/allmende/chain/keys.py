"""A local signing key without the ``eth_account`` stack.

A node holds one secp256k1 key and signs its transactions (:mod:`allmende.chain.signing`) and
peer messages (:mod:`allmende.net.messages`) with libsecp256k1 directly, so it never imports
``eth_account``, whose keyfile module alone loads a BLS pairing library for over half a second
of every start. :class:`LocalKey` offers the two attributes the signers read from an
``eth_account`` account, ``key`` and ``address``, so either can be passed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from allmende.chain.addresses import address_of_key


@dataclass(frozen=True)
class LocalKey:
    """A private key (32 bytes) and its checksummed address. Its repr shows only the address."""

    key: bytes = field(repr=False)
    address: str

    @classmethod
    def from_key(cls, private_key: str | bytes) -> LocalKey:
        """The key from 32 bytes or 64 hex digits (``0x`` optional); :class:`ValueError` when it
        is not a valid secp256k1 private key."""
        address = address_of_key(private_key)  # checks the length, the digits and the range
        if isinstance(private_key, str):
            private_key = bytes.fromhex(private_key.removeprefix("0x"))
        return cls(key=bytes(private_key), address=address)
