"""The contract settings file of ``allmende contracts deploy``: TOML, known keys, checked values."""

from __future__ import annotations

from pathlib import Path

import pytest

from allmende.chain.deploy import ContractSettings, load_contract_settings
from allmende.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "contracts.toml"


def test_the_shipped_example_lists_every_key_at_its_default() -> None:
    text = EXAMPLE.read_text()
    for key in ContractSettings.model_fields:
        assert f"\n{key} = " in text, key
    assert load_contract_settings(EXAMPLE) == ContractSettings()


def test_keys_left_out_keep_their_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("min_stake = 7\n")
    assert load_contract_settings(path) == ContractSettings(min_stake=7)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("min_stak = 1\n", "has an unknown key 'min_stak'; the keys are min_stake, unbond_delay"),
        ("min_stake = -1\n", "is invalid at min_stake: Input should be greater than or equal to 0"),
        ("aggregator_share_bps = 10_001\n", "is invalid at aggregator_share_bps"),
        ("unbond_delay = '1 h'\n", "is invalid at unbond_delay"),
        ("[contracts]\nmin_stake = 1\n", "has an unknown key 'contracts'"),
        ("min_stake = \n", "is not valid TOML"),
    ],
)
def test_a_bad_file_is_one_line_naming_it_and_the_key(tmp_path: Path, text, message) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as refused:
        load_contract_settings(path)
    assert str(refused.value).startswith(f"The contract settings file {path} ")
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"No contract settings file at .*nope\.toml"):
        load_contract_settings(tmp_path / "nope.toml")
