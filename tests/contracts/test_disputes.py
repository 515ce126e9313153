"""Disputes: trace commitments, the verifier pool, challenges, bisection, votes, timeouts,
slashing through the Registry and pull payments; each function's success and refusals."""

from __future__ import annotations

from typing import Any

import boa
import pytest
from contract_helpers import CONTRACTS, MIN_STAKE, TRAINER, VERIFIER, events, funded, node
from disputes_helpers import (
    CHALLENGER_BOND,
    COMMITTEE,
    JOB,
    PARAMS,
    PROVIDER_BOND,
    RESPONSE,
    ROUND,
    SEGMENTS,
    SHARE_BPS,
    VOTE_PERIOD,
    WINDOW,
    Court,
    K,
    challenge,
    commit,
    deploy,
    pool,
    provider,
    synthetic_trace,
    word,
)

from allmende.verify.merkle import merkle_proof, merkle_root

PROVIDER_TURN, CHALLENGER_TURN, VOTING = 1, 2, 3
MANIFEST = word("manifest")
ODD = "committee size must be odd, at most 15"
PROVIDER_LOST, CHALLENGER_LOST, UNDECIDED, ABANDONED = 4, 5, 6, 7


@pytest.fixture(scope="module")
def deployer() -> Any:
    return boa.load_partial(str(CONTRACTS / "Disputes.vy"))


@pytest.fixture
def disputes(deployer: Any, registry: Any, admin: str) -> Any:
    return deploy(deployer, registry, admin)


@pytest.fixture
def court(disputes: Any, registry: Any) -> Court:
    verifiers = pool(disputes, registry, 5)
    account = provider(registry)
    leaves = synthetic_trace()
    commit(disputes, account, leaves)
    return Court(disputes, registry, account, verifiers, leaves)


def state(disputes: Any, cid: int) -> int:
    return disputes.challenges(cid)[9]


def to_vote(disputes: Any, court: Court, cid: int, challenger: str, agree: list[bool]) -> None:
    """Bisect a K = 4 segment in two moves; the provider posts made-up midpoint hashes."""
    for n, answer in enumerate(agree):
        with boa.env.prank(court.provider):
            disputes.post_midpoint(cid, word(f"mid {n}"))
        with boa.env.prank(challenger):
            disputes.answer_midpoint(cid, answer)


def votes(disputes: Any, cid: int, ballots: list[bool]) -> list[Any]:
    """The committee's first ``len(ballots)`` members vote; the last vote's events."""
    for member, ballot in zip(disputes.committee_of(cid), ballots, strict=False):
        with boa.env.prank(member):
            disputes.vote(cid, ballot)
    return list(disputes.get_logs())


def assert_money_invariant(disputes: Any, accounts: list[str], open_bonds: int) -> None:
    owed = sum(disputes.owed(a) for a in accounts)
    assert boa.env.get_balance(disputes.address) == owed + open_bonds


# -- deployment ---------------------------------------------------------------------------------


def test_constructor_sets_parameters(disputes: Any, registry: Any) -> None:
    assert disputes.registry() == registry.address
    assert (disputes.provider_bond(), disputes.challenger_bond()) == (
        PROVIDER_BOND,
        CHALLENGER_BOND,
    )
    assert disputes.committee_size() == COMMITTEE and disputes.verifier_share_bps() == SHARE_BPS


@pytest.mark.parametrize(("index", "value", "message"), [
    (0, 0, "bonds must be positive"), (1, 0, "bonds must be positive"),
    (2, 0, "bad challenge window"), (2, 31 * 86_400, "bad challenge window"),
    (3, 0, "bad response timeout"), (4, 0, "bad vote period"),
    (5, 4, ODD), (5, 17, ODD),
    (6, 10_001, "verifier share above 100%"),
])  # fmt: skip
def test_constructor_refuses_bad_parameters(deployer: Any, registry: Any, index: int,
                                            value: int, message: str) -> None:  # fmt: skip
    params = list(PARAMS)
    params[index] = value
    with boa.reverts(f"disputes: {message}"):
        deployer.deploy(registry.address, *params)
    with boa.reverts("disputes: registry is the zero address"):
        deployer.deploy("0x" + "00" * 20, *PARAMS)


# -- commit_trace and release -------------------------------------------------------------------


def test_commit_trace_locks_the_provider_bond(disputes: Any, registry: Any) -> None:
    account = provider(registry)
    leaves = synthetic_trace()
    commit(disputes, account, leaves)
    (event,) = events(disputes, "TraceCommitted")
    assert (event.provider, event.root, event.manifest, event.segments, event.k) == (
        account,
        merkle_root(leaves),
        word("manifest"),
        SEGMENTS,
        K,
    )
    assert registry.free_stake(account) == 2 * MIN_STAKE - PROVIDER_BOND
    trace = disputes.trace_of(JOB, ROUND, account)
    assert (trace[0], trace[1], trace[2]) == (merkle_root(leaves), word("manifest"), SEGMENTS)


def test_commit_trace_refusals(disputes: Any, registry: Any) -> None:
    account = provider(registry)
    root = merkle_root(synthetic_trace())
    with boa.env.prank(node(registry, TRAINER)), boa.reverts("disputes: caller is not a provider"):
        disputes.commit_trace(JOB, ROUND, root, MANIFEST, SEGMENTS, K)
    with boa.env.prank(account):
        with boa.reverts("disputes: root or manifest is zero"):
            disputes.commit_trace(JOB, ROUND, b"\0" * 32, MANIFEST, SEGMENTS, K)
        with boa.reverts("disputes: root or manifest is zero"):
            disputes.commit_trace(JOB, ROUND, root, b"\0" * 32, SEGMENTS, K)
        for segments in (0, 2**20):
            with boa.reverts("disputes: segments out of range"):
                disputes.commit_trace(JOB, ROUND, root, MANIFEST, segments, K)
        for k in (0, 2**20 + 1):
            with boa.reverts("disputes: k out of range"):
                disputes.commit_trace(JOB, ROUND, root, MANIFEST, SEGMENTS, k)
        disputes.commit_trace(JOB, ROUND, root, MANIFEST, SEGMENTS, K)
        with boa.reverts("disputes: trace already committed"):
            disputes.commit_trace(JOB, ROUND, root, MANIFEST, SEGMENTS, K)
    poor = provider(registry, stake=PROVIDER_BOND // 2)
    with boa.env.prank(poor), boa.reverts("registry: amount exceeds unlocked stake"):
        disputes.commit_trace(JOB, ROUND, root, MANIFEST, SEGMENTS, K)


def test_release_unlocks_after_the_window_and_not_before(court: Court) -> None:
    d, registry = court.disputes, court.registry
    with boa.reverts("disputes: challenge window still open"):
        d.release(JOB, ROUND, court.provider)
    with boa.reverts("disputes: no such trace"):
        d.release(JOB, ROUND + 1, court.provider)
    boa.env.time_travel(seconds=WINDOW + 1)
    d.release(JOB, ROUND, court.provider)
    assert events(d, "TraceReleased")
    assert registry.free_stake(court.provider) == 2 * MIN_STAKE
    with boa.reverts("disputes: trace already settled"):
        d.release(JOB, ROUND, court.provider)


def test_release_waits_for_an_open_challenge(court: Court) -> None:
    cid, _ = challenge(court.disputes, court, 1)
    boa.env.time_travel(seconds=WINDOW + 1)
    with boa.reverts("disputes: trace has an open challenge"):
        court.disputes.release(JOB, ROUND, court.provider)
    assert state(court.disputes, cid) == PROVIDER_TURN


# -- the verifier pool and check reports --------------------------------------------------------


def test_join_and_leave_the_pool(disputes: Any, registry: Any) -> None:
    first, second = pool(disputes, registry, 2)
    assert disputes.pool_size() == 2 and disputes.in_pool(first)
    with boa.env.prank(first):
        with boa.reverts("disputes: already in the pool"):
            disputes.join_pool()
        disputes.leave_pool()
        assert events(disputes, "VerifierLeft")
        with boa.reverts("disputes: not in the pool"):
            disputes.leave_pool()
    assert disputes.pool_size() == 1 and disputes.pool(0) == second


def test_join_pool_needs_an_active_verifier(disputes: Any, registry: Any) -> None:
    with boa.env.prank(node(registry, TRAINER)), boa.reverts("disputes: caller is not a verifier"):
        disputes.join_pool()
    with (
        boa.env.prank(node(registry, VERIFIER, stake=0)),
        boa.reverts("disputes: caller is not active"),
    ):
        disputes.join_pool()


def test_the_pool_is_bounded(disputes: Any, registry: Any) -> None:
    pool(disputes, registry, 128)
    with (
        boa.env.prank(node(registry, VERIFIER, stake=MIN_STAKE)),
        boa.reverts("disputes: the verifier pool is full"),
    ):
        disputes.join_pool()


def test_report_check_records_what_a_verifier_checked(court: Court) -> None:
    d = court.disputes
    with boa.env.prank(court.verifiers[0]):
        d.report_check(JOB, ROUND, court.provider, word("segments 3, 5: ok"), True)
        (event,) = events(d, "CheckReported")
        assert event.passed and event.checked == word("segments 3, 5: ok")
        with boa.reverts("disputes: no such trace"):
            d.report_check(JOB, ROUND + 1, court.provider, word("x"), True)
        with boa.reverts("disputes: checked is zero"):
            d.report_check(JOB, ROUND, court.provider, b"\0" * 32, True)
    with boa.env.prank(funded()), boa.reverts("disputes: caller is not in the verifier pool"):
        d.report_check(JOB, ROUND, court.provider, word("x"), True)


# -- open_challenge -----------------------------------------------------------------------------


def test_open_challenge_draws_a_committee_and_holds_the_round(court: Court) -> None:
    d = court.disputes
    assert not d.is_held(JOB, ROUND)
    cid, challenger = challenge(d, court, 2)
    (event,) = events(d, "ChallengeOpened")
    committee = list(d.committee_of(cid))
    assert event.segment == 2 and list(event.committee) == committee
    assert len(set(committee)) == COMMITTEE and set(committee) <= set(court.verifiers)
    assert d.is_held(JOB, ROUND) and not d.is_held(JOB, ROUND + 1)
    c = d.challenges(cid)
    assert (c[4], c[5]) == (2 * K, 3 * K)  # lo, hi
    assert_money_invariant(d, [challenger], CHALLENGER_BOND)


def test_the_parties_are_never_on_their_committee(disputes: Any, registry: Any) -> None:
    verifiers = pool(disputes, registry, COMMITTEE + 2)
    both = verifiers[:2]  # a provider and a challenger that are also in the pool
    registry_roles = 8 | VERIFIER
    with boa.env.prank(both[0]):
        registry.register("http://127.0.0.1:9", registry_roles, word("m"))
    leaves = synthetic_trace()
    commit(disputes, both[0], leaves)
    court = Court(disputes, registry, both[0], verifiers, leaves)
    cid, _ = challenge(disputes, court, 0, challenger=both[1])
    assert set(disputes.committee_of(cid)) == set(verifiers[2:])


def test_open_challenge_refusals(court: Court, registry: Any) -> None:
    d = court.disputes
    leaves = court.leaves
    with boa.reverts("disputes: send exactly challenger_bond"):
        challenge(d, court, 0, value=CHALLENGER_BOND - 1)
    with boa.reverts("disputes: a provider cannot challenge itself"):
        challenge(d, court, 0, challenger=court.provider)
    with boa.reverts("disputes: no such segment"), boa.env.prank(funded()):
        d.open_challenge(
            JOB,
            ROUND,
            court.provider,
            SEGMENTS,
            leaves[0].params,
            leaves[0].batches,
            merkle_proof(leaves, 0),
            leaves[1].params,
            leaves[1].batches,
            merkle_proof(leaves, 1),
            value=CHALLENGER_BOND,
        )
    with boa.reverts("disputes: bad proof of the first leaf"), boa.env.prank(funded()):
        d.open_challenge(
            JOB,
            ROUND,
            court.provider,
            1,
            leaves[0].params,
            leaves[1].batches,
            merkle_proof(leaves, 1),
            leaves[2].params,
            leaves[2].batches,
            merkle_proof(leaves, 2),
            value=CHALLENGER_BOND,
        )
    with boa.reverts("disputes: bad proof of the last leaf"), boa.env.prank(funded()):
        d.open_challenge(
            JOB,
            ROUND,
            court.provider,
            1,
            leaves[1].params,
            leaves[1].batches,
            merkle_proof(leaves, 1),
            word("forged"),
            leaves[2].batches,
            merkle_proof(leaves, 2),
            value=CHALLENGER_BOND,
        )
    with boa.reverts("disputes: no such trace"), boa.env.prank(funded()):
        d.open_challenge(JOB, ROUND + 1, court.provider, 0, leaves[0].params,
                         leaves[0].batches, [], leaves[1].params, leaves[1].batches, [],
                         value=CHALLENGER_BOND)  # fmt: skip
    for _ in range(4):
        challenge(d, court, 0)
    with boa.reverts("disputes: too many open challenges on this trace"):
        challenge(d, court, 0)
    boa.env.time_travel(seconds=WINDOW + 1)
    with boa.reverts("disputes: challenge window closed"):
        challenge(d, court, 0)


def test_open_challenge_needs_enough_eligible_verifiers(disputes: Any, registry: Any) -> None:
    verifiers = pool(disputes, registry, COMMITTEE)
    account = provider(registry)
    leaves = synthetic_trace()
    commit(disputes, account, leaves)
    court = Court(disputes, registry, account, verifiers, leaves)
    with boa.env.prank(verifiers[0]):
        registry.request_unbond(MIN_STAKE)  # no longer active: skipped by the draw
    with boa.reverts("disputes: too few eligible verifiers in the pool"):
        challenge(disputes, court, 0)


def test_a_k_of_one_goes_straight_to_the_vote(disputes: Any, registry: Any) -> None:
    verifiers = pool(disputes, registry, 3)
    account = provider(registry)
    leaves = synthetic_trace(k=1)
    commit(disputes, account, leaves, k=1)
    cid, _ = challenge(disputes, Court(disputes, registry, account, verifiers, leaves), 3)
    (opened,) = events(disputes, "VotingOpened")
    assert opened.step == 3 and state(disputes, cid) == VOTING


# -- bisection ----------------------------------------------------------------------------------


def test_bisection_halves_the_range_to_one_step(court: Court) -> None:
    d = court.disputes
    cid, challenger = challenge(d, court, 1)  # steps 4 .. 8
    with boa.env.prank(court.provider):
        d.post_midpoint(cid, word("at 6"))
    assert state(d, cid) == CHALLENGER_TURN
    with boa.env.prank(challenger):
        d.answer_midpoint(cid, True)  # agrees on step 6: the fault is in 6 .. 8
    c = d.challenges(cid)
    assert (c[4], c[5], c[6]) == (6, 8, word("at 6"))
    with boa.env.prank(court.provider):
        d.post_midpoint(cid, word("at 7"))
    with boa.env.prank(challenger):
        d.answer_midpoint(cid, False)  # disputes step 7: the fault is the step 6 -> 7
    (opened,) = events(d, "VotingOpened")
    assert opened.step == 6
    c = d.challenges(cid)
    assert (c[4], c[5], c[6], c[7]) == (6, 7, word("at 6"), word("at 7"))
    assert state(d, cid) == VOTING


def test_bisection_refusals(court: Court) -> None:
    d = court.disputes
    cid, challenger = challenge(d, court, 1)
    with boa.env.prank(challenger):
        with boa.reverts("disputes: not the challenger's turn"):
            d.answer_midpoint(cid, True)
        with boa.reverts("disputes: caller is not the provider"):
            d.post_midpoint(cid, word("x"))
    with boa.env.prank(court.provider):
        with boa.reverts("disputes: params is zero"):
            d.post_midpoint(cid, b"\0" * 32)
        d.post_midpoint(cid, word("x"))
        with boa.reverts("disputes: not the provider's turn"):
            d.post_midpoint(cid, word("y"))
        with boa.reverts("disputes: caller is not the challenger"):
            d.answer_midpoint(cid, True)
    boa.env.time_travel(seconds=RESPONSE + 1)
    with boa.env.prank(challenger), boa.reverts("disputes: response deadline passed"):
        d.answer_midpoint(cid, True)
    other, _ = challenge(d, court, 2)
    boa.env.time_travel(seconds=RESPONSE + 1)
    with boa.env.prank(court.provider), boa.reverts("disputes: response deadline passed"):
        d.post_midpoint(other, word("late"))
    with (
        boa.env.prank(court.verifiers[0]),
        boa.reverts("disputes: challenge is not being voted on"),
    ):
        d.vote(other, True)


# -- votes, slashing and the loser pays ---------------------------------------------------------


def test_a_majority_against_the_provider_slashes_its_lock(court: Court) -> None:
    d, registry = court.disputes, court.registry
    cid, challenger = challenge(d, court, 1)
    to_vote(d, court, cid, challenger, [True, False])
    committee = list(d.committee_of(cid))
    logs = votes(d, cid, [False, True, False])  # two of three: the step does not replay
    assert state(d, cid) == PROVIDER_LOST and not d.is_held(JOB, ROUND)
    share = PROVIDER_BOND * SHARE_BPS // 10_000 // 2
    assert registry.owed(committee[0]) == registry.owed(committee[2]) == share
    assert registry.owed(committee[1]) == 0
    assert registry.owed(challenger) == PROVIDER_BOND - 2 * share
    assert registry.stake_of(court.provider) == 2 * MIN_STAKE - PROVIDER_BOND
    assert d.owed(challenger) == CHALLENGER_BOND  # its bond back
    (resolved,) = [e for e in logs if type(e).__name__ == "ChallengeResolved"]
    assert resolved.slashed == PROVIDER_BOND and resolved.outcome == PROVIDER_LOST
    assert_money_invariant(d, [challenger, court.provider, *committee], 0)
    with boa.reverts("disputes: trace already settled"):
        d.release(JOB, ROUND, court.provider)


def test_a_false_challenger_loses_its_bond_and_the_provider_keeps_its_stake(court: Court) -> None:
    d, registry = court.disputes, court.registry
    cid, challenger = challenge(d, court, 4)
    to_vote(d, court, cid, challenger, [False, False])
    committee = list(d.committee_of(cid))
    votes(d, cid, [True, True])
    assert state(d, cid) == CHALLENGER_LOST
    share = CHALLENGER_BOND * SHARE_BPS // 10_000 // 2
    assert d.owed(committee[0]) == d.owed(committee[1]) == share
    assert d.owed(court.provider) == CHALLENGER_BOND - 2 * share
    assert d.owed(challenger) == 0
    assert registry.stake_of(court.provider) == 2 * MIN_STAKE
    assert_money_invariant(d, [challenger, court.provider, *committee], 0)
    boa.env.time_travel(seconds=WINDOW + 1)
    d.release(JOB, ROUND, court.provider)
    assert registry.free_stake(court.provider) == 2 * MIN_STAKE


def test_a_committee_minority_cannot_flip_the_outcome(court: Court) -> None:
    d = court.disputes
    cid, challenger = challenge(d, court, 0)
    to_vote(d, court, cid, challenger, [True, True])
    committee = list(d.committee_of(cid))
    with boa.env.prank(committee[0]):
        d.vote(cid, False)  # one corrupt member
        with boa.reverts("disputes: already voted"):
            d.vote(cid, False)
    assert state(d, cid) == VOTING  # one of three decides nothing
    for member in committee[1:]:
        with boa.env.prank(member):
            d.vote(cid, True)
            break
    assert state(d, cid) == VOTING  # 1 : 1
    with boa.env.prank(committee[2]):
        d.vote(cid, True)
    assert state(d, cid) == CHALLENGER_LOST
    with boa.env.prank(committee[0]), boa.reverts("disputes: challenge is not being voted on"):
        d.vote(cid, False)


def test_vote_refusals(court: Court) -> None:
    d = court.disputes
    cid, challenger = challenge(d, court, 0)
    to_vote(d, court, cid, challenger, [True, True])
    with boa.env.prank(funded()), boa.reverts("disputes: caller is not on the committee"):
        d.vote(cid, True)
    with boa.env.prank(court.provider), boa.reverts("disputes: caller is not on the committee"):
        d.vote(cid, True)
    boa.env.time_travel(seconds=VOTE_PERIOD + 1)
    with boa.env.prank(d.committee_of(cid)[0]), boa.reverts("disputes: vote period over"):
        d.vote(cid, True)


# -- timeouts, abandonment, withdrawal ----------------------------------------------------------


def test_a_provider_that_stops_responding_is_slashed(court: Court) -> None:
    d, registry = court.disputes, court.registry
    cid, challenger = challenge(d, court, 3)
    with boa.reverts("disputes: deadline not passed"):
        d.timeout(cid)
    boa.env.time_travel(seconds=RESPONSE + 1)
    d.timeout(cid)
    assert state(d, cid) == PROVIDER_LOST
    assert registry.owed(challenger) == PROVIDER_BOND
    with boa.reverts("disputes: challenge is not open"):
        d.timeout(cid)


def test_a_challenger_that_stops_responding_loses_its_bond(court: Court) -> None:
    d, registry = court.disputes, court.registry
    cid, _ = challenge(d, court, 3)
    with boa.env.prank(court.provider):
        d.post_midpoint(cid, word("mid"))
    boa.env.time_travel(seconds=RESPONSE + 1)
    d.timeout(cid)
    assert state(d, cid) == CHALLENGER_LOST
    assert d.owed(court.provider) == CHALLENGER_BOND
    assert registry.stake_of(court.provider) == 2 * MIN_STAKE


def test_a_vote_without_majority_ends_undecided_and_slashes_nobody(court: Court) -> None:
    d, registry = court.disputes, court.registry
    cid, challenger = challenge(d, court, 3)
    to_vote(d, court, cid, challenger, [True, False])
    votes(d, cid, [False])  # one vote, then silence
    boa.env.time_travel(seconds=VOTE_PERIOD + 1)
    d.timeout(cid)
    assert state(d, cid) == UNDECIDED
    assert d.owed(challenger) == CHALLENGER_BOND
    assert registry.stake_of(court.provider) == 2 * MIN_STAKE and not d.is_held(JOB, ROUND)


def test_challenges_on_a_slashed_trace_are_abandoned_with_their_bond_back(court: Court) -> None:
    d = court.disputes
    first, _ = challenge(d, court, 0)
    second, late = challenge(d, court, 5)
    with boa.reverts("disputes: trace was not slashed"):
        d.abandon(second)
    boa.env.time_travel(seconds=RESPONSE + 1)
    d.timeout(first)
    d.abandon(second)
    assert state(d, second) == ABANDONED and d.owed(late) == CHALLENGER_BOND
    with boa.reverts("disputes: challenge is not open"):
        d.abandon(second)


def test_withdraw_pays_what_is_owed_once(court: Court) -> None:
    d = court.disputes
    cid, challenger = challenge(d, court, 3)
    boa.env.time_travel(seconds=RESPONSE + 1)
    d.timeout(cid)
    before = boa.env.get_balance(challenger)
    with boa.env.prank(challenger):
        d.withdraw()
        assert boa.env.get_balance(challenger) == before + CHALLENGER_BOND
        with boa.reverts("disputes: nothing owed"):
            d.withdraw()
    assert boa.env.get_balance(d.address) == 0
