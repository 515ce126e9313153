"""Stateful fuzzing of Disputes: random challenges, moves, votes, timeouts and withdrawals.

After every step: Disputes holds exactly the bonds of its open challenges plus what it owes;
every provider's stake locked with Disputes is one bond per trace that is neither released nor
slashed; a provider lost stake only through a challenge settled against it (a committee
majority or its own missed deadline); ``is_held`` is True exactly while a challenge is open;
every account's real ETH is what it started with, less its bonds, plus what it withdrew.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import boa
from contract_helpers import CONTRACTS, MIN_STAKE, funded
from disputes_helpers import (
    CHALLENGER_BOND,
    JOB,
    PROVIDER_BOND,
    RESPONSE,
    ROUND,
    VOTE_PERIOD,
    deploy,
    pool,
    provider,
    synthetic_trace,
    word,
)
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from allmende.verify.merkle import Leaf, merkle_proof, merkle_root

OPEN_STATES = (1, 2, 3)
PROVIDER_LOST = 4
N_PROVIDERS = 2
K = 2  # one bisection move to the vote
N_CHALLENGERS = 3


@dataclass
class World:
    """Registry, Disputes, a pool, providers with committed traces and challengers: deployed
    once per test; every example rolls back to it."""

    registry: Any
    d: Any
    verifiers: list[str]
    providers: list[str]
    challengers: list[str]
    leaves: list[Leaf]

    @classmethod
    def build(cls) -> World:
        registry = boa.load_partial(str(CONTRACTS / "Registry.vy")).deploy(MIN_STAKE, 3_600, 1_000)
        d = deploy(boa.load_partial(str(CONTRACTS / "Disputes.vy")), registry, boa.env.eoa)
        for contract in (registry, d):
            _quiet_repr(contract)
        verifiers = pool(d, registry, 5)
        providers = [provider(registry) for _ in range(N_PROVIDERS)]
        leaves = synthetic_trace(k=K)
        for account in providers:
            with boa.env.prank(account):
                d.commit_trace(JOB, ROUND, merkle_root(leaves), word("m"), 6, K)
        challengers = [funded() for _ in range(N_CHALLENGERS)]
        return cls(registry, d, verifiers, providers, challengers, leaves)


def _quiet_repr(contract: Any) -> None:
    """A short repr: titanoboa builds repr(contract), a dump of its storage, on every revert,
    and this machine reverts thousands of times on purpose."""
    base = type(contract)
    contract.__class__ = type(f"Quiet{base.__name__}", (base,), {
        "__repr__": lambda self: f"<{base.__name__} at {self.address}>",
    })  # fmt: skip


class DisputesMachine(RuleBasedStateMachine):
    world: World
    outcomes: ClassVar[set[int]] = set()  # challenge states seen after a vote or a timeout

    def __init__(self) -> None:
        super().__init__()
        self.anchor = boa.env.anchor()
        self.anchor.__enter__()
        w = self.world
        self.registry, self.d, self.verifiers = w.registry, w.d, w.verifiers
        self.providers, self.challengers, self.leaves = w.providers, w.challengers, w.leaves
        self.accounts = self.providers + self.challengers + self.verifiers
        self.start_eth = {a: boa.env.get_balance(a) for a in self.accounts}
        self.bonds_paid = dict.fromkeys(self.accounts, 0)
        self.withdrawn = dict.fromkeys(self.accounts, 0)
        self.ids: list[int] = []
        self.lost: set[str] = set()  # providers a challenge was settled against

    def teardown(self) -> None:
        self.anchor.__exit__(None, None, None)

    def _state(self, cid: int) -> int:
        return int(self.d.challenges(cid)[9])

    def _try(self, fn: Any, *args: Any, **kwargs: Any) -> bool:
        try:
            fn(*args, **kwargs)
        except boa.BoaError:
            return False
        return True

    @rule(p=st.integers(0, N_PROVIDERS - 1), c=st.integers(0, N_CHALLENGERS - 1),
          segment=st.integers(0, 6))  # fmt: skip
    def open_challenge(self, p: int, c: int, segment: int) -> None:
        who, leaves = self.challengers[c], self.leaves
        s = min(segment, 5)
        with boa.env.prank(who):
            if self._try(
                self.d.open_challenge, JOB, ROUND, self.providers[p], segment, leaves[s].params,
                leaves[s].batches, merkle_proof(leaves, s), leaves[s + 1].params,
                leaves[s + 1].batches, merkle_proof(leaves, s + 1), value=CHALLENGER_BOND,
            ):  # fmt: skip
                self.ids.append(self.d.challenge_count() - 1)
                self.bonds_paid[who] += CHALLENGER_BOND

    def _open_ids(self) -> list[int]:
        return [cid for cid in self.ids if self._state(cid) in OPEN_STATES]

    @rule(pick=st.integers(0, 20), by_party=st.sampled_from([True, True, True, False]))
    def post_midpoint(self, pick: int, by_party: bool) -> None:
        if open_ids := self._open_ids():
            cid = open_ids[pick % len(open_ids)]
            c = self.d.challenges(cid)
            with boa.env.prank(c[2] if by_party else c[3]):  # the provider, or the wrong caller
                self._try(self.d.post_midpoint, cid, word(f"mid {pick}"))

    @rule(pick=st.integers(0, 20), agree=st.booleans(),
          by_party=st.sampled_from([True, True, True, False]))  # fmt: skip
    def answer_midpoint(self, pick: int, agree: bool, by_party: bool) -> None:
        if open_ids := self._open_ids():
            cid = open_ids[pick % len(open_ids)]
            c = self.d.challenges(cid)
            with boa.env.prank(c[3] if by_party else c[2]):
                self._try(self.d.answer_midpoint, cid, agree)

    @rule(pick=st.integers(0, 20), member=st.integers(0, 4), ballot=st.booleans())
    def vote(self, pick: int, member: int, ballot: bool) -> None:
        if not (open_ids := self._open_ids()):
            return
        cid = open_ids[pick % len(open_ids)]
        with boa.env.prank(self.verifiers[member]):
            self._try(self.d.vote, cid, ballot)
        self._note(cid)

    @rule(seconds=st.sampled_from([10, 10, RESPONSE + 1, VOTE_PERIOD + 1]), pick=st.integers(0, 20))
    def wait_and_time_out(self, seconds: int, pick: int) -> None:
        boa.env.time_travel(seconds=seconds)
        if open_ids := self._open_ids():
            cid = open_ids[pick % len(open_ids)]
            self._try(self.d.timeout, cid)
            self._note(cid)

    @rule(pick=st.integers(0, 20), agree=st.booleans())
    def one_bisection_move(self, pick: int, agree: bool) -> None:
        """Both parties make their move at once (with k = 2 this opens the vote)."""
        if open_ids := self._open_ids():
            cid = open_ids[pick % len(open_ids)]
            c = self.d.challenges(cid)
            with boa.env.prank(c[2]):
                self._try(self.d.post_midpoint, cid, word(f"move {pick}"))
            with boa.env.prank(c[3]):
                self._try(self.d.answer_midpoint, cid, agree)

    @rule(pick=st.integers(0, 20), ballot=st.booleans())
    def committee_agrees(self, pick: int, ballot: bool) -> None:
        """Every member of one challenge's committee votes the same way."""
        if open_ids := self._open_ids():
            cid = open_ids[pick % len(open_ids)]
            for member in self.d.committee_of(cid):
                with boa.env.prank(member):
                    self._try(self.d.vote, cid, ballot)
            self._note(cid)

    @rule(state=st.sampled_from(OPEN_STATES))
    def everyone_in_a_state_times_out(self, state: int) -> None:
        """The parties (or the committee) of every challenge in ``state`` go silent."""
        boa.env.time_travel(seconds=max(RESPONSE, VOTE_PERIOD) + 1)
        for cid in self._open_ids():
            if self._state(cid) == state:
                self._try(self.d.timeout, cid)
                self._note(cid)

    @rule()
    def abandon(self) -> None:
        for cid in self._open_ids():
            self._try(self.d.abandon, cid)
            self._note(cid)

    @rule(p=st.integers(0, N_PROVIDERS - 1))
    def release(self, p: int) -> None:
        self._try(self.d.release, JOB, ROUND, self.providers[p])

    @rule(a=st.integers(0, N_PROVIDERS + N_CHALLENGERS + 4))
    def withdraw(self, a: int) -> None:
        who = self.accounts[a]
        for contract in (self.d, self.registry):
            owed = contract.owed(who)
            with boa.env.prank(who):
                if self._try(contract.withdraw):
                    self.withdrawn[who] += owed

    def _note(self, cid: int) -> None:
        self.outcomes.add(self._state(cid))
        if self._state(cid) == PROVIDER_LOST:
            self.lost.add(self.d.challenges(cid)[2])

    @invariant()
    def money_is_conserved(self) -> None:
        open_ids = [cid for cid in self.ids if self._state(cid) in OPEN_STATES]
        owed = sum(self.d.owed(a) for a in self.accounts)
        assert boa.env.get_balance(self.d.address) == owed + CHALLENGER_BOND * len(open_ids)
        assert self.d.is_held(JOB, ROUND) == bool(open_ids)
        for account in self.accounts:
            assert boa.env.get_balance(account) == (
                self.start_eth[account] - self.bonds_paid[account] + self.withdrawn[account]
            )

    @invariant()
    def stake_moves_only_by_a_lost_challenge(self) -> None:
        for account in self.providers:
            trace = self.d.trace_of(JOB, ROUND, account)
            released, slashed = trace[6], trace[7]
            expected_lock = 0 if released or slashed else PROVIDER_BOND
            assert self.registry.lock_of(self.d.address, _lock_id(), account) == expected_lock
            assert slashed == (account in self.lost)
            lost_stake = PROVIDER_BOND if slashed else 0
            assert self.registry.stake_of(account) == 2 * MIN_STAKE - lost_stake


def _lock_id() -> int:
    from eth_abi import encode
    from eth_utils import keccak

    return int.from_bytes(keccak(encode(["uint256", "uint256"], [JOB, ROUND])), "big")


def test_disputes_keep_money_and_stake_invariants() -> None:
    DisputesMachine.world = World.build()
    DisputesMachine.outcomes = set()
    run_state_machine_as_test(
        DisputesMachine,
        settings=settings(settings.get_profile("contracts"), max_examples=30, derandomize=True),
    )
    # The runs reached every way a challenge ends, so the invariants were checked after each.
    assert {4, 5, 6, 7} <= DisputesMachine.outcomes, DisputesMachine.outcomes
