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
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak, to_checksum_address
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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


def _typed_data(domain: MessageDomain, fields: dict[str, Any]) -> Any:
    return encode_typed_data(
        full_message={
            "types": MESSAGE_TYPES,
            "primaryType": "Message",
            "domain": domain.as_eip712(),
            "message": {
                "kind": fields["kind"],
                "payloadHash": payload_hash(fields["payload"]),
                "sender": to_checksum_address(fields["sender"]),
                "recipient": to_checksum_address(fields["recipient"]),
                "nonce": fields["nonce"],
                "expiry": fields["expiry"],
            },
        }
    )


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
    """Sign a message from ``account`` (an eth-account ``LocalAccount``) to ``recipient``."""
    fields: dict[str, Any] = {
        "kind": kind,
        "payload": payload,
        "sender": to_checksum_address(account.address),
        "recipient": to_checksum_address(recipient),
        "nonce": secrets.randbits(128) if nonce is None else nonce,
        "expiry": int(time.time() if now is None else now) + ttl_seconds,
    }
    signed = account.sign_message(_typed_data(domain, fields))
    return SignedMessage(**fields, signature="0x" + bytes(signed.signature).hex())


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
    fields = message.model_dump(exclude={"signature"})
    try:
        signer = Account.recover_message(_typed_data(domain, fields), signature=message.signature)
    except Exception as exc:  # eth-keys raises several types for a malformed signature
        raise MessageError(f"The message signature is invalid: {exc}.") from None
    if signer != to_checksum_address(message.sender):
        raise MessageError(
            f"The message claims sender {message.sender} but was signed by {signer} "
            "(or for another chain or Registry); it is forged or misaddressed."
        )
    return signer
