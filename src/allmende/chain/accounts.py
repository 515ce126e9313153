"""Dev-chain accounts: the funded keys Anvil derives from the devnet mnemonic.

These keys are public knowledge; they are for a local devnet only, never for real money.

They are derived as Anvil derives them, by BIP-39 (the mnemonic's seed) and BIP-32 (the key at
``m/44'/60'/0'/0/index``), with ``hashlib`` and libsecp256k1 rather than ``eth_account``'s HD
wallet, whose import alone takes most of a second. A test compares the keys with
``eth_account``'s. The mnemonic's words are not checked against the BIP-39 word list: a dev
chain's mnemonic is a setting of this project, not user input.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import unicodedata

from coincurve import PrivateKey

from allmende.chain.addresses import SECP256K1_ORDER
from allmende.chain.keys import LocalKey

# The well-known test mnemonic Anvil and Hardhat use by default; every dev account is funded.
DEVNET_MNEMONIC = "test test test test test test test test test test test junk"
DEVNET_ACCOUNTS = 10
DEVNET_BALANCE_ETH = 10_000
DERIVATION_PATH = "m/44'/60'/0'/0/{index}"

HARDENED = 2**31
SEED_ROUNDS = 2048  # BIP-39: PBKDF2-HMAC-SHA512, 2048 iterations, salt "mnemonic" + passphrase
ACCOUNTS_BRANCH = (44 + HARDENED, 60 + HARDENED, 0 + HARDENED, 0)  # m/44'/60'/0'/0

Node = tuple[bytes, bytes]  # BIP-32 extended private key: (key, chain code)


def _seed(mnemonic: str) -> bytes:
    words = unicodedata.normalize("NFKD", " ".join(mnemonic.split()))
    return hashlib.pbkdf2_hmac("sha512", words.encode(), b"mnemonic", SEED_ROUNDS)


def _child(node: Node, index: int) -> Node:
    """BIP-32 private child key derivation (CKDpriv)."""
    key, chain_code = node
    if index >= HARDENED:
        data = b"\x00" + key + index.to_bytes(4, "big")
    else:
        data = PrivateKey(key).public_key.format(compressed=True) + index.to_bytes(4, "big")
    digest = hmac.new(chain_code, data, hashlib.sha512).digest()
    tweak = int.from_bytes(digest[:32], "big")
    child = (tweak + int.from_bytes(key, "big")) % SECP256K1_ORDER
    if tweak >= SECP256K1_ORDER or child == 0:  # probability below 2**-127; BIP-32 skips it
        raise ValueError(f"BIP-32 child {index} is invalid; use the next index")
    return child.to_bytes(32, "big"), digest[32:]


@functools.cache
def _accounts_branch(mnemonic: str) -> Node:
    """The extended key at ``m/44'/60'/0'/0`` of ``mnemonic`` (every dev account is a child)."""
    digest = hmac.new(b"Bitcoin seed", _seed(mnemonic), hashlib.sha512).digest()
    node: Node = (digest[:32], digest[32:])
    for index in ACCOUNTS_BRANCH:
        node = _child(node, index)
    return node


def dev_account(index: int, *, mnemonic: str = DEVNET_MNEMONIC) -> LocalKey:
    """The ``index``-th Anvil dev account (index 0 deploys the contracts)."""
    if not 0 <= index < HARDENED:
        raise ValueError(f"A dev account index must be >= 0 and < 2**31, got {index}.")
    key, _ = _child(_accounts_branch(mnemonic), index)
    return LocalKey.from_key(key)


def dev_keys(count: int = DEVNET_ACCOUNTS, *, mnemonic: str = DEVNET_MNEMONIC) -> list[str]:
    """Private keys (``0x`` hex) of the first ``count`` dev accounts."""
    return ["0x" + dev_account(i, mnemonic=mnemonic).key.hex() for i in range(count)]
