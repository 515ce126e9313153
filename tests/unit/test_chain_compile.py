"""Compiling contracts: ABI and bytecode out, interfaces resolved, results cached by source hash."""

from __future__ import annotations

from pathlib import Path

import pytest

from allmende.chain import compile as compile_module
from allmende.chain.compile import compile_contracts, source_key
from allmende.errors import ChainError

INTERFACE = """
@view
@external
def count() -> uint256:
    ...
"""

COUNTER = """# pragma version 0.4.3
from interfaces import ICounter
implements: ICounter

event Bumped:
    value: uint256

count: public(uint256)

@external
def bump(by: uint256):
    assert by > 0, "counter: zero"
    self.count += by
    log Bumped(value=self.count)
"""


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    (tmp_path / "interfaces").mkdir()
    (tmp_path / "interfaces" / "ICounter.vyi").write_text(INTERFACE)
    (tmp_path / "Counter.vy").write_text(COUNTER)
    return tmp_path


def test_compiles_abi_and_bytecode_with_an_interface_import(sources: Path, tmp_path: Path) -> None:
    compiled = compile_contracts(source_dir=sources, cache_dir=tmp_path / "cache")
    assert set(compiled) == {"Counter"}
    names = {item.get("name") for item in compiled["Counter"].abi}
    assert {"bump", "count", "Bumped"} <= names
    assert compiled["Counter"].bytecode.startswith("0x") and len(compiled["Counter"].bytecode) > 100


def test_second_compile_is_served_from_the_cache(
    sources: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    first = compile_contracts(source_dir=sources, cache_dir=cache)
    assert (cache / "contracts" / f"{source_key(sources)}.json").is_file()

    def refuse(*_: object) -> None:
        raise AssertionError("recompiled although the cache was valid")

    monkeypatch.setattr(compile_module, "_compile_one", refuse)
    assert compile_contracts(source_dir=sources, cache_dir=cache) == first


def test_editing_any_source_changes_the_key_and_recompiles(sources: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    before = source_key(sources)
    compile_contracts(source_dir=sources, cache_dir=cache)
    (sources / "interfaces" / "ICounter.vyi").write_text(INTERFACE + "\n# edited\n")
    after = source_key(sources)
    assert after != before
    compile_contracts(source_dir=sources, cache_dir=cache)
    assert (cache / "contracts" / f"{after}.json").is_file()


def test_a_damaged_cache_file_is_recompiled(sources: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (cache / "contracts").mkdir(parents=True)
    (cache / "contracts" / f"{source_key(sources)}.json").write_text("{not json")
    compiled = compile_contracts(source_dir=sources, cache_dir=cache)
    assert compiled["Counter"].bytecode.startswith("0x")


def test_a_contract_that_does_not_compile_raises_chain_error(sources: Path, tmp_path: Path) -> None:
    (sources / "Broken.vy").write_text("# pragma version 0.4.3\n@external\ndef f() -> uint256:\n")
    with pytest.raises(ChainError, match=r"Broken\.vy does not compile"):
        compile_contracts(source_dir=sources, cache_dir=tmp_path / "cache")


def test_a_directory_without_contracts_raises_chain_error(tmp_path: Path) -> None:
    with pytest.raises(ChainError, match="No Vyper contracts"):
        compile_contracts(source_dir=tmp_path, cache_dir=tmp_path / "cache")
    with pytest.raises(ChainError, match="does not exist"):
        compile_contracts(source_dir=tmp_path / "missing", cache_dir=tmp_path / "cache")


def test_the_project_contracts_compile() -> None:
    compiled = compile_contracts()
    assert {"Registry", "Jobs"} <= set(compiled)
