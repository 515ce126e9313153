"""Dev accounts are derived from the mnemonic exactly as Anvil derives them."""

from __future__ import annotations

import pytest
from eth_account import Account

from allmende.chain.accounts import dev_account, dev_keys

# Anvil's documented first two accounts for the default test mnemonic.
ANVIL_ACCOUNT_0 = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
ANVIL_ACCOUNT_1 = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def test_first_accounts_match_anvil() -> None:
    keys = dev_keys(2)
    assert [Account.from_key(k).address for k in keys] == [ANVIL_ACCOUNT_0, ANVIL_ACCOUNT_1]
    assert dev_account(1).address == ANVIL_ACCOUNT_1


def test_another_mnemonic_gives_other_accounts() -> None:
    other = "legal winner thank year wave sausage worth useful legal winner thank yellow"
    assert dev_account(0, mnemonic=other).address != ANVIL_ACCOUNT_0


def test_negative_index_is_refused() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        dev_account(-1)


MNEMONICS = (
    "test test test test test test test test test test test junk",
    "legal winner thank year wave sausage worth useful legal winner thank yellow",
    "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about",
    "zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo wrong",
)


@pytest.mark.parametrize("mnemonic", MNEMONICS)
def test_keys_equal_eth_accounts_hd_wallet(mnemonic: str) -> None:
    Account.enable_unaudited_hdwallet_features()
    for index in (0, 1, 7, 33, 2**31 - 1):
        reference = Account.from_mnemonic(mnemonic, account_path=f"m/44'/60'/0'/0/{index}")
        ours = dev_account(index, mnemonic=mnemonic)
        assert (ours.key, ours.address) == (bytes(reference.key), reference.address)


def test_an_index_beyond_the_unhardened_range_is_refused() -> None:
    with pytest.raises(ValueError, match="2\\*\\*31"):
        dev_account(2**31)


def test_the_repr_of_a_dev_account_hides_its_key() -> None:
    account = dev_account(0)
    assert account.key.hex() not in repr(account)
    assert ANVIL_ACCOUNT_0 in repr(account)
