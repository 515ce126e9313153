"""The gas bounds of commit_update, commit_vote and a reveal below the quorum (80,000) and of the
finalizing reveal (150,000), measured on a real Anvil by benchmarks/gas.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

GAS_SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gas.py"


def _gas_benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("allmende_gas_benchmark", GAS_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("n_trainers", [6, pytest.param(32, marks=pytest.mark.long)])
def test_commits_votes_and_the_finalizing_reveal_stay_within_their_bounds(n_trainers: int) -> None:
    gas = _gas_benchmark()
    assert gas.DEFAULT_ANVIL.exists(), "Anvil is missing; run `make setup` first."
    with gas.anvil(gas.DEFAULT_ANVIL, 2 + gas.AGGREGATORS + n_trainers) as w3:
        table = gas.run_job(gas.GasMeter(w3), n_trainers)
    for name in gas.BOUNDED:
        # every call of the scenario succeeded and paid at least the 21,000 intrinsic gas
        assert 21_000 < table[name] <= gas.GAS_BOUND, (name, table[name])
    # the quorum reveal also finalizes the round, within its own bound
    assert table["Jobs.reveal"] < table[gas.FINALIZING] <= gas.FINALIZING_BOUND
    assert not any("finalize_round" in name for name in table)
