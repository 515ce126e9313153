"""Registry: registration, stake, unbonding, slashing and pull payments."""

from __future__ import annotations

from typing import Any

import boa
import pytest
from contract_helpers import (
    AGGREGATOR,
    MIN_STAKE,
    PROVIDER,
    TRAINER,
    UNBOND_DELAY,
    VERIFIER,
    events,
    funded,
    h,
    node,
)


@pytest.fixture
def slasher(registry: Any, admin: str) -> str:
    account = funded()
    with boa.env.prank(admin):
        registry.set_slasher(account, True)
    return account


def test_constructor_sets_admin_and_parameters(registry: Any, admin: str) -> None:
    assert registry.admin() == admin
    assert registry.min_stake() == MIN_STAKE
    assert registry.unbond_delay() == UNBOND_DELAY
    assert registry.node_count() == 0


def test_register_adds_a_node_and_lists_it(registry: Any) -> None:
    account = funded()
    with boa.env.prank(account):
        registry.register("http://10.0.0.1:8000", TRAINER | AGGREGATOR, h("meta"))
    (event,) = events(registry, "NodeRegistered")
    assert (event.node, event.endpoint, event.roles, event.metadata) == (
        account, "http://10.0.0.1:8000", 3, h("meta"),
    )
    record = registry.nodes(account)
    assert (record.endpoint, record.roles, record.registered, record.stake) == (
        "http://10.0.0.1:8000", 3, True, 0,
    )
    assert registry.node_count() == 1
    assert registry.node_at(0) == account


def test_register_again_updates_without_listing_twice(registry: Any) -> None:
    account = node(registry, TRAINER)
    with boa.env.prank(account):
        registry.register("http://10.0.0.2:8000", VERIFIER | PROVIDER, h("meta 2"))
    (event,) = events(registry, "NodeUpdated")
    assert (event.endpoint, event.roles) == ("http://10.0.0.2:8000", 12)
    assert registry.nodes(account).stake == 2 * MIN_STAKE  # stake survives the update
    assert registry.node_count() == 1


@pytest.mark.parametrize(
    ("endpoint", "roles", "reason"),
    [
        ("", TRAINER, "registry: endpoint is empty"),
        ("http://x", 0, "registry: roles must be a nonzero mask of 1, 2, 4, 8"),
        ("http://x", 16, "registry: roles must be a nonzero mask of 1, 2, 4, 8"),
        ("http://x", 17, "registry: roles must be a nonzero mask of 1, 2, 4, 8"),
    ],
)
def test_register_rejects_bad_records(
    registry: Any, endpoint: str, roles: int, reason: str
) -> None:
    with boa.reverts(reason):
        registry.register(endpoint, roles, h("meta"))


def test_stake_adds_to_the_total(registry: Any) -> None:
    account = node(registry, TRAINER, stake=MIN_STAKE)
    with boa.env.prank(account):
        registry.stake(value=5)
    (event,) = events(registry, "Staked")
    assert (event.amount, event.total) == (5, MIN_STAKE + 5)
    assert registry.nodes(account).stake == MIN_STAKE + 5
    assert boa.env.get_balance(registry.address) == MIN_STAKE + 5


def test_stake_requires_registration_and_value(registry: Any) -> None:
    stranger = funded()
    with boa.env.prank(stranger), boa.reverts("registry: not registered"):
        registry.stake(value=MIN_STAKE)
    account = node(registry, TRAINER, stake=0)
    with boa.env.prank(account), boa.reverts("registry: stake is zero"):
        registry.stake(value=0)


def test_is_active_needs_registration_and_min_stake(registry: Any) -> None:
    assert not registry.is_active(funded())
    account = node(registry, TRAINER, stake=MIN_STAKE - 1)
    assert not registry.is_active(account)
    with boa.env.prank(account):
        registry.stake(value=1)
    assert registry.is_active(account)


def test_has_role_checks_every_requested_bit(registry: Any) -> None:
    account = node(registry, TRAINER | VERIFIER)
    assert registry.has_role(account, TRAINER)
    assert registry.has_role(account, TRAINER | VERIFIER)
    assert not registry.has_role(account, AGGREGATOR)
    assert not registry.has_role(account, TRAINER | AGGREGATOR)
    assert not registry.has_role(account, 0)
    assert not registry.has_role(funded(), TRAINER)


def test_unbond_then_withdraw_after_the_delay(registry: Any) -> None:
    account = node(registry, TRAINER, stake=3 * MIN_STAKE)
    with boa.env.prank(account):
        registry.request_unbond(MIN_STAKE)
    (event,) = events(registry, "UnbondRequested")
    assert event.available_at == boa.env.evm.patch.timestamp + UNBOND_DELAY
    record = registry.nodes(account)
    assert (record.stake, record.unbonding) == (2 * MIN_STAKE, MIN_STAKE)

    boa.env.time_travel(seconds=UNBOND_DELAY)
    before = boa.env.get_balance(account)
    with boa.env.prank(account):
        registry.withdraw_unbonded()
    assert boa.env.get_balance(account) == before + MIN_STAKE
    assert events(registry, "Unbonded")[0].amount == MIN_STAKE
    assert registry.nodes(account).unbonding == 0


def test_request_unbond_rejects_bad_amounts(registry: Any) -> None:
    with boa.env.prank(funded()), boa.reverts("registry: not registered"):
        registry.request_unbond(1)
    account = node(registry, TRAINER, stake=MIN_STAKE)
    with boa.env.prank(account), boa.reverts("registry: amount is zero"):
        registry.request_unbond(0)
    with boa.env.prank(account), boa.reverts("registry: amount exceeds stake"):
        registry.request_unbond(MIN_STAKE + 1)


def test_withdraw_unbonded_waits_for_the_delay(registry: Any) -> None:
    account = node(registry, TRAINER, stake=MIN_STAKE)
    with boa.env.prank(account), boa.reverts("registry: nothing unbonding"):
        registry.withdraw_unbonded()
    with boa.env.prank(account):
        registry.request_unbond(MIN_STAKE)
    boa.env.time_travel(seconds=UNBOND_DELAY - 1)
    with boa.env.prank(account), boa.reverts("registry: unbonding delay has not passed"):
        registry.withdraw_unbonded()


def test_set_slasher_is_admin_only(registry: Any, admin: str) -> None:
    account = funded()
    with boa.env.prank(admin):
        registry.set_slasher(account, True)
    assert events(registry, "SlasherSet")[0].allowed is True
    assert registry.slashers(account)
    with boa.env.prank(admin):
        registry.set_slasher(account, False)
    assert not registry.slashers(account)
    with boa.env.prank(account), boa.reverts("registry: caller is not the admin"):
        registry.set_slasher(account, True)
    with boa.env.prank(admin), boa.reverts("registry: slasher is the zero address"):
        registry.set_slasher("0x" + "00" * 20, True)


def test_slash_takes_stake_then_unbonding(registry: Any, slasher: str) -> None:
    account = node(registry, TRAINER, stake=3 * MIN_STAKE)
    with boa.env.prank(account):
        registry.request_unbond(2 * MIN_STAKE)
    beneficiary = funded()
    with boa.env.prank(slasher):
        taken = registry.slash(account, 2 * MIN_STAKE, beneficiary)
    (event,) = events(registry, "Slashed")
    assert (event.node, event.amount, event.beneficiary, event.slasher) == (
        account, 2 * MIN_STAKE, beneficiary, slasher,
    )
    assert taken == 2 * MIN_STAKE
    record = registry.nodes(account)
    assert (record.stake, record.unbonding) == (0, MIN_STAKE)
    assert registry.owed(beneficiary) == 2 * MIN_STAKE


def test_slash_takes_at_most_what_there_is(registry: Any, slasher: str) -> None:
    account = node(registry, TRAINER, stake=MIN_STAKE)
    beneficiary = funded()
    with boa.env.prank(slasher):
        assert registry.slash(account, 5 * MIN_STAKE, beneficiary) == MIN_STAKE
        assert registry.slash(account, MIN_STAKE, beneficiary) == 0
    assert events(registry, "Slashed") == []  # the second, empty slash logs nothing
    assert registry.owed(beneficiary) == MIN_STAKE


def test_slash_is_for_authorized_slashers_only(registry: Any, slasher: str, admin: str) -> None:
    account = node(registry, TRAINER)
    with boa.env.prank(funded()), boa.reverts("registry: caller is not an authorized slasher"):
        registry.slash(account, 1, funded())
    with boa.env.prank(slasher), boa.reverts("registry: beneficiary is the zero address"):
        registry.slash(account, 1, "0x" + "00" * 20)
    with boa.env.prank(admin):
        registry.set_slasher(slasher, False)
    with boa.env.prank(slasher), boa.reverts("registry: caller is not an authorized slasher"):
        registry.slash(account, 1, funded())


def test_withdraw_pays_slash_proceeds_once(registry: Any, slasher: str) -> None:
    account = node(registry, TRAINER, stake=MIN_STAKE)
    beneficiary = funded()
    with boa.env.prank(slasher):
        registry.slash(account, MIN_STAKE // 2, beneficiary)
    before = boa.env.get_balance(beneficiary)
    with boa.env.prank(beneficiary):
        registry.withdraw()
    assert boa.env.get_balance(beneficiary) == before + MIN_STAKE // 2
    assert events(registry, "Withdrawn")[0].amount == MIN_STAKE // 2
    with boa.env.prank(beneficiary), boa.reverts("registry: nothing owed"):
        registry.withdraw()
