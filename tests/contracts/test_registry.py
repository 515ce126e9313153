"""Registry: registration, stake, unbonding, two-step admin, timelocked slashers, locks,
capped slashing and pull payments."""

from __future__ import annotations

from typing import Any

import boa
import pytest
from contract_helpers import (
    ADMIN_DELAY,
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

ZERO_ADDRESS = "0x" + "00" * 20
JOB = 7


@pytest.fixture
def slasher(registry: Any, admin: str) -> str:
    account = funded()
    with boa.env.prank(admin):
        registry.set_first_slasher(account)
    return account


def locked_node(registry: Any, slasher: str, stake: int, lock: int, job: int = JOB) -> str:
    account = node(registry, TRAINER, stake=stake)
    with boa.env.prank(slasher):
        registry.lock(account, job, lock)
    return account


def test_constructor_sets_admin_and_parameters(registry: Any, admin: str) -> None:
    assert registry.admin() == admin
    assert registry.min_stake() == MIN_STAKE
    assert registry.unbond_delay() == UNBOND_DELAY
    assert registry.admin_delay() == ADMIN_DELAY
    assert registry.pending_admin() == ZERO_ADDRESS
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
    with boa.env.prank(account), boa.reverts("registry: amount exceeds unlocked stake"):
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


def test_two_step_admin_transfer(registry: Any, admin: str) -> None:
    successor = funded()
    with boa.env.prank(admin):
        registry.transfer_admin(successor)
    (event,) = events(registry, "AdminTransferStarted")
    assert (event.admin, event.pending) == (admin, successor)
    assert registry.admin() == admin  # nothing changes until the successor accepts
    with boa.env.prank(successor):
        registry.accept_admin()
    (event,) = events(registry, "AdminTransferred")
    assert (event.previous, event.admin) == (admin, successor)
    assert registry.admin() == successor
    assert registry.pending_admin() == ZERO_ADDRESS


def test_two_step_admin_refuses_strangers(registry: Any, admin: str) -> None:
    stranger = funded()
    with boa.env.prank(stranger), boa.reverts("registry: caller is not the admin"):
        registry.transfer_admin(stranger)
    with boa.env.prank(stranger), boa.reverts("registry: caller is not the pending admin"):
        registry.accept_admin()
    with boa.env.prank(admin):
        registry.transfer_admin(funded())
    with boa.env.prank(stranger), boa.reverts("registry: caller is not the pending admin"):
        registry.accept_admin()
    with boa.env.prank(ZERO_ADDRESS), boa.reverts("registry: caller is not the pending admin"):
        registry.accept_admin()  # a transfer to nobody can never be accepted


def test_set_first_slasher_is_immediate_once(registry: Any, admin: str) -> None:
    first = funded()
    with boa.env.prank(admin):
        registry.set_first_slasher(first)
    (event,) = events(registry, "SlasherSet")
    assert (event.account, event.allowed) == (first, True)
    assert registry.slashers(first) and registry.slasher_ever_set()
    with boa.env.prank(admin), boa.reverts(
        "registry: a slasher was already set; use propose_slasher"
    ):
        registry.set_first_slasher(funded())


def test_set_first_slasher_refuses_strangers_and_zero(registry: Any, admin: str) -> None:
    with boa.env.prank(funded()), boa.reverts("registry: caller is not the admin"):
        registry.set_first_slasher(funded())
    with boa.env.prank(admin), boa.reverts("registry: slasher is the zero address"):
        registry.set_first_slasher(ZERO_ADDRESS)


def test_propose_then_apply_slasher_after_the_delay(registry: Any, admin: str) -> None:
    account = funded()
    with boa.env.prank(admin):
        registry.propose_slasher(account, True)
    (event,) = events(registry, "SlasherProposed")
    eta = boa.env.evm.patch.timestamp + ADMIN_DELAY
    assert (event.account, event.allowed, event.eta) == (account, True, eta)
    assert registry.pending_slasher(account) == (True, eta)
    boa.env.time_travel(seconds=ADMIN_DELAY)
    with boa.env.prank(funded()):  # anyone applies it
        registry.apply_slasher(account)
    assert events(registry, "SlasherSet")[0].allowed is True
    assert registry.slashers(account)
    assert registry.pending_slasher(account) == (False, 0)
    with boa.env.prank(admin):
        registry.propose_slasher(account, False)
    boa.env.time_travel(seconds=ADMIN_DELAY)
    registry.apply_slasher(account)
    assert not registry.slashers(account)


def test_propose_and_apply_slasher_refuse_early_or_unknown_changes(
    registry: Any, admin: str
) -> None:
    account = funded()
    with boa.env.prank(funded()), boa.reverts("registry: caller is not the admin"):
        registry.propose_slasher(account, True)
    with boa.env.prank(admin), boa.reverts("registry: slasher is the zero address"):
        registry.propose_slasher(ZERO_ADDRESS, True)
    with boa.reverts("registry: no slasher change is pending"):
        registry.apply_slasher(account)
    with boa.env.prank(admin):
        registry.propose_slasher(account, True)
    boa.env.time_travel(seconds=ADMIN_DELAY - 1)
    with boa.reverts("registry: the slasher change delay has not passed"):
        registry.apply_slasher(account)


def test_cancel_slasher_change(registry: Any, admin: str) -> None:
    account = funded()
    with boa.env.prank(admin):
        registry.propose_slasher(account, True)
    with boa.env.prank(funded()), boa.reverts("registry: caller is not the admin"):
        registry.cancel_slasher_change(account)
    with boa.env.prank(admin):
        registry.cancel_slasher_change(account)
    assert events(registry, "SlasherChangeCancelled")[0].account == account
    boa.env.time_travel(seconds=ADMIN_DELAY)
    with boa.reverts("registry: no slasher change is pending"):
        registry.apply_slasher(account)
    with boa.env.prank(admin), boa.reverts("registry: no slasher change is pending"):
        registry.cancel_slasher_change(account)
    assert not registry.slashers(account)


def test_admin_instantly_adding_a_slasher_is_refused(
    registry: Any, admin: str, slasher: str
) -> None:
    """Attack: a (compromised) admin adds its own slasher and takes every locked stake at once.
    After the first slasher, a new one waits admin_delay, visibly, and can be cancelled."""
    victim = locked_node(registry, slasher, 2 * MIN_STAKE, MIN_STAKE)
    rogue = funded()
    with boa.env.prank(admin), boa.reverts(
        "registry: a slasher was already set; use propose_slasher"
    ):
        registry.set_first_slasher(rogue)
    with boa.env.prank(admin):
        registry.propose_slasher(rogue, True)
    with boa.env.prank(rogue), boa.reverts("registry: caller is not an authorized slasher"):
        registry.lock(victim, JOB, MIN_STAKE)
    with boa.reverts("registry: the slasher change delay has not passed"):
        registry.apply_slasher(rogue)
    # during the delay the victim unbonds its free stake; its locked stake stays with the job
    with boa.env.prank(victim):
        registry.request_unbond(MIN_STAKE)
    assert registry.free_stake(victim) == 0


def test_lock_adds_to_the_node_and_the_jobs_lock(registry: Any, slasher: str) -> None:
    account = node(registry, TRAINER, stake=3 * MIN_STAKE)
    with boa.env.prank(slasher):
        registry.lock(account, JOB, MIN_STAKE)
        (event,) = events(registry, "Locked")
        registry.lock(account, JOB + 1, MIN_STAKE)
    assert (event.node, event.slasher, event.job_id, event.amount) == (
        account, slasher, JOB, MIN_STAKE,
    )
    assert registry.locked(account) == 2 * MIN_STAKE
    assert registry.lock_of(slasher, JOB, account) == MIN_STAKE
    assert registry.free_stake(account) == MIN_STAKE
    assert registry.stake_of(account) == 3 * MIN_STAKE


def test_lock_refuses_strangers_unregistered_nodes_and_more_than_free_stake(
    registry: Any, slasher: str
) -> None:
    account = node(registry, TRAINER, stake=2 * MIN_STAKE)
    with boa.env.prank(funded()), boa.reverts("registry: caller is not an authorized slasher"):
        registry.lock(account, JOB, 1)
    with boa.env.prank(slasher), boa.reverts("registry: not registered"):
        registry.lock(funded(), JOB, 1)
    with boa.env.prank(slasher), boa.reverts("registry: amount is zero"):
        registry.lock(account, JOB, 0)
    with boa.env.prank(slasher):
        registry.lock(account, JOB, MIN_STAKE)
    with boa.env.prank(slasher), boa.reverts("registry: amount exceeds unlocked stake"):
        registry.lock(account, JOB + 1, MIN_STAKE + 1)


def test_unlock_releases_the_whole_lock_even_after_revocation(
    registry: Any, slasher: str, admin: str
) -> None:
    account = locked_node(registry, slasher, 2 * MIN_STAKE, MIN_STAKE)
    with boa.env.prank(slasher):
        registry.lock(account, JOB, 5)
    with boa.env.prank(admin):
        registry.propose_slasher(slasher, False)
    boa.env.time_travel(seconds=ADMIN_DELAY)
    registry.apply_slasher(slasher)
    with boa.env.prank(slasher):
        assert registry.unlock(account, JOB) == MIN_STAKE + 5
    (event,) = events(registry, "Unlocked")
    assert (event.node, event.job_id, event.amount) == (account, JOB, MIN_STAKE + 5)
    assert registry.locked(account) == 0 and registry.lock_of(slasher, JOB, account) == 0
    assert registry.free_stake(account) == 2 * MIN_STAKE


def test_unlock_without_a_lock_releases_nothing(registry: Any, slasher: str) -> None:
    account = locked_node(registry, slasher, 2 * MIN_STAKE, MIN_STAKE)
    with boa.env.prank(funded()):  # another contract's (absent) lock, not the slasher's
        assert registry.unlock(account, JOB) == 0
    with boa.env.prank(slasher):
        assert registry.unlock(account, JOB + 1) == 0
    assert events(registry, "Unlocked") == []
    assert registry.locked(account) == MIN_STAKE


def test_request_unbond_cannot_release_locked_stake(registry: Any, slasher: str) -> None:
    """Attack: zero stake at risk. A node joins a job (its stake gets locked) and then unbonds
    everything while it works; only the free stake can go."""
    account = locked_node(registry, slasher, 3 * MIN_STAKE, 2 * MIN_STAKE)
    with boa.env.prank(account), boa.reverts("registry: amount exceeds unlocked stake"):
        registry.request_unbond(MIN_STAKE + 1)
    with boa.env.prank(account):
        registry.request_unbond(MIN_STAKE)
    assert registry.nodes(account).stake == 2 * MIN_STAKE
    with boa.env.prank(slasher):
        assert registry.slash(account, JOB, 2 * MIN_STAKE, funded()) == 2 * MIN_STAKE


def test_sybils_cannot_share_one_stake_across_locks(registry: Any, slasher: str) -> None:
    """Attack: zero stake at risk. One stake backs a lock in one job; it cannot back a second."""
    account = locked_node(registry, slasher, MIN_STAKE, MIN_STAKE)
    with boa.env.prank(slasher), boa.reverts("registry: amount exceeds unlocked stake"):
        registry.lock(account, JOB + 1, MIN_STAKE)
    with boa.env.prank(slasher), boa.reverts("registry: amount exceeds unlocked stake"):
        registry.lock(account, JOB, 1)


def test_slash_takes_from_the_jobs_lock(registry: Any, slasher: str) -> None:
    account = locked_node(registry, slasher, 3 * MIN_STAKE, 2 * MIN_STAKE)
    beneficiary = funded()
    with boa.env.prank(slasher):
        taken = registry.slash(account, JOB, MIN_STAKE, beneficiary)
    (event,) = events(registry, "Slashed")
    assert (event.node, event.job_id, event.amount, event.beneficiary, event.slasher) == (
        account, JOB, MIN_STAKE, beneficiary, slasher,
    )
    assert taken == MIN_STAKE
    assert registry.nodes(account).stake == 2 * MIN_STAKE
    assert registry.locked(account) == MIN_STAKE
    assert registry.lock_of(slasher, JOB, account) == MIN_STAKE
    assert registry.owed(beneficiary) == MIN_STAKE


def test_slash_is_capped_at_the_jobs_lock(registry: Any, slasher: str) -> None:
    """Attack: a slasher takes more than the node put at risk for the job. It gets at most the
    job's lock, never the node's free stake, other jobs' locks or unbonding stake."""
    account = locked_node(registry, slasher, 4 * MIN_STAKE, MIN_STAKE)
    with boa.env.prank(slasher):
        registry.lock(account, JOB + 1, MIN_STAKE)
    with boa.env.prank(account):
        registry.request_unbond(MIN_STAKE)
    beneficiary = funded()
    with boa.env.prank(slasher):
        assert registry.slash(account, JOB, 10 * MIN_STAKE, beneficiary) == MIN_STAKE
        assert registry.slash(account, JOB, MIN_STAKE, beneficiary) == 0
        assert registry.slash(account, JOB + 2, MIN_STAKE, beneficiary) == 0
    assert len(events(registry, "Slashed")) == 0  # the empty slashes log nothing
    record = registry.nodes(account)
    assert (record.stake, record.unbonding) == (2 * MIN_STAKE, MIN_STAKE)
    assert registry.lock_of(slasher, JOB + 1, account) == MIN_STAKE
    assert registry.owed(beneficiary) == MIN_STAKE


def test_slash_is_for_authorized_slashers_only(registry: Any, slasher: str, admin: str) -> None:
    account = locked_node(registry, slasher, 2 * MIN_STAKE, MIN_STAKE)
    with boa.env.prank(funded()), boa.reverts("registry: caller is not an authorized slasher"):
        registry.slash(account, JOB, 1, funded())
    with boa.env.prank(slasher), boa.reverts("registry: beneficiary is the zero address"):
        registry.slash(account, JOB, 1, ZERO_ADDRESS)
    with boa.env.prank(admin):
        registry.propose_slasher(slasher, False)
    boa.env.time_travel(seconds=ADMIN_DELAY)
    registry.apply_slasher(slasher)
    with boa.env.prank(slasher), boa.reverts("registry: caller is not an authorized slasher"):
        registry.slash(account, JOB, 1, funded())


def test_withdraw_pays_slash_proceeds_once(registry: Any, slasher: str) -> None:
    account = locked_node(registry, slasher, MIN_STAKE, MIN_STAKE)
    beneficiary = funded()
    with boa.env.prank(slasher):
        registry.slash(account, JOB, MIN_STAKE // 2, beneficiary)
    before = boa.env.get_balance(beneficiary)
    with boa.env.prank(beneficiary):
        registry.withdraw()
    assert boa.env.get_balance(beneficiary) == before + MIN_STAKE // 2
    assert events(registry, "Withdrawn")[0].amount == MIN_STAKE // 2
    with boa.env.prank(beneficiary), boa.reverts("registry: nothing owed"):
        registry.withdraw()
