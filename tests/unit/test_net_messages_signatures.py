"""EIP-712 digests, signatures and recovery equal eth_account's, which serves only as reference.

`allmende.net.messages` computes them on coincurve so that a node need not import eth_account.
These tests hold it to eth_account byte for byte: for random fields, and for every class of
malformed signature (each v, a high s, r or s zero, at or above the curve order, or no point).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_utils import keccak, to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from allmende.errors import MessageError
from allmende.net.messages import (
    MESSAGE_TYPES,
    SECP256K1_ORDER,
    MessageDomain,
    SignedMessage,
    _digest,
    payload_hash,
    sign_message,
    verify_signature,
)

N = SECP256K1_ORDER
SENDER = Account.from_key("0x" + "11" * 32)
RECEIVER = Account.from_key("0x" + "22" * 32)
DOMAIN = MessageDomain(chain_id=31337, registry="0x" + "ab" * 20)
NO_SIGNATURE = "0x" + "00" * 65

addresses = st.binary(min_size=20, max_size=20).map(lambda raw: to_checksum_address(raw.hex()))
json_values = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
messages = st.builds(
    SignedMessage,
    kind=st.from_regex(r"[a-z0-9_.:-]{1,64}", fullmatch=True),
    payload=st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    sender=addresses,
    recipient=addresses,
    nonce=st.integers(min_value=0, max_value=2**256 - 1),
    expiry=st.integers(min_value=0, max_value=2**64 - 1),
    signature=st.just(NO_SIGNATURE),
)
domains = st.builds(
    MessageDomain, chain_id=st.integers(min_value=0, max_value=2**256 - 1), registry=addresses
)
# r and s: the edges of the valid range and beyond it, or anything in 256 bits
words = st.sampled_from([0, 1, N - 1, N, N + 1, 2**256 - 1]) | st.integers(0, 2**256 - 1)


def reference(message: SignedMessage, domain: MessageDomain) -> SignableMessage:
    """What the signer signed, encoded by eth_account."""
    return encode_typed_data(
        full_message={
            "types": MESSAGE_TYPES,
            "primaryType": "Message",
            "domain": domain.as_eip712(),
            "message": {
                "kind": message.kind,
                "payloadHash": payload_hash(message.payload),
                "sender": message.sender,
                "recipient": message.recipient,
                "nonce": message.nonce,
                "expiry": message.expiry,
            },
        }
    )


def reference_signer(message: SignedMessage, domain: MessageDomain = DOMAIN) -> str | None:
    """The sender eth_account recovers from the message's signature, or None if it refuses."""
    try:
        return Account.recover_message(reference(message, domain), signature=message.signature)
    except Exception:  # eth_account raises ValueError, BadSignature and others
        return None


def verify(message: SignedMessage, domain: MessageDomain = DOMAIN) -> str:
    """verify_signature with the expiry checks out of the way."""
    return verify_signature(
        message,
        domain,
        recipient=message.recipient,
        now=message.expiry - 1,
        max_ttl_seconds=2**64,
    )


def assert_verifies_as(
    message: SignedMessage, signer: str | None, domain: MessageDomain = DOMAIN
) -> None:
    """verify_signature names the same signer as eth_account, or refuses the signature with it.

    The sender is inside the signed struct, so a signature nobody made for this message recovers
    some other key: verify_signature then refuses it naming that key, which must be eth_account's.
    """
    if signer is None:
        with pytest.raises(MessageError, match="signature is invalid"):
            verify(message, domain)
    elif signer == message.sender:
        assert verify(message, domain) == signer
    else:
        with pytest.raises(MessageError, match=f"but was signed by {signer} "):
            verify(message, domain)


def with_signature(message: SignedMessage, r: int, s: int, v: int) -> SignedMessage:
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([v])
    return message.model_copy(update={"signature": "0x" + raw.hex()})


def rsv(message: SignedMessage) -> tuple[int, int, int]:
    raw = bytes.fromhex(message.signature[2:])
    return int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:64], "big"), raw[64]


def genuine() -> SignedMessage:
    """A message SENDER signed; the same each call."""
    return sign_message(
        SENDER,
        DOMAIN,
        kind="ping",
        payload={"round": 3},
        recipient=RECEIVER.address,
        nonce=7,
        now=1_700_000_000,
    )


def test_a_known_signature_is_unchanged() -> None:
    """Pinned from eth_account 0.14: a change to the types or the domain breaks every peer."""
    message = sign_message(
        SENDER,
        DOMAIN,
        kind="ping",
        payload={"round": 3},
        recipient=RECEIVER.address,
        nonce=7,
        ttl_seconds=0,
        now=1_700_000_000,
    )
    assert _digest(message, DOMAIN).hex() == (
        "2a484d99f0ef75dcea0c5cc96686889a0a27f440c9f68ab34474f404ec6e7372"
    )
    assert message.signature == (
        "0x59c2de4c9aba69ddc67ffa278aadfeba622dd89094623117d2ac40e28cf1f507"
        "348807056116edc51372bbf458dd94819febe4e4b12b59524a09c95695981cfc1b"
    )


@given(messages, domains)
def test_digest_equals_eth_account(message: SignedMessage, domain: MessageDomain) -> None:
    signable = reference(message, domain)
    # EIP-191 version 0x01: keccak(0x19 || 0x01 || domainSeparator || hashStruct(message))
    expected = keccak(b"\x19" + signable.version + signable.header + signable.body)
    assert _digest(message, domain) == expected


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=1, max_value=N - 1), messages, domains)
def test_signatures_equal_eth_account(secret: int, fields: SignedMessage, domain: MessageDomain):
    key = secret.to_bytes(32, "big")
    account = Account.from_key(key)
    args = {
        "kind": fields.kind,
        "payload": fields.payload,
        "recipient": fields.recipient,
        "nonce": fields.nonce,
        "ttl_seconds": fields.expiry,
        "now": 0,
    }
    ours = sign_message(account, domain, **args)
    plain = SimpleNamespace(key=bytearray(key), address=account.address.lower())
    assert sign_message(plain, domain, **args) == ours
    expected = Account.sign_message(reference(ours, domain), key).signature
    assert ours.signature == "0x" + bytes(expected).hex()
    assert verify(ours, domain) == account.address


@settings(max_examples=300, deadline=None)
@given(messages, domains, words, words, st.integers(min_value=0, max_value=255))
def test_recovery_equals_eth_account(
    fields: SignedMessage, domain: MessageDomain, r: int, s: int, v: int
) -> None:
    message = with_signature(fields, r, s, v)
    assert_verifies_as(message, reference_signer(message, domain), domain)


def test_every_v_is_read_as_eth_account_reads_it() -> None:
    r, s, v = rsv(genuine())
    recovery_id = v - 27
    for candidate in range(256):
        message = with_signature(genuine(), r, s, candidate)
        expected = reference_signer(message)
        if candidate in (0, 1, 27, 28) or candidate >= 35:  # the rule, as documented
            offset = 0 if candidate < 2 else 27 if candidate < 35 else 35
            same_key = (candidate - offset) % 2 == recovery_id
            assert expected is not None, candidate
            assert (expected == SENDER.address) == same_key, candidate
            assert_verifies_as(message, expected)
        else:
            assert expected is None, candidate
            with pytest.raises(MessageError, match=f"v is {candidate},"):
                verify(message)


@pytest.mark.parametrize("offset", [0, 27, 35, 37, 219])
def test_the_other_spellings_of_v_verify_as_the_sender(offset: int) -> None:
    r, s, v = rsv(genuine())
    message = with_signature(genuine(), r, s, offset + v - 27)
    assert reference_signer(message) == SENDER.address
    assert verify(message) == SENDER.address


def test_a_high_s_signature_is_accepted_like_eth_account() -> None:
    r, s, v = rsv(genuine())
    assert s <= N // 2  # we sign with a low s, as eth_account does
    twin = with_signature(genuine(), r, N - s, 55 - v)  # 27 <-> 28
    assert reference_signer(twin) == SENDER.address
    assert verify(twin) == SENDER.address
    other = with_signature(genuine(), r, N - s, v)  # a high s with the same v: another key
    assert reference_signer(other) not in (None, SENDER.address)
    with pytest.raises(MessageError, match="forged"):
        verify(other)


def _no_point_x() -> int:
    """The largest r below the order that is no curve point's x (x^3 + 7 is not a square)."""
    p = 2**256 - 2**32 - 977
    return next(x for x in range(N - 1, 0, -1) if pow(x**3 + 7, (p - 1) // 2, p) != 1)


@pytest.mark.parametrize(
    "r, s, reason",
    [
        (0, None, "failed to recover"),
        (None, 0, "failed to recover"),
        (0, 0, "failed to recover"),
        (N, None, "curve order"),
        (None, N, "curve order"),
        (2**256 - 1, None, "curve order"),
        (None, 2**256 - 1, "curve order"),
        (_no_point_x(), None, "failed to recover"),
    ],
)
def test_r_and_s_out_of_range_or_off_the_curve_are_refused(
    r: int | None, s: int | None, reason: str
) -> None:
    good_r, good_s, _ = rsv(genuine())
    r, s = good_r if r is None else r, good_s if s is None else s
    for v in (27, 28):
        message = with_signature(genuine(), r, s, v)
        assert reference_signer(message) is None
        with pytest.raises(MessageError, match=f"signature is invalid.*{reason}"):
            verify(message)


def test_r_and_s_just_below_the_order_pass_the_range_check() -> None:
    good_r, _, v = rsv(genuine())
    message = with_signature(genuine(), good_r, N - 1, v)
    signer = reference_signer(message)
    assert signer not in (None, SENDER.address)
    assert_verifies_as(message, signer)


@pytest.mark.parametrize(
    "signature", ["0x" + "11" * 64, "0x" + "11" * 66, "0x" + "zz" * 65, "11" * 65 + "00", ""]
)
def test_a_signature_of_the_wrong_shape_is_refused(signature: str) -> None:
    """Only reachable past the schema (model_copy); still a MessageError, not a crash."""
    message = genuine().model_copy(update={"signature": signature})
    with pytest.raises(MessageError, match="0x and 130 hex digits"):
        verify(message)
