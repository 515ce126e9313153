"""Fixtures for the contract tests: titanoboa deployments of Registry and Jobs.

Contracts compile once per session from ``contracts/``; every test runs inside a
``boa.env.anchor()`` so the chain state it leaves behind is rolled back.
"""

from __future__ import annotations

from typing import Any

import boa
import pytest
from contract_helpers import (
    ADMIN_DELAY,
    AGGREGATOR_SHARE_BPS,
    CHALLENGE_WINDOW,
    CONTRACTS,
    HERE,
    MIN_STAKE,
    SLASH_AMOUNT,
    UNBOND_DELAY,
)
from hypothesis import settings

# `make test`: 55 examples of up to 50 steps (hypothesis ends some early: about 2,400 steps
# run, and the test requires 2,000); `make test-long`: 400 of up to 100 (it requires 30,000).
settings.register_profile("contracts", stateful_step_count=50, max_examples=55, deadline=None)
settings.register_profile(
    "contracts-long", stateful_step_count=100, max_examples=400, deadline=None
)


@pytest.fixture(scope="session")
def registry_deployer() -> Any:
    return boa.load_partial(str(CONTRACTS / "Registry.vy"))


@pytest.fixture(scope="session")
def jobs_deployer() -> Any:
    return boa.load_partial(str(CONTRACTS / "Jobs.vy"))


@pytest.fixture(scope="session")
def receiver_deployer() -> Any:
    return boa.load_partial(str(HERE / "ReentrantReceiver.vy"))


@pytest.fixture(autouse=True)
def _rollback(boa_anchor: None) -> None:
    """Every contract test runs on a chain rolled back after it (see ``boa_anchor``)."""


@pytest.fixture
def admin() -> str:
    return boa.env.eoa


@pytest.fixture
def registry(registry_deployer: Any, admin: str) -> Any:
    with boa.env.prank(admin):
        return registry_deployer.deploy(MIN_STAKE, UNBOND_DELAY, ADMIN_DELAY)


@pytest.fixture
def jobs(jobs_deployer: Any, registry: Any, admin: str) -> Any:
    with boa.env.prank(admin):
        contract = jobs_deployer.deploy(
            registry.address, AGGREGATOR_SHARE_BPS, SLASH_AMOUNT, CHALLENGE_WINDOW
        )
        registry.set_first_slasher(contract.address)
    return contract
