"""EIP-712 peer messages: signing, and every way verification refuses a message."""

from __future__ import annotations

import time

import pytest
from eth_account import Account

from allmende.errors import MessageError
from allmende.net.messages import (
    MessageDomain,
    parse_message,
    payload_hash,
    sign_message,
    verify_signature,
)

SENDER = Account.from_key("0x" + "11" * 32)
RECEIVER = Account.from_key("0x" + "22" * 32)
DOMAIN = MessageDomain(chain_id=31337, registry="0x" + "ab" * 20)


def _signed(**overrides):
    args = {"kind": "ping", "payload": {"round": 3, "hash": "ff"}, "recipient": RECEIVER.address}
    args.update(overrides)
    return sign_message(SENDER, DOMAIN, **args)


def test_a_signed_message_verifies_and_names_its_sender() -> None:
    message = _signed()
    assert verify_signature(message, DOMAIN, recipient=RECEIVER.address) == SENDER.address
    again = parse_message(message.model_dump_json())
    assert verify_signature(again, DOMAIN, recipient=RECEIVER.address) == SENDER.address


def test_each_message_gets_a_fresh_nonce() -> None:
    assert _signed().nonce != _signed().nonce


def test_payload_hash_ignores_key_order_but_not_values() -> None:
    assert payload_hash({"a": 1, "b": 2}) == payload_hash({"b": 2, "a": 1})
    assert payload_hash({"a": 1}) != payload_hash({"a": 2})
    with pytest.raises(MessageError, match="plain JSON"):
        payload_hash({"a": object()})


@pytest.mark.parametrize(
    "field, value",
    [
        ("payload", {"round": 4, "hash": "ff"}),
        ("kind", "pong"),
        ("nonce", 1),
        ("sender", RECEIVER.address),
    ],
)
def test_tampering_with_any_field_is_detected(field: str, value: object) -> None:
    message = _signed()
    forged = message.model_copy(update={field: value})
    with pytest.raises(MessageError, match=r"forged|signed by"):
        verify_signature(forged, DOMAIN, recipient=RECEIVER.address)


def test_a_signature_for_another_chain_or_registry_is_refused() -> None:
    message = _signed()
    for domain in (
        MessageDomain(chain_id=1, registry=DOMAIN.registry),
        MessageDomain(chain_id=31337, registry="0x" + "cd" * 20),
    ):
        with pytest.raises(MessageError, match="forged"):
            verify_signature(message, domain, recipient=RECEIVER.address)


def test_expired_and_far_future_messages_are_refused() -> None:
    old = _signed(ttl_seconds=60, now=time.time() - 120)
    with pytest.raises(MessageError, match="expired"):
        verify_signature(old, DOMAIN, recipient=RECEIVER.address)
    far = _signed(ttl_seconds=3600)
    with pytest.raises(MessageError, match="shorter lifetime"):
        verify_signature(far, DOMAIN, recipient=RECEIVER.address, max_ttl_seconds=600)


def test_a_message_for_another_node_is_refused() -> None:
    with pytest.raises(MessageError, match="addressed to"):
        verify_signature(_signed(), DOMAIN, recipient=SENDER.address)


def test_a_garbage_signature_is_refused() -> None:
    message = _signed().model_copy(update={"signature": "0x" + "00" * 65})
    with pytest.raises(MessageError, match=r"invalid|forged"):
        verify_signature(message, DOMAIN, recipient=RECEIVER.address)


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'{"kind": "ping"}',
    ],
)
def test_malformed_messages_are_refused_with_the_reason(raw: bytes) -> None:
    with pytest.raises(MessageError, match="malformed"):
        parse_message(raw)


def test_wrong_types_and_unknown_fields_are_refused() -> None:
    good = _signed().model_dump()
    for bad in (
        {**good, "extra": 1},
        {**good, "nonce": "5"},
        {**good, "nonce": True},
        {**good, "nonce": -1},
        {**good, "kind": "Bad Kind"},
        {**good, "sender": "0x123"},
        {**good, "payload": [1, 2]},
    ):
        with pytest.raises(MessageError, match="malformed"):
            parse_message(bad)
