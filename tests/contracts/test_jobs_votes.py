"""Jobs: the commit-reveal vote (commit_vote, reveal), claimable shares (claim, claim_vote),
challenge of provably wrong votes, refunds of unclaimed shares, and the attacks on each step."""

from __future__ import annotations

from typing import Any

import boa
from contract_helpers import (
    AGGREGATOR_SHARE_BPS,
    CHALLENGE_WINDOW,
    EMPTY,
    REWARD,
    ROUND_DEADLINE,
    SLASH_AMOUNT,
    bitmap,
    claim_round,
    commit_all,
    commit_votes,
    commitment,
    events,
    funded,
    h,
    make_job,
    reveal,
    salt_of,
    total_of,
    vote,
    vote_all,
    vote_key,
    words,
)

AGGREGATOR_POOL = REWARD * AGGREGATOR_SHARE_BPS // 10_000
TRAINER_POOL = REWARD - AGGREGATOR_POOL


def solvent(jobs: Any) -> bool:
    return boa.env.get_balance(jobs.address) == jobs.total_escrow() + jobs.total_owed()


# -- commit_vote ----------------------------------------------------------------------------


def test_commit_vote_records_a_hidden_vote(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry, aggregators=3)
    commit_all(jobs, job, 0)
    first = job.aggregators[0]
    secret = commitment(h("m"), bitmap(range(3)), 3, salt_of(first, 0), first)
    with boa.env.prank(first):
        jobs.commit_vote(job.id, 0, secret)
    (event,) = events(jobs, "VoteCommitted")
    assert (event.aggregator, event.round, event.attempt, event.commitment) == (first, 0, 0, secret)
    assert jobs.vote_committed(job.id, first) and not jobs.voted_in_attempt(job.id, first)
    assert jobs.vote_phase(job.id)[0] == 1 and not jobs.reveals_open(job.id)


def test_commit_vote_refuses_outsiders_doubles_early_and_late_commits(
    jobs: Any, registry: Any
) -> None:
    job = make_job(jobs, registry, trainers=2, aggregators=3)
    first, second, third = job.aggregators
    with (
        boa.env.prank(first),
        boa.reverts("jobs: a trainer has not committed and the deadline has not passed"),
    ):
        jobs.commit_vote(job.id, 0, h("c"))
    commit_all(jobs, job, 0)
    with (
        boa.env.prank(job.trainers[0]),
        boa.reverts("jobs: caller is not an aggregator of the job in good standing"),
    ):
        jobs.commit_vote(job.id, 0, h("c"))
    with boa.env.prank(first), boa.reverts("jobs: commitment is empty"):
        jobs.commit_vote(job.id, 0, EMPTY)
    with boa.env.prank(first), boa.reverts("jobs: wrong round"):
        jobs.commit_vote(job.id, 1, h("c"))
    with boa.env.prank(first):
        jobs.commit_vote(job.id, 0, h("c"))
    with boa.env.prank(first), boa.reverts("jobs: already committed a vote in this attempt"):
        jobs.commit_vote(job.id, 0, h("c"))
    boa.env.time_travel(seconds=ROUND_DEADLINE + 1)  # the vote-commit period is over
    with boa.env.prank(second), boa.reverts("jobs: the vote-commit period is over"):
        jobs.commit_vote(job.id, 0, h("c"))
    assert jobs.reveals_open(job.id)
    del third


# -- reveal ---------------------------------------------------------------------------------


def test_reveals_open_when_every_voter_committed_and_the_quorum_reveal_finalizes(
    jobs: Any, registry: Any
) -> None:
    job = make_job(jobs, registry, aggregators=3, quorum=2)
    commit_all(jobs, job, 0, [1, 2, 3])
    everyone = bitmap(range(3))
    commit_votes(jobs, job, 0, [(a, h("m"), everyone) for a in job.aggregators])
    assert jobs.reveals_open(job.id)
    reveal(jobs, job, 0, job.aggregators[0], h("m"), everyone)
    (proposed,) = events(jobs, "Proposed")
    assert (proposed.model_hash, proposed.included, proposed.total_weight) == (
        h("m"),
        words(everyone),
        6,
    )
    assert jobs.votes(job.id, 0, vote_key(h("m"), everyone, 6)) == 1
    assert jobs.jobs(job.id).current_round == 0
    reveal(jobs, job, 0, job.aggregators[1], h("m"), everyone)
    (final,) = events(jobs, "RoundFinalized")
    assert (final.round, final.model_hash, final.included, final.total_weight) == (
        0,
        h("m"),
        words(everyone),
        6,
    )
    assert [type(e).__name__ for e in jobs.get_logs()] == [
        "Proposed",
        "RoundFinalized",
    ]  # no payout
    assert jobs.jobs(job.id).current_round == 1 and jobs.total_owed() == 0
    prefix, attempt = jobs.round_result(job.id, 0)
    assert prefix == vote_key(h("m"), everyone, 6)[:14] and attempt == 0
    with boa.reverts("jobs: wrong round"):
        reveal(jobs, job, 0, job.aggregators[2], h("m"), everyone)


def test_reveal_refuses_before_the_commit_phase_ends_and_without_a_commit(
    jobs: Any, registry: Any
) -> None:
    job = make_job(jobs, registry, aggregators=3)
    commit_all(jobs, job, 0)
    everyone = bitmap(range(3))
    commit_votes(jobs, job, 0, [(job.aggregators[0], h("m"), everyone)])
    with boa.reverts("jobs: reveals are not open yet"):
        reveal(jobs, job, 0, job.aggregators[0], h("m"), everyone)
    boa.env.time_travel(seconds=ROUND_DEADLINE + 1)
    with boa.reverts("jobs: caller committed no vote in this attempt"):
        reveal(jobs, job, 0, job.aggregators[1], h("m"), everyone)
    reveal(jobs, job, 0, job.aggregators[0], h("m"), everyone)
    with boa.reverts("jobs: already revealed in this attempt"):
        reveal(jobs, job, 0, job.aggregators[0], h("m"), everyone)


def test_reveal_refuses_bad_results(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry, aggregators=1, quorum=1, min_trainers=2, weight_cap=0)
    commit_all(jobs, job, 0)
    first = job.aggregators[0]
    cases = [
        ((EMPTY, bitmap(range(3)), 3), "jobs: model hash is empty"),
        (
            (h("m"), bitmap([0, 1, 3]), 3),
            "jobs: included names a trainer index that has not joined",
        ),
        ((h("m"), 1 << 300, 1), "jobs: included names a trainer index that has not joined"),
        ((h("m"), bitmap([2]), 1), "jobs: included has fewer than min_trainers trainers"),
        ((h("m"), bitmap([0, 2]), 3), "jobs: total_weight must equal the included count"),
    ]
    for (model, included, total), reason in cases:
        with boa.env.anchor(), boa.env.prank(first):
            jobs.commit_vote(
                job.id, 0, commitment(model, included, total, salt_of(first, 0), first)
            )
            with boa.reverts(reason):
                jobs.reveal(job.id, 0, model, words(included), total, salt_of(first, 0))
    vote(jobs, job, 0, [(first, h("m"), bitmap([0, 2]))])
    assert jobs.jobs(job.id).current_round == 1


def test_declared_total_weight_must_fit_the_cap(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry, aggregators=1, quorum=1, weight_cap=10)
    commit_all(jobs, job, 0, [3, 4, 5])
    first = job.aggregators[0]
    with boa.env.prank(first):
        jobs.commit_vote(job.id, 0, commitment(h("m"), 7, 31, salt_of(first, 0), first))
        with boa.reverts("jobs: total_weight is out of range"):
            jobs.reveal(job.id, 0, h("m"), words(7), 31, salt_of(first, 0))


def test_a_result_naming_a_trainer_that_did_not_commit_cannot_finalize(
    jobs: Any, registry: Any
) -> None:
    job = make_job(jobs, registry, aggregators=1, quorum=1)
    with boa.env.prank(job.trainers[0]):
        jobs.commit_update(job.id, 0, h("u"), 1)
    boa.env.time_travel(seconds=ROUND_DEADLINE + 1)
    first = job.aggregators[0]
    with boa.env.prank(first):
        jobs.commit_vote(job.id, 0, commitment(h("m"), 3, 2, salt_of(first, 0), first))
        with boa.reverts("jobs: an included trainer did not commit this round"):
            jobs.reveal(job.id, 0, h("m"), words(3), 2, salt_of(first, 0))


# -- attacks on the vote ----------------------------------------------------------------------


def test_attack_copying_a_revealed_vote_after_the_commit_phase_fails(
    jobs: Any, registry: Any
) -> None:
    """A lazy member waits for an honest reveal to copy it: once a reveal is possible, no
    vote can be committed any more, so the copy comes too late and is never paid."""
    job = make_job(jobs, registry, aggregators=3, quorum=2)
    honest, other, lazy = job.aggregators
    commit_all(jobs, job, 0)
    everyone = bitmap(range(3))
    commit_votes(jobs, job, 0, [(honest, h("m"), everyone), (other, h("m"), everyone)])
    boa.env.time_travel(seconds=ROUND_DEADLINE + 1)
    reveal(jobs, job, 0, honest, h("m"), everyone)  # the result is public now
    with boa.env.prank(lazy), boa.reverts("jobs: the vote-commit period is over"):
        jobs.commit_vote(job.id, 0, commitment(h("m"), everyone, 3, salt_of(lazy, 0), lazy))
    reveal(jobs, job, 0, other, h("m"), everyone)  # finalizes without the copier
    with boa.env.prank(lazy), boa.reverts("jobs: caller has no unclaimed vote for that round"):
        jobs.claim_vote(job.id, 0)
    assert jobs.owed(lazy) == 0


def test_attack_copying_a_commitment_gains_nothing(jobs: Any, registry: Any) -> None:
    """Committing another member's commitment hash: its preimage names the other member, so
    the copier cannot reveal it."""
    job = make_job(jobs, registry, aggregators=3, quorum=2)
    honest, _, copier = job.aggregators
    commit_all(jobs, job, 0)
    everyone = bitmap(range(3))
    secret = commitment(h("m"), everyone, 3, salt_of(honest, 0), honest)
    for account in (honest, copier):
        with boa.env.prank(account):
            jobs.commit_vote(job.id, 0, secret)
    boa.env.time_travel(seconds=ROUND_DEADLINE + 1)
    reveal(jobs, job, 0, honest, h("m"), everyone)
    with (
        boa.env.prank(copier),
        boa.reverts("jobs: the reveal does not match the caller's commitment"),
    ):
        jobs.reveal(job.id, 0, h("m"), words(everyone), 3, salt_of(honest, 0))


def test_attack_revealing_something_other_than_what_was_committed_fails(
    jobs: Any, registry: Any
) -> None:
    job = make_job(jobs, registry, aggregators=3, quorum=2)
    commit_all(jobs, job, 0)
    everyone = bitmap(range(3))
    first = job.aggregators[0]
    commit_votes(jobs, job, 0, [(a, h("m"), everyone) for a in job.aggregators])
    for model, included, total, salt in [
        (h("other"), everyone, 3, salt_of(first, 0)),
        (h("m"), bitmap([0, 1]), 2, salt_of(first, 0)),
        (h("m"), everyone, 4, salt_of(first, 0)),
        (h("m"), everyone, 3, h("another salt")),
    ]:
        with (
            boa.env.prank(first),
            boa.reverts("jobs: the reveal does not match the caller's commitment"),
        ):
            jobs.reveal(job.id, 0, model, words(included), total, salt)
    reveal(jobs, job, 0, first, h("m"), everyone)


def test_attack_a_withheld_reveal_cannot_stall_the_round(jobs: Any, registry: Any) -> None:
    """A member commits and never reveals: the others' reveals finalize as soon as the
    commit phase ends; where it was needed for the quorum, the round is reopened one
    reveal period later and the committee votes again."""
    job = make_job(jobs, registry, aggregators=3, quorum=2)
    honest, other, _withholder = job.aggregators
    commit_all(jobs, job, 0)
    everyone = bitmap(range(3))
    commit_votes(jobs, job, 0, [(a, h("m"), everyone) for a in job.aggregators])
    reveal(jobs, job, 0, honest, h("m"), everyone)
    reveal(jobs, job, 0, other, h("m"), everyone)
    assert jobs.jobs(job.id).current_round == 1  # no waiting for the withholder at all

    commit_all(jobs, job, 1)
    commit_votes(jobs, job, 1, [(a, h("m 2"), everyone) for a in job.aggregators])
    reveal(jobs, job, 1, honest, h("m 2"), everyone)  # and nobody else reveals
    with boa.env.prank(funded()), boa.reverts("jobs: the round's attempt is not over"):
        jobs.reopen(job.id)
    boa.env.time_travel(seconds=2 * ROUND_DEADLINE + 1)  # the reveal period passed
    with boa.env.prank(funded()):
        jobs.reopen(job.id)
    vote_all(jobs, job, 1, h("m 2"), everyone, voters=[honest, other])
    assert jobs.jobs(job.id).current_round == 2


def test_a_vote_in_progress_cannot_be_reopened_away(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry, aggregators=3, quorum=2)
    with boa.env.prank(job.trainers[0]):
        jobs.commit_update(job.id, 0, h("u"), 1)
    boa.env.time_travel(seconds=ROUND_DEADLINE + 1)  # the deadline passed; the vote starts
    commit_votes(jobs, job, 0, [(job.aggregators[0], h("m"), 1)])
    boa.env.time_travel(seconds=ROUND_DEADLINE + 1)  # reveals are open, the reveal period runs
    with boa.env.prank(funded()), boa.reverts("jobs: the round's attempt is not over"):
        jobs.reopen(job.id)
    boa.env.time_travel(seconds=ROUND_DEADLINE)
    with boa.env.prank(funded()):
        jobs.reopen(job.id)


# -- claims -----------------------------------------------------------------------------------


def test_claims_pay_the_weights_the_aggregate_used(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry, aggregators=3, quorum=2)
    commit_all(jobs, job, 0, [1, 2, 3])
    everyone = bitmap(range(3))
    vote_all(jobs, job, 0, h("m"), everyone, voters=job.aggregators[:2])
    claim_round(jobs, job, 0, h("m"), everyone, voters=job.aggregators[:2])
    assert [jobs.owed(t) for t in job.trainers] == [TRAINER_POOL * w // 6 for w in (1, 2, 3)]
    assert [jobs.owed(a) for a in job.aggregators] == [AGGREGATOR_POOL // 2] * 2 + [0]
    paid = sum(jobs.owed(a) for a in job.trainers + job.aggregators)
    assert jobs.reserved(job.id) == REWARD - paid and solvent(jobs)


def test_claim_refuses_outsiders_doubles_and_wrong_results(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry, aggregators=1, quorum=1)
    commit_all(jobs, job, 0)
    some = bitmap([0, 1])
    args = (h("m"), words(some), 2)
    with boa.env.prank(job.trainers[0]), boa.reverts("jobs: round is not final or too old"):
        jobs.claim(job.id, 0, *args)
    boa.env.time_travel(seconds=ROUND_DEADLINE + 1)
    vote_all(jobs, job, 0, h("m"), some)
    with (
        boa.env.prank(job.trainers[0]),
        boa.reverts("jobs: that is not the round's finalized result"),
    ):
        jobs.claim(job.id, 0, h("m"), words(bitmap(range(3))), 3)
    with boa.env.prank(job.trainers[2]), boa.reverts("jobs: caller was not included in that round"):
        jobs.claim(job.id, 0, *args)
    with boa.env.prank(funded()), boa.reverts("jobs: caller is not a trainer of the job"):
        jobs.claim(job.id, 0, *args)
    with boa.env.prank(job.trainers[0]):
        jobs.claim(job.id, 0, *args)
        with boa.reverts("jobs: already claimed"):
            jobs.claim(job.id, 0, *args)


def test_an_unclaimed_share_is_forfeited_after_two_more_commits_and_goes_to_the_owner(
    jobs: Any, registry: Any
) -> None:
    job = make_job(jobs, registry, trainers=2, aggregators=1, quorum=1, rounds=3)
    everyone = bitmap(range(2))
    for round_ in range(3):
        commit_all(jobs, job, round_)
        vote_all(jobs, job, round_, h(f"m {round_}"), everyone)
    late = job.trainers[0]
    with boa.env.prank(late), boa.reverts("jobs: caller's commit of that round was overwritten"):
        jobs.claim(job.id, 0, h("m 0"), words(everyone), 2)
    for round_ in (1, 2):  # the last two rounds still can be claimed
        with boa.env.prank(late):
            jobs.claim(job.id, round_, h(f"m {round_}"), words(everyone), 2)
    owner = job.owner
    with (
        boa.env.prank(owner),
        boa.reverts("jobs: nothing to refund before the challenge window ends"),
    ):
        jobs.refund(job.id)
    boa.env.time_travel(seconds=CHALLENGE_WINDOW)
    with boa.env.prank(job.trainers[1]), boa.reverts("jobs: the claim period is over"):
        jobs.claim(job.id, 2, h("m 2"), words(everyone), 2)
    with boa.env.prank(owner):
        jobs.refund(job.id)
    credited = sum(jobs.owed(a) for a in job.trainers + job.aggregators)
    assert jobs.owed(owner) == 3 * REWARD - credited  # the forfeited share came back
    assert jobs.jobs(job.id).escrow == 0 and jobs.reserved(job.id) >= 0 and solvent(jobs)


def test_claim_vote_pays_only_the_quorum_of_the_finalizing_attempt(
    jobs: Any, registry: Any
) -> None:
    job = make_job(jobs, registry, aggregators=3, quorum=2)
    first, second, third = job.aggregators
    commit_all(jobs, job, 0)
    everyone, fewer = bitmap(range(3)), bitmap([0, 1])
    vote(
        jobs,
        job,
        0,
        [(third, h("x"), fewer), (first, h("m"), everyone), (second, h("m"), everyone)],
    )
    with boa.env.prank(third), boa.reverts("jobs: caller voted for another result"):
        jobs.claim_vote(job.id, 0)
    with boa.env.prank(first):
        jobs.claim_vote(job.id, 0)
        (credited,) = events(jobs, "Credited")
        assert (credited.account, credited.round, credited.amount) == (
            first,
            0,
            AGGREGATOR_POOL // 2,
        )
        with boa.reverts("jobs: caller has no unclaimed vote for that round"):
            jobs.claim_vote(job.id, 0)
    assert jobs.owed(first) == AGGREGATOR_POOL // 2 and jobs.owed(third) == 0
    assert not jobs.provably_wrong(job.id, third)  # another included set: neither paid nor slashed


# -- challenge ----------------------------------------------------------------------------------


def test_challenge_slashes_a_provably_wrong_vote_once(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry, aggregators=3, quorum=2, rounds=2)
    first, second, wrong = job.aggregators
    commit_all(jobs, job, 0)
    everyone = bitmap(range(3))
    vote(
        jobs,
        job,
        0,
        [(wrong, h("bad"), everyone), (first, h("m"), everyone), (second, h("m"), everyone)],
    )
    assert jobs.provably_wrong(job.id, wrong) and not jobs.provably_wrong(job.id, first)
    with boa.env.prank(funded()), boa.reverts("jobs: that vote is not provably wrong"):
        jobs.challenge(job.id, first)
    commit_all(jobs, job, 1)
    with boa.env.prank(wrong), boa.reverts("jobs: caller's last vote is provably wrong"):
        jobs.commit_vote(job.id, 1, h("c"))  # it cannot hide the evidence under a new vote
    with boa.env.prank(funded()):
        jobs.challenge(job.id, wrong)
    (slashed,) = events(jobs, "AggregatorSlashed")
    assert (slashed.aggregator, slashed.round, slashed.amount) == (wrong, 0, SLASH_AMOUNT)
    assert [e.aggregator for e in events(jobs, "AggregatorRemoved")] == [wrong]
    assert not jobs.is_aggregator(job.id, wrong) and jobs.voters(job.id) == 2
    assert registry.owed(job.owner) == SLASH_AMOUNT
    with boa.env.prank(funded()), boa.reverts("jobs: that vote is not provably wrong"):
        jobs.challenge(job.id, wrong)
    # the two left commit, and that is everyone: reveals open at once
    commit_votes(jobs, job, 1, [(a, h("m 2"), everyone) for a in (first, second)])
    assert jobs.reveals_open(job.id)


def test_release_slashes_an_unchallenged_wrong_vote(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry, aggregators=3, quorum=2, rounds=1)
    first, second, wrong = job.aggregators
    commit_all(jobs, job, 0)
    everyone = bitmap(range(3))
    vote(
        jobs,
        job,
        0,
        [(wrong, h("bad"), everyone), (first, h("m"), everyone), (second, h("m"), everyone)],
    )
    boa.env.time_travel(seconds=CHALLENGE_WINDOW)
    with boa.env.prank(wrong):
        jobs.release(job.id)
    assert [e.aggregator for e in events(jobs, "AggregatorSlashed")] == [wrong]
    assert registry.owed(job.owner) == SLASH_AMOUNT


def test_total_weight_of_the_aggregate_is_what_the_quorum_agreed(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry, aggregators=1, quorum=1)
    commit_all(jobs, job, 0, [5, 6, 7])
    assert total_of(jobs, job, 0, bitmap(range(3))) == 18
    vote_all(jobs, job, 0, h("m"), bitmap(range(3)))
    claim_round(jobs, job, 0, h("m"), bitmap(range(3)))
    assert [jobs.owed(t) for t in job.trainers] == [TRAINER_POOL * w // 18 for w in (5, 6, 7)]
