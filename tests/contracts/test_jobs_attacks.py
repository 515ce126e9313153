"""Issue 13, safe for strangers: one test per attack on a job, each showing that it fails.
(The Registry's own attacks, an admin adding a slasher at once and a slash beyond the job's
lock, are in test_registry.py with the two-step admin.)"""

from __future__ import annotations

from typing import Any

import boa
from contract_helpers import (
    ADMIN_DELAY,
    AGGREGATOR,
    AGGREGATOR_SHARE_BPS,
    AGGREGATOR_STAKE,
    CHALLENGE_WINDOW,
    ETHER,
    MAX_REOPENS,
    MIN_STAKE,
    ROUND_DEADLINE,
    SIGNUP_PERIOD,
    TRAINER,
    TRAINER_STAKE,
    bitmap,
    claim_round,
    commit_all,
    commit_votes,
    events,
    funded,
    h,
    make_job,
    make_open_job,
    node,
    reveal,
    vote,
    vote_all,
    vote_key,
    words,
)


def _create(jobs: Any, **change: Any) -> None:
    args = dict(
        rounds=1, deadline=ROUND_DEADLINE, committee=[], size=3, quorum=2, signup=SIGNUP_PERIOD,
    )
    args.update(change)
    with boa.env.prank(funded()):
        jobs.create_job(
            h("spec"), h("model"), args["rounds"], 10, 1, 1, args["quorum"], args["deadline"],
            args["committee"], args["size"], args["signup"], 0, 0, 0,
            value=args.get("value", 10 * args["rounds"]),
        )


def test_sybil_aggregators_cannot_squat_more_than_64_volunteer_slots(
    jobs: Any, registry: Any
) -> None:
    job = make_open_job(jobs, registry, trainers=0, volunteers=64, aggregator_stake=0, seal=False)
    with boa.env.prank(node(registry, AGGREGATOR)), boa.reverts(
        "jobs: job already has 64 volunteers"
    ):
        jobs.join(job.id, AGGREGATOR)


def test_sybil_aggregators_win_few_seats_in_a_stake_weighted_draw(
    jobs: Any, registry: Any
) -> None:
    """Ten sybils at the minimum stake against three honest nodes with 50 times more each: over
    30 draws (30 seeds) the sybils rarely get the strict majority of a committee of three."""
    sybil_majorities = 0
    sybil_seats = 0
    for draw in range(30):
        boa.env.evm.patch.prevrandao = (draw + 1).to_bytes(32, "big")
        stakes = [MIN_STAKE] * 10 + [50 * MIN_STAKE] * 3
        job = make_open_job(jobs, registry, trainers=0, volunteers=stakes, aggregator_stake=0)
        sybils = set(job.volunteers[:10])
        seats = sum(member in sybils for member in job.aggregators)
        sybil_seats += seats
        sybil_majorities += seats >= 2
    # by head count the sybils would hold 10/13 of the seats and most majorities
    assert sybil_seats < 30 * 3 * 0.25
    assert sybil_majorities <= 3


def test_sybil_aggregators_need_a_strict_majority_of_an_open_committee(jobs: Any) -> None:
    for size, quorum in ((3, 1), (4, 2), (16, 8)):
        with boa.reverts("jobs: an open committee needs a strict-majority quorum"):
            _create(jobs, size=size, quorum=quorum)
    _create(jobs, size=4, quorum=3)


def test_sybil_aggregator_cannot_join_a_named_committee(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry)
    outsider = node(registry, AGGREGATOR)
    with boa.env.prank(outsider), boa.reverts("jobs: caller is not in the job's named committee"):
        jobs.join(job.id, AGGREGATOR)
    commit_all(jobs, job, 0)
    with boa.env.prank(outsider), boa.reverts(
        "jobs: caller is not an aggregator of the job in good standing"
    ):
        jobs.commit_vote(job.id, 0, h("a vote"))


def test_weight_grab_with_equal_weights_is_refused(jobs: Any, registry: Any) -> None:
    """One account declaring weight 2**53 once took 100% of the pay."""
    job = make_job(jobs, registry, weight_cap=0)
    with boa.env.prank(job.trainers[0]), boa.reverts(
        "jobs: this job takes equal weights; weight must be 1"
    ):
        jobs.commit_update(job.id, 0, h("greedy"), 2**53)
    commit_all(jobs, job, 0)
    vote_all(jobs, job, 0, h("m"), bitmap(range(3)))
    claim_round(jobs, job, 0, h("m"), bitmap(range(3)))
    shares = {jobs.owed(trainer) for trainer in job.trainers}
    assert len(shares) == 1  # everyone included got the same


def test_weight_grab_over_the_declared_cap_is_refused(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry, weight_cap=1_000)
    with boa.env.prank(job.trainers[0]), boa.reverts(
        "jobs: weight must be between 1 and the job's weight cap"
    ):
        jobs.commit_update(job.id, 0, h("greedy"), 2**53)
    with boa.env.prank(job.trainers[0]):
        jobs.commit_update(job.id, 0, h("capped"), 1_000)


def test_zero_stake_at_risk_unbonding_while_working_is_refused(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry)
    trainer, aggregator = job.trainers[0], job.aggregators[0]
    for account, lock in ((trainer, TRAINER_STAKE), (aggregator, AGGREGATOR_STAKE)):
        with boa.env.prank(account), boa.reverts("registry: amount exceeds unlocked stake"):
            registry.request_unbond(2 * MIN_STAKE)
        with boa.env.prank(account):
            registry.request_unbond(2 * MIN_STAKE - lock)  # the free part may go
        assert registry.stake_of(account) == lock


def test_zero_stake_at_risk_sybils_cannot_share_one_stake_across_jobs(
    jobs: Any, registry: Any
) -> None:
    first = make_job(jobs, registry, trainers=0, aggregators=1, quorum=1,
                     trainer_stake=2 * MIN_STAKE)
    second = make_job(jobs, registry, trainers=0, aggregators=1, quorum=1,
                      trainer_stake=2 * MIN_STAKE)
    trainer = node(registry, TRAINER)  # 2 * MIN_STAKE: backs one of the two bonds
    with boa.env.prank(trainer):
        jobs.join(first.id, TRAINER)
        with boa.reverts("registry: amount exceeds unlocked stake"):
            jobs.join(second.id, TRAINER)


def test_honest_aggregator_is_not_slashed_through_selective_serving(
    jobs: Any, registry: Any
) -> None:
    """Trainer 2 serves its update only to the honest first aggregator, which includes it; the
    other two never got it and leave it out. The first aggregator's vote names another included
    set, so it is not slashed (nor paid); the majority's pair finalizes."""
    job = make_job(jobs, registry, trainers=3, aggregators=3, quorum=2)
    served_all, *majority = job.aggregators
    commit_all(jobs, job, 0)
    vote(jobs, job, 0, [(served_all, h("with 2"), bitmap(range(3)))]
         + [(aggregator, h("without 2"), bitmap([0, 1])) for aggregator in majority])
    (final,) = events(jobs, "RoundFinalized")
    assert (final.model_hash, final.included) == (h("without 2"), words(bitmap([0, 1])))
    assert not jobs.provably_wrong(job.id, served_all)
    with boa.env.prank(funded()), boa.reverts("jobs: that vote is not provably wrong"):
        jobs.challenge(job.id, served_all)
    with boa.env.prank(served_all), boa.reverts("jobs: caller voted for another result"):
        jobs.claim_vote(job.id, 0)
    assert registry.lock_of(jobs.address, job.id, served_all) == AGGREGATOR_STAKE
    assert jobs.is_aggregator(job.id, served_all)
    assert jobs.owed(served_all) == 0


def test_dead_round_is_revived_by_reopen(jobs: Any, registry: Any) -> None:
    """A round with fewer than min_trainers commits at its deadline used to die forever."""
    job = make_job(jobs, registry, trainers=3, min_trainers=3, rounds=1)
    with boa.env.prank(job.trainers[0]):
        jobs.commit_update(job.id, 0, h("u 0"), 1)
    boa.env.time_travel(seconds=ROUND_DEADLINE + 1)
    first = job.aggregators[0]
    commit_votes(jobs, job, 0, [(first, h("m"), bitmap([0]))])
    boa.env.time_travel(seconds=ROUND_DEADLINE + 1)
    with boa.reverts("jobs: included has fewer than min_trainers trainers"):
        reveal(jobs, job, 0, first, h("m"), bitmap([0]))
    boa.env.time_travel(seconds=ROUND_DEADLINE + 1)
    jobs.reopen(job.id)
    for index in (1, 2):
        with boa.env.prank(job.trainers[index]):
            jobs.commit_update(job.id, 0, h(f"u {index}"), 1)
    vote_all(jobs, job, 0, h("m"), bitmap(range(3)))
    assert jobs.round_result(job.id, 0)[0] == vote_key(h("m"), bitmap(range(3)), 3)[:14]


def test_dead_round_reopens_are_bounded(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry, min_trainers=3)
    for _ in range(MAX_REOPENS):
        boa.env.time_travel(seconds=ROUND_DEADLINE + 1)
        jobs.reopen(job.id)
    boa.env.time_travel(seconds=ROUND_DEADLINE + 1)
    with boa.reverts("jobs: round was already reopened 3 times"):
        jobs.reopen(job.id)
    with boa.env.prank(job.owner):
        jobs.cancel(job.id)  # now, and only now, the owner may give up


def test_squatter_trainer_is_evicted_after_three_missed_rounds(jobs: Any, registry: Any) -> None:
    """A trainer that joins and never commits made every round wait for its deadline."""
    job = make_job(jobs, registry, trainers=3, rounds=5)
    squatter = job.trainers[2]
    workers = job.trainers[:2]
    for round_ in range(3):
        for trainer in workers:
            with boa.env.prank(trainer):
                jobs.commit_update(job.id, round_, h(f"u {round_}"), 1)
        with boa.env.prank(job.aggregators[0]), boa.reverts(
            "jobs: a trainer has not committed and the deadline has not passed"
        ):
            jobs.commit_vote(job.id, round_, h("a vote"))
        boa.env.time_travel(seconds=ROUND_DEADLINE + 1)
        vote_all(jobs, job, round_, h(f"m {round_}"), bitmap([0, 1]))
    jobs.evict(job.id, jobs.trainer_index(job.id, squatter) - 1)
    for trainer in workers:
        with boa.env.prank(trainer):
            jobs.commit_update(job.id, 3, h("u 3"), 1)
    vote_all(jobs, job, 3, h("m 3"), bitmap([0, 1]))  # before the deadline: nobody waits
    assert jobs.jobs(job.id).current_round == 4
    assert registry.owed(job.owner) == TRAINER_STAKE  # its bond went to the owner


def test_owner_cancel_front_running_a_ready_round_is_refused(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry, trainers=3, aggregators=2, quorum=2)
    commit_all(jobs, job, 0)
    everyone = bitmap(range(3))
    commit_votes(jobs, job, 0, [(a, h("m"), everyone) for a in job.aggregators])
    reveal(jobs, job, 0, job.aggregators[0], h("m"), everyone)
    with boa.env.prank(job.owner), boa.reverts("jobs: the round's attempt is not over"):
        jobs.cancel(job.id)
    boa.env.time_travel(seconds=2 * ROUND_DEADLINE + 1)
    with boa.env.prank(job.owner), boa.reverts("jobs: the round can still be reopened"):
        jobs.cancel(job.id)
    reveal(jobs, job, 0, job.aggregators[1], h("m"), everyone)  # the round still finalizes
    assert jobs.jobs(job.id).current_round == 1


def test_huge_round_deadline_is_refused(jobs: Any) -> None:
    for huge in (2**256 - 1, 2_592_001):
        with boa.reverts("jobs: round deadline must be between 1 second and 30 days"):
            _create(jobs, deadline=huge)
        with boa.reverts("jobs: signup period must be between 1 second and 30 days"):
            _create(jobs, signup=huge)
    with boa.reverts("jobs: rounds must be between 1 and 10000"):
        _create(jobs, rounds=2**200, value=10)


def test_revoking_jobs_does_not_make_finalization_revert(
    jobs: Any, registry: Any, admin: str
) -> None:
    job = make_job(jobs, registry, trainers=3, aggregators=3, quorum=2)
    wrong, *honest = job.aggregators
    with boa.env.prank(admin):
        registry.propose_slasher(jobs.address, False)
    boa.env.time_travel(seconds=ADMIN_DELAY)
    registry.apply_slasher(jobs.address)
    assert not registry.slashers(jobs.address)
    boa.env.time_travel(seconds=ROUND_DEADLINE + 1)
    jobs.reopen(job.id)
    commit_all(jobs, job, 0)
    vote(jobs, job, 0, [(wrong, h("wrong"), bitmap(range(3)))]
         + [(aggregator, h("m"), bitmap(range(3))) for aggregator in honest])
    with boa.env.prank(funded()):
        jobs.challenge(job.id, wrong)
    (slashed,) = events(jobs, "AggregatorSlashed")
    assert (slashed.aggregator, slashed.amount) == (wrong, 0)
    assert jobs.jobs(job.id).current_round == 1
    # its locks stay releasable: a revoked slasher can still unlock
    commit_all(jobs, job, 1)
    vote_all(jobs, job, 1, h("m 2"), bitmap(range(3)), voters=honest)
    boa.env.time_travel(seconds=CHALLENGE_WINDOW)
    with boa.env.prank(job.trainers[0]):
        jobs.release(job.id)
    assert registry.locked(job.trainers[0]) == 0


def test_slash_is_capped_at_the_jobs_lock(
    jobs_deployer: Any, registry: Any, admin: str
) -> None:
    """A slash_amount far above the bond takes only the bond the aggregator locked for the job,
    never the rest of its stake."""
    greedy = jobs_deployer.deploy(registry.address, AGGREGATOR_SHARE_BPS, 100 * ETHER,
                                  CHALLENGE_WINDOW)
    with boa.env.prank(admin):
        registry.set_first_slasher(greedy.address)
    job = make_job(greedy, registry, trainers=2, aggregators=3, quorum=2)
    wrong, *honest = job.aggregators
    commit_all(greedy, job, 0)
    vote(greedy, job, 0, [(wrong, h("wrong"), bitmap(range(2)))]
         + [(aggregator, h("m"), bitmap(range(2))) for aggregator in honest])
    with boa.env.prank(funded()):
        greedy.challenge(job.id, wrong)
    (slashed,) = events(greedy, "AggregatorSlashed")
    assert slashed.amount == AGGREGATOR_STAKE < 100 * ETHER
    assert registry.stake_of(wrong) == 2 * MIN_STAKE - AGGREGATOR_STAKE
    assert registry.owed(job.owner) == AGGREGATOR_STAKE
