"""Dev-chain accounts: the funded keys Anvil derives from the devnet mnemonic.

These keys are public knowledge; they are for a local devnet only, never for real money.
"""

from __future__ import annotations

from eth_account import Account
from eth_account.signers.local import LocalAccount

# The well-known test mnemonic Anvil and Hardhat use by default; every dev account is funded.
DEVNET_MNEMONIC = "test test test test test test test test test test test junk"
DEVNET_ACCOUNTS = 10
DEVNET_BALANCE_ETH = 10_000
DERIVATION_PATH = "m/44'/60'/0'/0/{index}"


def dev_account(index: int, *, mnemonic: str = DEVNET_MNEMONIC) -> LocalAccount:
    """The ``index``-th Anvil dev account (index 0 deploys the contracts)."""
    if index < 0:
        raise ValueError(f"A dev account index must be >= 0, got {index}.")
    Account.enable_unaudited_hdwallet_features()
    return Account.from_mnemonic(mnemonic, account_path=DERIVATION_PATH.format(index=index))


def dev_keys(count: int = DEVNET_ACCOUNTS, *, mnemonic: str = DEVNET_MNEMONIC) -> list[str]:
    """Private keys (``0x`` hex) of the first ``count`` dev accounts."""
    return ["0x" + bytes(dev_account(i, mnemonic=mnemonic).key).hex() for i in range(count)]
