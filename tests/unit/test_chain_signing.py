"""The lean transaction signer gives exactly eth_account's bytes, for any call or creation."""

from __future__ import annotations

from eth_account import Account
from eth_utils import to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from allmende.chain.signing import CallSigner

UINT64 = st.integers(min_value=0, max_value=2**64 - 1)
UINT256 = st.integers(min_value=0, max_value=2**256 - 1)

calls = st.fixed_dictionaries({
    "chainId": st.integers(min_value=1, max_value=2**32),
    "nonce": UINT64,
    "maxPriorityFeePerGas": UINT64,
    "maxFeePerGas": UINT64,
    "gas": st.integers(min_value=21_000, max_value=30_000_000),
    "to": st.binary(min_size=20, max_size=20).map(to_checksum_address),
    "value": UINT256,
    "data": st.binary(max_size=600).map(lambda b: "0x" + b.hex()),
})  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(key=st.binary(min_size=32, max_size=32).filter(lambda k: 0 < int.from_bytes(k, "big")
                                                      < 2**256 - 2**129),
       tx=calls)  # fmt: skip
def test_the_bytes_equal_eth_account(key: bytes, tx: dict) -> None:
    account = Account.from_key(key)
    tx = {**tx, "from": account.address}
    assert CallSigner.can_sign(tx)
    assert CallSigner(key).sign(tx) == bytes(account.sign_transaction(tx).raw_transaction)


def test_the_sender_recovers_to_the_key() -> None:
    account = Account.from_key(b"\x07" * 32)
    tx = {"chainId": 31337, "nonce": 3, "maxPriorityFeePerGas": 1, "maxFeePerGas": 2,
          "gas": 50_000, "to": "0x" + "ab" * 20, "value": 0, "data": "0x1234"}  # fmt: skip
    raw = CallSigner(account.key).sign(tx)
    assert Account.recover_transaction(raw) == account.address


@settings(max_examples=50, deadline=None)
@given(tx=calls, code=st.binary(min_size=1, max_size=2000))
def test_a_contract_creation_equals_eth_account(tx: dict, code: bytes) -> None:
    account = Account.from_key(b"\x05" * 32)
    creation = {key: value for key, value in tx.items() if key != "to"}
    creation.update({"from": account.address, "data": "0x" + code.hex()})
    assert CallSigner.can_sign(creation)
    raw = CallSigner(account.key).sign(creation)
    assert raw == bytes(account.sign_transaction(creation).raw_transaction)
    assert Account.recover_transaction(raw) == account.address


def test_other_shapes_are_refused() -> None:
    base = {"chainId": 1, "nonce": 0, "maxPriorityFeePerGas": 1, "maxFeePerGas": 2,
            "gas": 21_000, "value": 0, "data": "0x"}  # fmt: skip
    assert CallSigner.can_sign(base)  # a deployment: no recipient
    assert not CallSigner.can_sign({**base, "to": "0x" + "ab" * 20, "accessList": []})
    assert not CallSigner.can_sign({"to": "0x" + "ab" * 20, "gasPrice": 1, "nonce": 0,
                                    "gas": 21_000, "chainId": 1})  # a legacy transaction
