"""Addresses without web3: the same checksums and key addresses as eth_utils and eth_account."""

from __future__ import annotations

import subprocess
import sys

import pytest
from coincurve import PrivateKey, PublicKey
from eth_account import Account
from eth_utils import is_checksum_address
from eth_utils import to_checksum_address as eth_checksum
from hypothesis import given
from hypothesis import strategies as st

from allmende.chain.addresses import (
    address_of_key,
    address_of_public_key,
    is_address,
    to_checksum_address,
)

SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


@given(st.binary(min_size=20, max_size=20))
def test_checksum_equals_eth_utils(raw: bytes) -> None:
    lower = "0x" + raw.hex()
    assert to_checksum_address(lower) == eth_checksum(lower)
    assert to_checksum_address(lower.upper().replace("0X", "0x")) == eth_checksum(lower)


@given(st.binary(min_size=20, max_size=20), st.integers(min_value=0, max_value=39))
def test_is_address_agrees_with_eth_utils(raw: bytes, flip: int) -> None:
    checksummed = eth_checksum("0x" + raw.hex())
    assert is_address(checksummed) and is_address(checksummed.lower())
    digits = list(checksummed[2:])
    digits[flip] = digits[flip].swapcase()  # a wrong checksum, unless the digit has no case
    tampered = "0x" + "".join(digits)
    one_case = tampered[2:] in (tampered[2:].lower(), tampered[2:].upper())
    assert is_address(tampered) == (one_case or is_checksum_address(tampered))


@pytest.mark.parametrize(
    "value",
    ["", "0x", "0x123", "5fbdb2315678afecb367f032d93f642f64180aa3", "0x" + "g" * 40,
     "0x" + "a" * 41, None, 7, b"0x" + b"a" * 40],
)  # fmt: skip
def test_not_addresses(value: object) -> None:
    assert not is_address(value)
    if isinstance(value, str):
        with pytest.raises(ValueError, match="not an Ethereum address"):
            to_checksum_address(value)


@given(st.integers(min_value=1, max_value=SECP256K1_ORDER - 1))
def test_address_of_key_equals_eth_account(secret: int) -> None:
    key = secret.to_bytes(32, "big")
    expected = Account.from_key(key).address
    assert address_of_key(key) == expected
    assert address_of_key("0x" + key.hex()) == expected == address_of_key(key.hex())


@given(st.integers(min_value=1, max_value=SECP256K1_ORDER - 1))
def test_address_of_public_key_equals_eth_account(secret: int) -> None:
    key = secret.to_bytes(32, "big")
    public = PrivateKey(key).public_key
    expected = Account.from_key(key).address
    assert address_of_public_key(public) == expected
    assert address_of_public_key(PublicKey(public.format(compressed=True))) == expected


@pytest.mark.parametrize("key", ["0x1234", "zz" * 32, b"\x01" * 31, b"\x00" * 32])
def test_bad_keys_are_refused(key: str | bytes) -> None:
    with pytest.raises(ValueError):
        address_of_key(key)


def test_settings_modules_do_not_import_the_web3_stack() -> None:
    """`node init`, config checks and `job submit` load these; web3, eth_account or torch would
    add a second or more."""
    code = (
        "import sys\n"
        "import allmende.cli.node, allmende.chain.deployment, allmende.node.config\n"
        "import allmende.cli.job, allmende.node.control, allmende.node.submit\n"
        "from allmende.chain import Deployment\n"
        "print(sorted(m for m in ('web3', 'eth_account', 'torch') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=120)  # fmt: skip
    assert result.stdout.strip() == "[]"
