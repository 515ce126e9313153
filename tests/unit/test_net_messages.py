"""EIP-712 peer messages: signing, and every way verification refuses a message."""

from __future__ import annotations

import subprocess
import sys
import time
from types import SimpleNamespace

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


def test_any_object_with_a_key_and_an_address_can_sign() -> None:
    plain = SimpleNamespace(key=bytearray(SENDER.key), address=SENDER.address.lower())
    args = {"kind": "ping", "payload": {}, "recipient": RECEIVER.address, "nonce": 5, "now": 1e9}
    message = sign_message(SENDER, DOMAIN, **args)
    assert sign_message(plain, DOMAIN, **args) == message
    assert message.sender == SENDER.address
    assert message.signature[-2:] in ("1b", "1c")  # v is 27 or 28


def test_an_account_whose_address_is_not_its_key_signs_forgeries() -> None:
    liar = SimpleNamespace(key=SENDER.key, address=RECEIVER.address)
    message = sign_message(liar, DOMAIN, kind="ping", payload={}, recipient=RECEIVER.address)
    with pytest.raises(MessageError, match=f"signed by {SENDER.address}"):
        verify_signature(message, DOMAIN, recipient=RECEIVER.address)


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"nonce": -1}, "nonce"),
        ({"nonce": 2**256}, "nonce"),
        ({"nonce": True}, "nonce"),
        ({"ttl_seconds": 2**64}, "expiry"),
        ({"kind": "Bad Kind"}, "kind"),
    ],
)
def test_fields_the_envelope_cannot_carry_are_refused_before_signing(
    overrides: dict[str, object], field: str
) -> None:
    with pytest.raises(MessageError, match=f"malformed: {field}"):
        _signed(**overrides)


def test_importing_messages_does_not_load_eth_account() -> None:
    """eth_account's import (through eth_keyfile and py_ecc) costs a node most of a second."""
    code = (
        "import sys\n"
        "import allmende.net.messages\n"
        "print(sorted(m for m in ('eth_account', 'eth_keyfile', 'py_ecc') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=120)  # fmt: skip
    assert result.stdout.strip() == "[]"


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
