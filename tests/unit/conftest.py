"""Fixtures several unit test modules share."""

from __future__ import annotations

import pytest

from allmende.chain.compile import compile_contracts
from allmende.chain.deployment import ContractInfo, Deployment


@pytest.fixture(scope="session")
def deployment() -> Deployment:
    """The real contracts' ABIs at fixed addresses (Anvil's first two deployments); no chain."""
    compiled = compile_contracts()
    return Deployment(
        chain_id=31337,
        rpc_url="http://127.0.0.1:8545",
        deploy_block=1,
        registry=ContractInfo(
            address="0x5FbDB2315678afecb367f032d93F642f64180aa3", abi=compiled["Registry"].abi
        ),
        jobs=ContractInfo(
            address="0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512", abi=compiled["Jobs"].abi
        ),
    )
