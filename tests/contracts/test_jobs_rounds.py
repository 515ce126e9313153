"""Jobs: the quorum vote that finalizes a round, payouts, slashing, cancel, refund, withdraw
and reentrancy."""

from __future__ import annotations

from typing import Any

import boa
import pytest
from boa.contracts.base_evm_contract import BoaError
from contract_helpers import (
    AGGREGATOR_SHARE_BPS,
    AGGREGATOR_STAKE,
    CANCELLED,
    CHALLENGE_WINDOW,
    EMPTY,
    ETHER,
    FINISHED,
    MIN_STAKE,
    OPEN,
    REWARD,
    ROUND_DEADLINE,
    SIGNUP_PERIOD,
    SLASH_AMOUNT,
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
    reveal,
    run_out_reopens,
    salt_of,
    vote,
    vote_all,
    vote_key,
    words,
)


def assert_solvent(jobs: Any) -> None:
    assert boa.env.get_balance(jobs.address) == jobs.total_escrow() + jobs.total_owed()


def expected_payouts(
    reward: int, weights: dict[int, int], n_agreeing: int
) -> tuple[int, dict[int, int]]:
    """Each agreeing aggregator's credit and each included trainer's credit, by the README."""
    aggregator_pool = reward * AGGREGATOR_SHARE_BPS // 10_000
    trainer_pool = reward - aggregator_pool
    total = sum(weights.values())
    return aggregator_pool // n_agreeing, {i: trainer_pool * w // total for i, w in weights.items()}


def event_names(contract: Any) -> list[str]:
    """The names of the events the contract's last call emitted, in log order."""
    return [type(event).__name__ for event in contract.get_logs()]




def test_a_reveal_below_the_quorum_does_not_finalize(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry, aggregators=3, quorum=2)
    commit_all(jobs, job, 0)
    everyone = bitmap(range(3))
    ballots = [(job.aggregators[0], h("m"), everyone), (job.aggregators[1], h("other"), everyone),
               (job.aggregators[2], h("m"), everyone)]
    commit_votes(jobs, job, 0, ballots)
    for aggregator, model, _ in ballots[:2]:
        reveal(jobs, job, 0, aggregator, model, everyone)
        assert event_names(jobs) == ["Proposed"]
        assert jobs.jobs(job.id).current_round == 0
    assert jobs.round_result(job.id, 0) == (bytes(14), 0)
    assert jobs.votes(job.id, 0, vote_key(h("m"), everyone, 3)) == 1
    assert jobs.total_owed() == 0
    assert jobs.jobs(job.id).escrow == 2 * REWARD
    reveal(jobs, job, 0, job.aggregators[2], h("m"), everyone)
    assert "RoundFinalized" in event_names(jobs)
    assert jobs.jobs(job.id).current_round == 1
    assert_solvent(jobs)


def test_a_vote_after_the_round_was_finalized_is_refused(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry, aggregators=3, quorum=2, rounds=2)
    commit_all(jobs, job, 0)
    vote_all(jobs, job, 0, h("m"), bitmap(range(3)), voters=job.aggregators[:2])
    late = job.aggregators[2]
    with boa.env.prank(late):
        with boa.reverts("jobs: wrong round"):
            jobs.commit_vote(job.id, 0, h("too late"))
        with boa.reverts("jobs: wrong round"):
            jobs.reveal(job.id, 0, h("m"), words(7), 3, salt_of(late, 0))
        with boa.reverts("jobs: job is not open"):
            jobs.commit_vote(job.id + 1, 0, h("too late"))
    assert jobs.vote_of(job.id, 0, late) == EMPTY
    assert registry.nodes(late).stake == 2 * MIN_STAKE  # a refused vote is not slashed
    assert jobs.owed(late) == 0


def test_after_the_deadline_the_committed_trainers_suffice(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry, trainers=3, quorum=2)
    for trainer in job.trainers[:2]:
        with boa.env.prank(trainer):
            jobs.commit_update(job.id, 0, h("u"), 4)
    boa.env.time_travel(seconds=ROUND_DEADLINE + 1)
    vote_all(jobs, job, 0, h("m"), bitmap([0, 1]))
    assert jobs.round_result(job.id, 0)[0] == vote_key(h("m"), 3, 8)[:14]
    with boa.env.prank(job.trainers[2]), boa.reverts("jobs: caller was not included in that round"):
        jobs.claim(job.id, 0, h("m"), words(3), 8)


def test_payouts_are_exact_and_dust_stays_in_escrow(jobs: Any, registry: Any) -> None:
    reward = 10 * ETHER + 7
    weights = [3, 5, 11, 1]
    job = make_job(jobs, registry, trainers=4, aggregators=3, quorum=3, reward=reward, rounds=2)
    commit_all(jobs, job, 0, weights)
    included = bitmap([0, 1, 2])  # trainer 3 committed but is left out
    vote_all(jobs, job, 0, h("m"), included)  # the third reveal finalizes
    claim_round(jobs, job, 0, h("m"), included, voters=job.aggregators)
    credited = {a: jobs.owed(a) for a in job.trainers + job.aggregators}

    each_aggregator, per_trainer = expected_payouts(reward, {0: 3, 1: 5, 2: 11}, 3)
    for aggregator in job.aggregators:
        assert jobs.owed(aggregator) == each_aggregator == credited[aggregator]
    for index, amount in per_trainer.items():
        assert jobs.owed(job.trainers[index]) == amount == credited[job.trainers[index]]
    assert jobs.owed(job.trainers[3]) == 0
    paid = 3 * each_aggregator + sum(per_trainer.values())
    assert 0 < reward - paid < 10  # rounding dust, kept in escrow
    assert jobs.reserved(job.id) == reward - paid
    assert jobs.jobs(job.id).escrow == 2 * reward - paid
    assert jobs.total_owed() == paid
    assert_solvent(jobs)




def test_the_quorum_vote_finalizes_while_jobs_is_not_an_authorized_slasher(
    jobs_deployer: Any, registry: Any
) -> None:
    unauthorized = jobs_deployer.deploy(
        registry.address, AGGREGATOR_SHARE_BPS, SLASH_AMOUNT, CHALLENGE_WINDOW
    )
    job = make_job(unauthorized, registry, aggregators=3, quorum=2, trainer_stake=0,
                   aggregator_stake=0)  # nothing to lock, so joining needs no authorization
    dissenter, agree_1, agree_2 = job.aggregators
    commit_all(unauthorized, job, 0)
    everyone = bitmap(range(3))
    vote(unauthorized, job, 0, [(dissenter, h("wrong"), everyone), (agree_1, h("m"), everyone),
                                (agree_2, h("m"), everyone)])
    with boa.env.prank(funded()):
        unauthorized.challenge(job.id, dissenter)
    (slashed,) = events(unauthorized, "AggregatorSlashed")
    assert (slashed.aggregator, slashed.amount) == (dissenter, 0)
    assert unauthorized.jobs(job.id).current_round == 1
    assert unauthorized.is_aggregator(job.id, dissenter)  # nothing was taken: not removed


def test_join_with_a_stake_needs_jobs_to_be_an_authorized_slasher(
    jobs_deployer: Any, registry: Any
) -> None:
    unauthorized = jobs_deployer.deploy(
        registry.address, AGGREGATOR_SHARE_BPS, SLASH_AMOUNT, CHALLENGE_WINDOW
    )
    with pytest.raises(BoaError, match="registry: caller is not an authorized slasher"):
        make_job(unauthorized, registry)


def test_the_last_rounds_quorum_vote_finishes_the_job(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry, rounds=2)
    for round_ in range(2):
        commit_all(jobs, job, round_)
        vote_all(jobs, job, round_, h(f"model {round_ + 1}"), bitmap(range(3)))
    names = event_names(jobs)  # the last round's quorum reveal
    assert names == ["Proposed", "RoundFinalized", "JobFinished"]
    (finished,) = events(jobs, "JobFinished")
    assert finished.final_model_hash == h("model 2")
    assert [jobs.round_result(job.id, r)[0] for r in range(2)] == [
        vote_key(h(f"model {r + 1}"), 7, 3)[:14] for r in range(2)
    ]
    state = jobs.jobs(job.id)
    assert (state.status, jobs.final_model_hash(job.id)) == (FINISHED, h("model 2"))
    assert state.current_round == 2 and jobs.ended_at(job.id) == state.round_start
    with boa.env.prank(job.trainers[0]), boa.reverts("jobs: job is not open"):
        jobs.commit_update(job.id, 2, h("u"), 1)
    with boa.env.prank(job.aggregators[0]), boa.reverts("jobs: job is not open"):
        jobs.commit_vote(job.id, 1, h("a vote"))
    assert_solvent(jobs)


def test_a_quorum_vote_before_the_last_round_does_not_finish_the_job(
    jobs: Any, registry: Any
) -> None:
    job = make_job(jobs, registry, rounds=2)
    commit_all(jobs, job, 0)
    vote_all(jobs, job, 0, h("model 1"), bitmap(range(3)))
    assert "JobFinished" not in event_names(jobs)
    state = jobs.jobs(job.id)
    assert (state.status, jobs.final_model_hash(job.id)) == (OPEN, EMPTY)


def test_cancel_a_stalled_job(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry)
    with boa.env.prank(job.owner), boa.reverts("jobs: the round's attempt is not over"):
        jobs.cancel(job.id)
    boa.env.time_travel(seconds=ROUND_DEADLINE + 1)
    with boa.env.prank(job.owner), boa.reverts("jobs: the round can still be reopened"):
        jobs.cancel(job.id)
    run_out_reopens(jobs, job)
    with boa.env.prank(job.trainers[0]), boa.reverts("jobs: caller is not the job owner"):
        jobs.cancel(job.id)
    with boa.env.prank(job.owner):
        jobs.cancel(job.id)
        (event,) = events(jobs, "JobCancelled")
        assert (event.job_id, event.round) == (job.id, 0)
        with boa.reverts("jobs: job is not open"):
            jobs.cancel(job.id)
    assert jobs.jobs(job.id).status == CANCELLED
    assert jobs.ended_at(job.id) == boa.env.evm.patch.timestamp
    with boa.env.prank(job.trainers[0]), boa.reverts("jobs: job is not open"):
        jobs.commit_update(job.id, 0, h("u"), 1)


def test_cancel_refuses_a_finished_job(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry, rounds=1)
    commit_all(jobs, job, 0)
    vote_all(jobs, job, 0, h("m"), bitmap(range(3)))  # the last vote finalizes
    boa.env.time_travel(seconds=ROUND_DEADLINE + 1)
    with boa.env.prank(job.owner), boa.reverts("jobs: job is not open"):
        jobs.cancel(job.id)


def test_refund_after_cancel_returns_the_whole_escrow(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry, rounds=3)
    with boa.env.prank(job.owner), boa.reverts("jobs: job is still open"):
        jobs.refund(job.id)
    run_out_reopens(jobs, job)
    with boa.env.prank(job.owner):
        jobs.cancel(job.id)
    with boa.env.prank(job.trainers[0]), boa.reverts("jobs: caller is not the job owner"):
        jobs.refund(job.id)
    with boa.env.prank(job.owner):
        jobs.refund(job.id)
        (event,) = events(jobs, "Refunded")
        with boa.reverts("jobs: nothing to refund before the challenge window ends"):
            jobs.refund(job.id)
    assert (event.owner, event.amount) == (job.owner, 3 * REWARD)
    assert jobs.owed(job.owner) == 3 * REWARD
    assert (jobs.jobs(job.id).escrow, jobs.total_escrow()) == (0, 0)
    assert_solvent(jobs)


def test_refund_after_finish_returns_the_dust(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry, rounds=1, trainers=3, quorum=2)
    commit_all(jobs, job, 0, [1, 1, 1])
    vote_all(jobs, job, 0, h("m"), bitmap(range(3)), voters=job.aggregators[:2])
    claim_round(jobs, job, 0, h("m"), bitmap(range(3)), voters=job.aggregators[:2])
    dust = jobs.jobs(job.id).escrow
    each_aggregator, per_trainer = expected_payouts(REWARD, {0: 1, 1: 1, 2: 1}, 2)
    assert dust == REWARD - 2 * each_aggregator - sum(per_trainer.values()) > 0
    early = "jobs: nothing to refund before the challenge window ends"
    with boa.env.prank(job.owner), boa.reverts(early):
        jobs.refund(job.id)  # the dust is reserved with the claims until the window ends
    boa.env.time_travel(seconds=CHALLENGE_WINDOW)
    with boa.env.prank(job.owner):
        jobs.refund(job.id)
    assert jobs.owed(job.owner) == dust
    assert jobs.total_escrow() == 0
    assert_solvent(jobs)


def test_withdraw_pays_what_is_owed_once(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry, rounds=1)
    commit_all(jobs, job, 0)
    vote_all(jobs, job, 0, h("m"), bitmap(range(3)))  # the last vote finalizes
    claim_round(jobs, job, 0, h("m"), bitmap(range(3)))
    trainer = job.trainers[0]
    owed = jobs.owed(trainer)
    before, total_before = boa.env.get_balance(trainer), jobs.total_owed()
    with boa.env.prank(trainer):
        jobs.withdraw()
        (event,) = events(jobs, "Withdrawn")
        with boa.reverts("jobs: nothing owed"):
            jobs.withdraw()
    assert (event.account, event.amount) == (trainer, owed)
    assert boa.env.get_balance(trainer) == before + owed
    assert jobs.total_owed() == total_before - owed
    assert jobs.owed(trainer) == 0
    assert_solvent(jobs)


def test_withdraw_with_nothing_owed_reverts(jobs: Any) -> None:
    with boa.env.prank(funded()), boa.reverts("jobs: nothing owed"):
        jobs.withdraw()


@pytest.fixture
def attacker(jobs: Any, receiver_deployer: Any) -> Any:
    """A contract owning a cancelled, refunded job: it is owed 2 * REWARD."""
    contract = receiver_deployer.deploy(jobs.address)
    boa.env.set_balance(contract.address, 0)
    with boa.env.prank(funded()):
        job_id = contract.create_job(2, REWARD, ROUND_DEADLINE, value=2 * REWARD)
    boa.env.time_travel(seconds=ROUND_DEADLINE + 1)  # an open committee nobody signed up for
    contract.cancel_and_refund(job_id)
    assert jobs.owed(contract.address) == 2 * REWARD
    return contract


def test_reentrant_withdraw_reverts_the_whole_payment(jobs: Any, attacker: Any) -> None:
    with boa.reverts():
        attacker.attack(False)
    assert jobs.owed(attacker.address) == 2 * REWARD
    assert boa.env.get_balance(attacker.address) == 0
    assert boa.env.get_balance(jobs.address) == 2 * REWARD
    assert_solvent(jobs)


def test_swallowed_reentry_gets_paid_exactly_once(jobs: Any, attacker: Any) -> None:
    attacker.attack(True)
    assert attacker.attempts() == 1
    assert attacker.reentry_succeeded() is False
    assert attacker.received() == 2 * REWARD
    assert boa.env.get_balance(attacker.address) == 2 * REWARD
    assert jobs.owed(attacker.address) == 0
    assert boa.env.get_balance(jobs.address) == 0
    assert_solvent(jobs)


def test_reopen_starts_a_new_attempt_with_the_rounds_commits(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry, trainers=3, aggregators=3, quorum=2)
    with boa.env.prank(job.trainers[0]):
        jobs.commit_update(job.id, 0, h("kept"), 4)
    boa.env.time_travel(seconds=ROUND_DEADLINE + 1)
    first = job.aggregators[0]
    assert not jobs.voted_in_attempt(job.id, first)
    vote(jobs, job, 0, [(first, h("m"), bitmap([0]))])  # a vote in attempt 0, after the deadline
    assert jobs.voted_in_attempt(job.id, first)
    assert not jobs.voted_in_attempt(job.id, job.aggregators[1])
    boa.env.time_travel(seconds=ROUND_DEADLINE + 1)  # the reveal period of attempt 0 is over
    with boa.env.prank(funded()):
        jobs.reopen(job.id)
    (event,) = events(jobs, "RoundReopened")
    assert (event.job_id, event.round, event.reopens) == (job.id, 0, 1)
    assert not jobs.voted_in_attempt(job.id, first)  # the new attempt needs its vote again
    assert jobs.vote_of(job.id, 0, first) != bytes(32)  # while its vote of the round stays
    state = jobs.jobs(job.id)
    assert (state.attempt, state.reopens, state.round_start) == (
        1, 1, boa.env.evm.patch.timestamp,
    )
    assert jobs.commit_of(job.id, 0, job.trainers[0]) == (h("kept"), 4)
    for index in (1, 2):  # the others commit in the new window
        with boa.env.prank(job.trainers[index]):
            jobs.commit_update(job.id, 0, h(f"u {index}"), 1)
    vote_all(jobs, job, 0, h("m"), bitmap(range(3)), voters=job.aggregators[:2])
    assert jobs.votes(job.id, 1, vote_key(h("m"), bitmap(range(3)), 6)) == 2
    assert jobs.round_result(job.id, 0) == (vote_key(h("m"), bitmap(range(3)), 6)[:14], 1)
    assert jobs.jobs(job.id).reopens == 0  # reset by the finalization
    assert jobs.jobs(job.id).attempt == 2


def test_reopen_refuses_before_the_deadline_unsealed_and_after_three(
    jobs: Any, registry: Any
) -> None:
    job = make_job(jobs, registry)
    with boa.reverts("jobs: the round's attempt is not over"):
        jobs.reopen(job.id)
    run_out_reopens(jobs, job)
    with boa.reverts("jobs: round was already reopened 3 times"):
        jobs.reopen(job.id)
    unsealed = make_open_job(jobs, registry, trainers=0, volunteers=3, seal=False)
    with boa.reverts("jobs: the committee is not sealed yet"):
        jobs.reopen(unsealed.id)
    with boa.reverts("jobs: job is not open"):
        jobs.reopen(unsealed.id + 1)


def test_evict_a_trainer_that_missed_three_rounds(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry, trainers=3, rounds=5, min_trainers=2)
    squatter = job.trainers[2]
    for round_ in range(3):
        for trainer in job.trainers[:2]:
            with boa.env.prank(trainer):
                jobs.commit_update(job.id, round_, h(f"u {round_}"), 1)
        boa.env.time_travel(seconds=ROUND_DEADLINE + 1)
        if round_ < 2:
            with boa.reverts("jobs: trainer has not missed 3 finalized rounds in a row"):
                jobs.evict(job.id, 2)
        vote_all(jobs, job, round_, h(f"model {round_}"), bitmap([0, 1]))
    with boa.env.prank(funded()):
        jobs.evict(job.id, 2)
    (event,) = events(jobs, "TrainerEvicted")
    assert (event.trainer, event.index, event.slashed) == (squatter, 2, TRAINER_STAKE)
    assert not jobs.is_trainer_active(job.id, squatter)
    assert jobs.jobs(job.id).n_active_trainers == 2
    assert registry.owed(job.owner) == TRAINER_STAKE
    assert registry.lock_of(jobs.address, job.id, squatter) == 0
    with boa.env.prank(squatter), boa.reverts("jobs: caller was evicted from the job"):
        jobs.commit_update(job.id, 3, h("back"), 1)
    with boa.reverts("jobs: trainer is already evicted"):
        jobs.evict(job.id, 2)


def test_evict_counts_from_the_last_commit_and_refuses_unknown_trainers(
    jobs: Any, registry: Any
) -> None:
    job = make_job(jobs, registry, trainers=2, rounds=5, min_trainers=1)
    commit_all(jobs, job, 0)
    vote_all(jobs, job, 0, h("m0"), bitmap([0, 1]))
    for round_ in (1, 2):  # trainer 1 misses rounds 1 and 2 only
        with boa.env.prank(job.trainers[0]):
            jobs.commit_update(job.id, round_, h("u"), 1)
        boa.env.time_travel(seconds=ROUND_DEADLINE + 1)
        vote_all(jobs, job, round_, h(f"m{round_}"), bitmap([0]))
    with boa.reverts("jobs: trainer has not missed 3 finalized rounds in a row"):
        jobs.evict(job.id, 1)
    with boa.reverts("jobs: no trainer has that index"):
        jobs.evict(job.id, 2)
    with boa.reverts("jobs: job is not open"):
        jobs.evict(job.id + 1, 0)


def test_release_returns_the_locks_after_the_challenge_window(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry, rounds=1)
    commit_all(jobs, job, 0)
    vote_all(jobs, job, 0, h("m"), bitmap(range(3)))
    assert jobs.ended_at(job.id) == boa.env.evm.patch.timestamp
    boa.env.time_travel(seconds=CHALLENGE_WINDOW)
    locks = ((job.trainers[0], TRAINER_STAKE), (job.aggregators[0], AGGREGATOR_STAKE))
    for account, stake in locks:
        with boa.env.prank(account):
            jobs.release(job.id)
        (event,) = events(jobs, "StakeReleased")
        assert (event.job_id, event.node, event.amount) == (job.id, account, stake)
        assert registry.locked(account) == 0
        with boa.env.prank(account):
            registry.request_unbond(2 * MIN_STAKE)  # all of it is free again


def test_release_refuses_open_jobs_early_calls_strangers_and_twice(
    jobs: Any, registry: Any
) -> None:
    job = make_job(jobs, registry, rounds=1)
    trainer = job.trainers[0]
    with boa.env.prank(trainer), boa.reverts("jobs: job has not ended"):
        jobs.release(job.id)
    commit_all(jobs, job, 0)
    vote_all(jobs, job, 0, h("m"), bitmap(range(3)))
    boa.env.time_travel(seconds=CHALLENGE_WINDOW - 1)
    with boa.env.prank(trainer), boa.reverts("jobs: the challenge window has not passed"):
        jobs.release(job.id)
    boa.env.time_travel(seconds=1)
    with boa.env.prank(funded()), boa.reverts("jobs: caller holds no stake in the job"):
        jobs.release(job.id)
    with boa.env.prank(trainer):
        jobs.release(job.id)
        with boa.reverts("jobs: stake already released"):
            jobs.release(job.id)


def test_cancel_an_open_committee_that_found_too_few_volunteers(
    jobs: Any, registry: Any
) -> None:
    job = make_open_job(jobs, registry, trainers=1, volunteers=2, seal=False)
    with boa.env.prank(job.owner), boa.reverts("jobs: signup is not over"):
        jobs.cancel(job.id)
    boa.env.time_travel(seconds=SIGNUP_PERIOD + 1)
    with boa.env.prank(job.owner):
        jobs.cancel(job.id)
    assert jobs.jobs(job.id).status == CANCELLED
    boa.env.time_travel(seconds=CHALLENGE_WINDOW)
    with boa.env.prank(job.volunteers[0]):
        jobs.release(job.id)
    assert registry.locked(job.volunteers[0]) == 0


def test_cancel_refuses_an_open_committee_that_can_be_sealed(jobs: Any, registry: Any) -> None:
    job = make_open_job(jobs, registry, trainers=1, volunteers=3, seal=False)
    boa.env.time_travel(seconds=SIGNUP_PERIOD + 1)
    with boa.env.prank(job.owner), boa.reverts(
        "jobs: enough volunteers signed up; seal the committee"
    ):
        jobs.cancel(job.id)
