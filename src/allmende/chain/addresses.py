"""Ethereum addresses without the web3 stack: checks, EIP-55 checksums, a key's address.

Commands that only write or read settings (``node init``, config validation, the deployment
file) need no more than this; importing ``web3`` or ``eth_account`` for it costs them over a
second. Checksums and key addresses equal ``eth_utils``' and ``eth_account``'s (tests compare
them). :func:`is_address` is stricter than ``eth_utils.is_address``: a mixed-case address must
carry its EIP-55 checksum, so a mistyped address in a setting is caught rather than trusted.
"""

from __future__ import annotations

import re

from coincurve import PrivateKey, PublicKey
from eth_hash.auto import keccak as keccak256

SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_HEX_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


def to_checksum_address(value: str) -> str:
    """``value`` (``0x`` and 40 hex digits, any case) in EIP-55 mixed-case form."""
    if not _HEX_ADDRESS.fullmatch(value):
        raise ValueError(f"{value!r} is not an Ethereum address (0x and 40 hex digits)")
    digits = value[2:].lower()
    nibbles = keccak256(digits.encode("ascii")).hex()[:40]
    return "0x" + "".join(
        char.upper() if int(nibble, 16) >= 8 else char
        for char, nibble in zip(digits, nibbles, strict=True)
    )


def is_address(value: object) -> bool:
    """Whether ``value`` is a hex address: all one case, or mixed case with a valid checksum."""
    if not isinstance(value, str) or not _HEX_ADDRESS.fullmatch(value):
        return False
    digits = value[2:]
    if digits == digits.lower() or digits == digits.upper():
        return True
    return to_checksum_address(value) == value


def address_of_key(private_key: str | bytes) -> str:
    """The checksummed address of a secp256k1 private key (32 bytes, or hex with or without 0x)."""
    if isinstance(private_key, str):
        text = private_key.removeprefix("0x")
        if not re.fullmatch(r"[0-9a-fA-F]{64}", text):
            raise ValueError("a private key is 32 bytes: 64 hex digits")
        private_key = bytes.fromhex(text)
    if len(private_key) != 32:
        raise ValueError("a private key is 32 bytes: 64 hex digits")
    return address_of_public_key(PrivateKey(private_key).public_key)


def address_of_public_key(public_key: PublicKey) -> str:
    """The checksummed address of a secp256k1 public key: the last 20 bytes of keccak(x || y)."""
    point = public_key.format(compressed=False)[1:]  # drop the 0x04 prefix: x || y, 64 bytes
    return to_checksum_address("0x" + keccak256(point)[-20:].hex())
