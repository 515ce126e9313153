"""EIP-712 signed peer messages: one envelope type, bound to the chain and the Registry.

A message is the typed struct::

    Message(string kind, bytes32 payloadHash, address sender, address recipient,
            uint256 nonce, uint64 expiry)

in the domain ``{name: "Allmende", version: "1", chainId, verifyingContract: Registry}``, so a
signature made for one chain or one deployment is worthless on another. ``payloadHash`` is the
keccak-256 of the payload's canonical JSON (sorted keys, compact, UTF-8), so roles can define
their own payloads (a JSON object) without new EIP-712 types. ``recipient`` is the node the
message is for: a message sent to one node cannot be replayed to another. ``nonce`` (random) and
``expiry`` (unix seconds) stop replays: a receiver remembers each ``(sender, nonce)`` until expiry
and refuses expired messages and expiries too far ahead.

On the wire a message is the JSON object :class:`SignedMessage`. :func:`sign_message` builds one,
:func:`verify_signature` checks everything that needs no state (schema, domain, expiry, recipient,
signature); the node adds the registration and replay checks (:mod:`allmende.net.api`).

The EIP-712 digest and the secp256k1 signature are computed here, on coincurve, rather than with
``eth_account``, whose import alone would cost every node start-up most of a second. Signatures
and recovered senders are the same as ``eth_account``'s, byte for byte (the unit tests compare).

Secure aggregation is the plane's first production user: trainers relay the protocol's signed
keys, shares, manifests and reveals through the job's aggregators (kinds ``secagg.post`` and
``secagg.board``, :mod:`allmende.node.roles.secure`).
"""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from coincurve import PrivateKey, PublicKey
from eth_utils import keccak, to_checksum_address
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from allmende.chain.addresses import SECP256K1_ORDER, address_of_public_key
from allmende.errors import MessageError
from allmende.net.limits import DEFAULT_MESSAGE_TTL_SECONDS, MAX_MESSAGE_TTL_SECONDS

DOMAIN_NAME = "Allmende"
DOMAIN_VERSION = "1"
MAX_KIND_LENGTH = 64

MESSAGE_TYPES = {
    "EIP712Domain": [
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "verifyingContract", "type": "address"},
    ],
    "Message": [
        {"name": "kind", "type": "string"},
        {"name": "payloadHash", "type": "bytes32"},
        {"name": "sender", "type": "address"},
        {"name": "recipient", "type": "address"},
        {"name": "nonce", "type": "uint256"},
        {"name": "expiry", "type": "uint64"},
    ],
}
_SIGNATURE_HEX = re.compile(r"0x[0-9a-fA-F]{130}")  # r || s || v, 65 bytes
_NO_SIGNATURE = "0x" + "00" * 65  # stands in while the fields are checked, before signing


@dataclass(frozen=True)
class MessageDomain:
    """What a signature is bound to: the chain and the Registry contract."""

    chain_id: int
    registry: str

    def as_eip712(self) -> dict[str, Any]:
        """The EIP-712 domain object."""
        return {
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": self.chain_id,
            "verifyingContract": to_checksum_address(self.registry),
        }


class SignedMessage(BaseModel):
    """A message on the wire (``POST /v1/messages`` body)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = Field(min_length=1, max_length=MAX_KIND_LENGTH, pattern=r"^[a-z0-9_.:-]+$")
    payload: dict[str, Any]
    sender: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$")
    recipient: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$")
    nonce: int = Field(ge=0, lt=2**256)
    expiry: int = Field(ge=0, lt=2**64)
    signature: str = Field(pattern=r"^0x[0-9a-fA-F]{130}$")

    @field_validator("nonce", "expiry", mode="before")
    @classmethod
    def _integers_only(cls, value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("must be an integer")
        return value


def payload_hash(payload: dict[str, Any]) -> bytes:
    """keccak-256 of the payload's canonical JSON."""
    try:
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise MessageError(f"The message payload is not plain JSON: {exc}.") from None
    return keccak(text.encode())


def _type_hash(struct: str) -> bytes:
    """keccak of the struct's EIP-712 ``encodeType``; neither struct refers to another type."""
    members = ",".join(f"{field['type']} {field['name']}" for field in MESSAGE_TYPES[struct])
    return keccak(f"{struct}({members})".encode())


_DOMAIN_TYPE_HASH = _type_hash("EIP712Domain")
_MESSAGE_TYPE_HASH = _type_hash("Message")


def _uint_word(value: int) -> bytes:
    """A uint256 or uint64 as its 32-byte big-endian ABI word."""
    return value.to_bytes(32, "big")


def _address_word(address: str) -> bytes:
    """An address as its 32-byte ABI word: 12 zero bytes, then the 20 address bytes."""
    return bytes(12) + bytes.fromhex(to_checksum_address(address)[2:])


def _digest(message: SignedMessage, domain: MessageDomain) -> bytes:
    """The EIP-712 hash that is signed: keccak(0x19 0x01 || domainSeparator || hashStruct)."""
    domain_separator = keccak(
        _DOMAIN_TYPE_HASH
        + keccak(DOMAIN_NAME.encode())
        + keccak(DOMAIN_VERSION.encode())
        + _uint_word(domain.chain_id)
        + _address_word(domain.registry)
    )
    struct_hash = keccak(
        _MESSAGE_TYPE_HASH
        + keccak(message.kind.encode())
        + payload_hash(message.payload)
        + _address_word(message.sender)
        + _address_word(message.recipient)
        + _uint_word(message.nonce)
        + _uint_word(message.expiry)
    )
    return keccak(b"\x19\x01" + domain_separator + struct_hash)


def _recover_signer(digest: bytes, signature: str) -> str:
    """The checksummed address that made ``signature`` over ``digest``; else :class:`MessageError`.

    Accepts exactly what ``eth_account.Account.recover_message`` accepts (the tests compare):

    - ``v`` 27 or 28 (what :func:`sign_message` writes), the bare recovery id 0 or 1, or any
      EIP-155 value from 35 up, read as recovery id ``(v - 35) % 2``; any other ``v`` is refused.
    - ``r`` and ``s`` must be below the curve order; ``r = 0``, ``s = 0`` and an ``r`` that is no
      curve point's x then fail in recovery (libsecp256k1, as in eth_account's coincurve backend).
    - A high ``s`` is accepted: ``(r, n - s)`` with the other recovery id recovers the same key
      as ``(r, s)``. Low ``s`` (EIP-2) binds transactions, not signed messages.
    """
    if not isinstance(signature, str) or not _SIGNATURE_HEX.fullmatch(signature):
        raise MessageError(
            "The message signature is invalid: it must be 0x and 130 hex digits (r, s, v)."
        )
    raw = bytes.fromhex(signature[2:])
    r, s, v = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:64], "big"), raw[64]
    if v in (0, 1):
        recovery_id = v
    elif v in (27, 28):
        recovery_id = v - 27
    elif v >= 35:
        recovery_id = (v - 35) % 2
    else:
        raise MessageError(
            f"The message signature is invalid: v is {v}, not 27 or 28 (nor 0, 1 or 35 and "
            "above); sign it with an Ethereum key."
        )
    if r >= SECP256K1_ORDER or s >= SECP256K1_ORDER:
        raise MessageError(
            "The message signature is invalid: r or s is not below the secp256k1 curve order."
        )
    try:
        public_key = PublicKey.from_signature_and_message(
            raw[:64] + bytes([recovery_id]), digest, hasher=None
        )
    except ValueError as exc:  # coincurve: r or s is 0, or r is no point's x coordinate
        raise MessageError(f"The message signature is invalid: {exc}.") from None
    return address_of_public_key(public_key)


def sign_message(
    account: Any,
    domain: MessageDomain,
    *,
    kind: str,
    payload: dict[str, Any],
    recipient: str,
    ttl_seconds: int = DEFAULT_MESSAGE_TTL_SECONDS,
    nonce: int | None = None,
    now: float | None = None,
) -> SignedMessage:
    """Sign a message from ``account`` to ``recipient``.

    ``account`` is anything with ``key`` (the 32-byte secp256k1 private key, any bytes-like
    value) and ``address`` (its address), such as an eth-account ``LocalAccount``. The signature
    is ``r || s || v`` with ``v`` 27 or 28 and a low ``s``, as ``eth_account`` makes it. Fields
    the envelope cannot carry (a bad ``kind``, a nonce or expiry out of range) raise
    :class:`MessageError` before anything is signed.
    """
    fields: dict[str, Any] = {
        "kind": kind,
        "payload": payload,
        "sender": to_checksum_address(account.address),
        "recipient": to_checksum_address(recipient),
        "nonce": secrets.randbits(128) if nonce is None else nonce,
        "expiry": int(time.time() if now is None else now) + ttl_seconds,
    }
    unsigned = parse_message({**fields, "signature": _NO_SIGNATURE})
    rsv = PrivateKey(bytes(account.key)).sign_recoverable(_digest(unsigned, domain), hasher=None)
    signature = rsv[:64] + bytes([27 + rsv[64]])  # r || s || recovery id  ->  r || s || v
    return unsigned.model_copy(update={"signature": "0x" + signature.hex()})


def parse_message(raw: bytes | str | dict[str, Any]) -> SignedMessage:
    """A :class:`SignedMessage` from JSON or a dict; else :class:`MessageError` naming the fault."""
    try:
        if isinstance(raw, dict):
            return SignedMessage.model_validate(raw)
        return SignedMessage.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
            for err in exc.errors()[:5]
        )
        raise MessageError(f"The message is malformed: {problems}.") from None


def verify_signature(
    message: SignedMessage,
    domain: MessageDomain,
    *,
    recipient: str,
    now: float | None = None,
    max_ttl_seconds: int = MAX_MESSAGE_TTL_SECONDS,
) -> str:
    """Check expiry, recipient and signature; return the checksummed sender.

    Raises :class:`MessageError` saying which check failed. Registration and replay are checked
    by the receiving node, which holds the state for them.
    """
    current = time.time() if now is None else now
    if message.expiry <= current:
        raise MessageError(
            f"The message expired at {message.expiry} (now {int(current)}); sign a fresh one."
        )
    if message.expiry > current + max_ttl_seconds:
        raise MessageError(
            f"The message expires {message.expiry - int(current)} s from now, more than the "
            f"{max_ttl_seconds} s this node accepts; sign it with a shorter lifetime."
        )
    if to_checksum_address(message.recipient) != to_checksum_address(recipient):
        raise MessageError(
            f"The message is addressed to {message.recipient}, not to this node ({recipient})."
        )
    signer = _recover_signer(_digest(message, domain), message.signature)
    if signer != to_checksum_address(message.sender):
        raise MessageError(
            f"The message claims sender {message.sender} but was signed by {signer} "
            "(or for another chain or Registry); it is forged or misaddressed."
        )
    return signer
