"""Jobs: constructor, create_job, join, seal, commit_update, propose and their views."""

from __future__ import annotations

from typing import Any

import boa
import pytest
from contract_helpers import (
    AGGREGATOR,
    AGGREGATOR_SHARE_BPS,
    AGGREGATOR_STAKE,
    CHALLENGE_WINDOW,
    EMPTY,
    MIN_STAKE,
    OPEN,
    REWARD,
    ROUND_DEADLINE,
    SIGNUP_PERIOD,
    SLASH_AMOUNT,
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
    vote_all,
    vote_key,
)

ZERO_ADDRESS = "0x" + "00" * 20


def test_constructor_sets_parameters(jobs: Any, registry: Any) -> None:
    assert jobs.registry() == registry.address
    assert jobs.aggregator_share_bps() == AGGREGATOR_SHARE_BPS
    assert jobs.slash_amount() == SLASH_AMOUNT
    assert jobs.challenge_window() == CHALLENGE_WINDOW
    assert jobs.next_job_id() == 1
    assert jobs.total_escrow() == 0 and jobs.total_owed() == 0


def test_constructor_rejects_bad_parameters(jobs_deployer: Any, registry: Any) -> None:
    with boa.reverts("jobs: aggregator share exceeds 10000 basis points"):
        jobs_deployer.deploy(registry.address, 10_001, SLASH_AMOUNT, CHALLENGE_WINDOW)
    with boa.reverts("jobs: registry is the zero address"):
        jobs_deployer.deploy(ZERO_ADDRESS, AGGREGATOR_SHARE_BPS, SLASH_AMOUNT, CHALLENGE_WINDOW)
    with boa.reverts("jobs: challenge window exceeds 30 days"):
        jobs_deployer.deploy(registry.address, AGGREGATOR_SHARE_BPS, SLASH_AMOUNT, 2_592_001)


def create(jobs: Any, sender: str, **change: Any) -> int:
    """create_job from ``sender`` with VALID arguments, some changed."""
    a = {**VALID, **change}
    a.setdefault("value", a["rounds"] * a["reward"])
    with boa.env.prank(sender):
        return jobs.create_job(
            a["spec"], a["model"], a["rounds"], a["reward"], a["lo"], a["hi"], a["quorum"],
            a["deadline"], a["committee"], a["size"], a["signup"], a["t_stake"], a["a_stake"],
            a["cap"], value=a["value"],
        )


MEMBERS = [f"0x{i:040x}" for i in range(1, 17)]
VALID: dict[str, Any] = dict(
    spec=h("s"), model=h("m"), rounds=2, reward=10, lo=1, hi=4, quorum=1, deadline=60,
    committee=MEMBERS[:2], size=2, signup=0, t_stake=3, a_stake=5, cap=0,
)
OPEN_COMMITTEE = dict(committee=[], size=3, quorum=2, signup=SIGNUP_PERIOD)


def test_create_job_with_a_named_committee_escrows_and_starts_round_zero(jobs: Any) -> None:
    owner = funded()
    first = create(jobs, owner, rounds=3, reward=REWARD, lo=2, value=3 * REWARD)
    (event,) = events(jobs, "JobCreated")
    (sealed,) = events(jobs, "CommitteeSealed")
    second = create(jobs, owner, rounds=1, reward=5, hi=1, committee=MEMBERS[:1], size=1)
    assert (first, second) == (1, 2)
    assert (event.job_id, event.owner, event.rounds, event.reward_per_round) == (
        1, owner, 3, REWARD,
    )
    assert list(sealed.committee) == MEMBERS[:2]
    job = jobs.jobs(1)
    assert (job.owner, job.spec_hash, job.model_hash) == (owner, h("s"), h("m"))
    assert (job.min_trainers, job.max_trainers, job.quorum, job.round_deadline) == (2, 4, 1, 60)
    assert (job.escrow, job.current_round, job.status, job.n_trainers) == (3 * REWARD, 0, OPEN, 0)
    assert (job.committee_size, job.n_aggregators, job.signup_end, job.sealed) == (2, 2, 0, True)
    assert (job.trainer_stake, job.aggregator_stake, job.weight_cap) == (3, 5, 0)
    assert (job.attempt, job.reopens, job.n_active_trainers, job.paid) == (0, 0, 0, 0)
    assert (jobs.ended_at(1), jobs.final_model_hash(1), jobs.voters(1)) == (0, EMPTY, 2)
    assert job.round_start == boa.env.evm.patch.timestamp
    assert jobs.deadline(1) == job.round_start + 60
    assert [jobs.aggregator_at(1, i) for i in range(2)] == MEMBERS[:2]
    assert not jobs.is_aggregator(1, MEMBERS[0])  # named, but not joined yet
    assert jobs.total_escrow() == 3 * REWARD + 5
    assert boa.env.get_balance(jobs.address) == 3 * REWARD + 5


def test_create_job_with_an_open_committee_waits_for_the_seal(jobs: Any) -> None:
    job_id = create(jobs, funded(), **OPEN_COMMITTEE)
    job = jobs.jobs(job_id)
    assert (job.committee_size, job.quorum, job.sealed, job.n_aggregators) == (3, 2, False, 0)
    assert job.signup_end == boa.env.evm.patch.timestamp + SIGNUP_PERIOD
    assert job.round_start == 0
    assert events(jobs, "CommitteeSealed") == []


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"spec": EMPTY}, "jobs: spec hash is empty"),
        ({"model": EMPTY}, "jobs: model hash is empty"),
        ({"rounds": 0}, "jobs: rounds must be between 1 and 10000"),
        ({"rounds": 10_001}, "jobs: rounds must be between 1 and 10000"),
        ({"reward": 0}, "jobs: reward per round must be between 1 and 2**128 - 1 wei"),
        ({"reward": 2**128, "value": 20},
         "jobs: reward per round must be between 1 and 2**128 - 1 wei"),
        ({"lo": 0}, "jobs: min_trainers must be at least 1"),
        ({"lo": 5}, "jobs: min_trainers exceeds max_trainers"),
        ({"hi": 1025}, "jobs: max_trainers exceeds 1024"),
        ({"deadline": 0}, "jobs: round deadline must be between 1 second and 30 days"),
        ({"deadline": 2_592_001}, "jobs: round deadline must be between 1 second and 30 days"),
        ({"cap": 2**64}, "jobs: weight cap exceeds 2**64 - 1"),
        ({"size": 3}, "jobs: committee_size must equal the named committee's length"),
        ({"signup": 1}, "jobs: a named committee has no signup period"),
        ({"quorum": 0}, "jobs: quorum must be between 1 and the committee size"),
        ({"quorum": 3}, "jobs: quorum must be between 1 and the committee size"),
        ({"committee": [MEMBERS[0], ZERO_ADDRESS]}, "jobs: committee member is the zero address"),
        ({"committee": [MEMBERS[0]] * 2}, "jobs: committee names a member twice"),
        ({**OPEN_COMMITTEE, "size": 0}, "jobs: committee size must be between 1 and 16"),
        ({**OPEN_COMMITTEE, "size": 17}, "jobs: committee size must be between 1 and 16"),
        ({**OPEN_COMMITTEE, "quorum": 1},
         "jobs: an open committee needs a strict-majority quorum"),
        ({**OPEN_COMMITTEE, "size": 4, "quorum": 2},
         "jobs: an open committee needs a strict-majority quorum"),
        ({**OPEN_COMMITTEE, "quorum": 4},
         "jobs: an open committee needs a strict-majority quorum"),
        ({**OPEN_COMMITTEE, "signup": 0},
         "jobs: signup period must be between 1 second and 30 days"),
        ({**OPEN_COMMITTEE, "signup": 2_592_001},
         "jobs: signup period must be between 1 second and 30 days"),
        ({"value": 19}, "jobs: value must equal rounds * reward_per_round"),
        ({"value": 21}, "jobs: value must equal rounds * reward_per_round"),
    ],
)
def test_create_job_rejects_bad_arguments(jobs: Any, change: dict[str, Any], reason: str) -> None:
    with boa.reverts(reason):
        create(jobs, funded(), **change)


def test_trainers_join_in_order_and_lock_their_stake(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry, trainers=0, aggregators=1, quorum=1, max_trainers=4)
    first, second = node(registry, TRAINER), node(registry, TRAINER)
    with boa.env.prank(first):
        jobs.join(job.id, TRAINER)
    (joined,) = events(jobs, "Joined")
    assert (joined.job_id, joined.node, joined.role, joined.index) == (job.id, first, TRAINER, 0)
    with boa.env.prank(second):
        jobs.join(job.id, TRAINER)
    assert [jobs.trainer_at(job.id, i) for i in range(2)] == [first, second]
    assert [jobs.trainer_index(job.id, a) for a in (first, second, funded())] == [1, 2, 0]
    assert jobs.is_trainer_active(job.id, first) and not jobs.is_trainer_active(job.id, funded())
    assert (jobs.jobs(job.id).n_trainers, jobs.jobs(job.id).n_active_trainers) == (2, 2)
    assert registry.lock_of(jobs.address, job.id, first) == TRAINER_STAKE
    assert registry.locked(first) == TRAINER_STAKE


def test_a_named_committee_member_joins_its_slot_and_locks(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry, trainers=0, aggregators=3, quorum=2, join_committee=False)
    member = job.aggregators[1]
    with boa.env.prank(member):
        jobs.join(job.id, AGGREGATOR)
    (joined,) = events(jobs, "Joined")
    assert (joined.node, joined.role, joined.index) == (member, AGGREGATOR, 1)
    assert jobs.is_aggregator(job.id, member)
    assert not jobs.is_aggregator(job.id, job.aggregators[0])
    assert registry.lock_of(jobs.address, job.id, member) == AGGREGATOR_STAKE


def test_join_rejects_wrong_role_inactive_nodes_and_missing_roles(
    jobs: Any, registry: Any
) -> None:
    job = make_job(jobs, registry, trainers=0, aggregators=1, quorum=1, max_trainers=4)
    trainer = node(registry, TRAINER)
    with boa.env.prank(trainer):
        for role in (0, 3, 4):
            with boa.reverts("jobs: role must be 1 (trainer) or 2 (aggregator)"):
                jobs.join(job.id, role)
        with boa.reverts("jobs: caller lacks this role in the registry"):
            jobs.join(job.id, AGGREGATOR)
        with boa.reverts("jobs: job is not open"):
            jobs.join(job.id + 1, TRAINER)
    understaked = node(registry, TRAINER, stake=1)
    for inactive in (understaked, funded()):
        with boa.env.prank(inactive), boa.reverts(
            "jobs: caller is not an active node in the registry"
        ):
            jobs.join(job.id, TRAINER)


def test_join_needs_free_stake_for_the_lock(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry, trainers=0, aggregators=1, quorum=1,
                   trainer_stake=3 * MIN_STAKE)
    trainer = node(registry, TRAINER)  # 2 * MIN_STAKE
    with boa.env.prank(trainer), boa.reverts("registry: amount exceeds unlocked stake"):
        jobs.join(job.id, TRAINER)


def test_join_rejects_duplicates_and_full_jobs(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry, trainers=2, aggregators=2, max_trainers=2)
    first = job.trainers[0]
    with boa.env.prank(first), boa.reverts("jobs: caller is already a trainer of the job"):
        jobs.join(job.id, TRAINER)
    agg = job.aggregators[0]
    with boa.env.prank(agg), boa.reverts("jobs: caller is already an aggregator of the job"):
        jobs.join(job.id, AGGREGATOR)
    late_trainer = node(registry, TRAINER)
    with boa.env.prank(late_trainer), boa.reverts(
        "jobs: job already has max_trainers active trainers"
    ):
        jobs.join(job.id, TRAINER)


def test_volunteers_sign_up_for_an_open_committee(jobs: Any, registry: Any) -> None:
    job = make_open_job(jobs, registry, trainers=0, volunteers=2, seal=False)
    joined = node(registry, AGGREGATOR)
    with boa.env.prank(joined):
        jobs.join(job.id, AGGREGATOR)
    (event,) = events(jobs, "Joined")
    assert (event.node, event.role, event.index) == (joined, AGGREGATOR, 2)
    assert jobs.volunteer_at(job.id, 2) == joined and jobs.jobs(job.id).n_volunteers == 3
    assert jobs.is_volunteer(job.id, joined) and not jobs.is_aggregator(job.id, joined)
    assert registry.lock_of(jobs.address, job.id, joined) == AGGREGATOR_STAKE


def test_volunteering_refuses_twice_after_signup_and_after_seal(jobs: Any, registry: Any) -> None:
    job = make_open_job(jobs, registry, trainers=0, volunteers=3, seal=False)
    with boa.env.prank(job.volunteers[0]), boa.reverts(
        "jobs: caller already volunteered for the job"
    ):
        jobs.join(job.id, AGGREGATOR)
    boa.env.time_travel(seconds=SIGNUP_PERIOD + 1)
    late = node(registry, AGGREGATOR)
    with boa.env.prank(late), boa.reverts("jobs: signup is over"):
        jobs.join(job.id, AGGREGATOR)
    jobs.seal(job.id)
    with boa.env.prank(late), boa.reverts("jobs: the committee is already sealed"):
        jobs.join(job.id, AGGREGATOR)


def test_seal_draws_the_committee_and_releases_the_others(jobs: Any, registry: Any) -> None:
    job = make_open_job(jobs, registry, trainers=1, max_trainers=2, volunteers=5, seal=False)
    both = node(registry, TRAINER | AGGREGATOR, stake=MIN_STAKE + TRAINER_STAKE + AGGREGATOR_STAKE)
    with boa.env.prank(both):
        jobs.join(job.id, TRAINER)
        jobs.join(job.id, AGGREGATOR)
    boa.env.time_travel(seconds=SIGNUP_PERIOD + 1)
    jobs.seal(job.id)
    (sealed,) = events(jobs, "CommitteeSealed")
    committee = list(sealed.committee)
    assert len(set(committee)) == 3 and set(committee) <= {*job.volunteers, both}
    assert [jobs.aggregator_at(job.id, i) for i in range(3)] == committee
    state = jobs.jobs(job.id)
    assert (state.sealed, state.n_aggregators) == (True, 3)
    assert state.round_start == boa.env.evm.patch.timestamp
    for volunteer in [*job.volunteers, both]:
        drawn = volunteer in committee
        assert jobs.is_aggregator(job.id, volunteer) == drawn
        kept = AGGREGATOR_STAKE if drawn else 0
        if volunteer == both:
            kept += TRAINER_STAKE  # a trainer of the job keeps its trainer lock
        assert registry.lock_of(jobs.address, job.id, volunteer) == kept


def test_seal_refuses_early_twice_named_and_short_committees(jobs: Any, registry: Any) -> None:
    job = make_open_job(jobs, registry, trainers=0, volunteers=3, seal=False)
    with boa.reverts("jobs: signup is not over"):
        jobs.seal(job.id)
    boa.env.time_travel(seconds=SIGNUP_PERIOD + 1)
    jobs.seal(job.id)
    with boa.reverts("jobs: the committee is already sealed"):
        jobs.seal(job.id)
    named = make_job(jobs, registry)
    with boa.reverts("jobs: the job has a named committee"):
        jobs.seal(named.id)
    short = make_open_job(jobs, registry, trainers=0, volunteers=2, seal=False)
    boa.env.time_travel(seconds=SIGNUP_PERIOD + 1)
    with boa.reverts("jobs: too few volunteers"):
        jobs.seal(short.id)
    with boa.reverts("jobs: job is not open"):
        jobs.seal(short.id + 1)


def test_commit_update_records_the_commit(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry)
    trainer = job.trainers[1]
    with boa.env.prank(trainer):
        jobs.commit_update(job.id, 0, h("u"), 42)
        (event,) = events(jobs, "UpdateCommitted")
    assert (event.job_id, event.round, event.trainer, event.update_hash, event.weight) == (
        job.id, 0, trainer, h("u"), 42,
    )
    assert jobs.commit_of(job.id, 0, trainer) == (h("u"), 42)
    assert jobs.commit_of(job.id, 0, job.trainers[0]) == (EMPTY, 0)
    assert jobs.commit_of(job.id, 1, trainer) == (EMPTY, 0)
    assert jobs.commit_of(job.id, 0, funded()) == (EMPTY, 0)


def test_commit_update_accepts_the_deadline_itself_and_refuses_later(
    jobs: Any, registry: Any
) -> None:
    job = make_job(jobs, registry)
    boa.env.time_travel(seconds=ROUND_DEADLINE)
    assert boa.env.evm.patch.timestamp == jobs.deadline(job.id)
    with boa.env.prank(job.trainers[0]):
        jobs.commit_update(job.id, 0, h("on time"), 1)
    boa.env.time_travel(seconds=1)
    with boa.env.prank(job.trainers[1]), boa.reverts("jobs: round deadline has passed"):
        jobs.commit_update(job.id, 0, h("late"), 1)


def test_commit_update_rejects_bad_commits(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry)
    trainer = job.trainers[0]
    with boa.env.prank(trainer):
        with boa.reverts("jobs: wrong round"):
            jobs.commit_update(job.id, 1, h("u"), 1)
        with boa.reverts("jobs: job is not open"):
            jobs.commit_update(job.id + 1, 0, h("u"), 1)
        with boa.reverts("jobs: update hash is empty"):
            jobs.commit_update(job.id, 0, EMPTY, 1)
        for weight in (0, 2**64):
            with boa.reverts("jobs: weight must be between 1 and the job's weight cap"):
                jobs.commit_update(job.id, 0, h("u"), weight)
        jobs.commit_update(job.id, 0, h("u"), 2**64 - 1)
        with boa.reverts("jobs: already committed this round"):
            jobs.commit_update(job.id, 0, h("again"), 1)
    for outsider in (job.aggregators[0], funded()):
        with boa.env.prank(outsider), boa.reverts("jobs: caller is not a trainer of the job"):
            jobs.commit_update(job.id, 0, h("u"), 1)


def test_commit_update_waits_for_the_seal(jobs: Any, registry: Any) -> None:
    job = make_open_job(jobs, registry, trainers=1, volunteers=3, seal=False)
    with boa.env.prank(job.trainers[0]), boa.reverts("jobs: the committee is not sealed yet"):
        jobs.commit_update(job.id, 0, h("u"), 1)


def test_equal_weights_take_exactly_one(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry, weight_cap=0)
    with boa.env.prank(job.trainers[0]):
        jobs.commit_update(job.id, 0, h("u"), 1)
    with boa.env.prank(job.trainers[1]), boa.reverts(
        "jobs: this job takes equal weights; weight must be 1"
    ):
        jobs.commit_update(job.id, 0, h("u"), 2)


def test_commit_of_keeps_only_the_latest_round(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry, quorum=1)
    commit_all(jobs, job, 0, [5, 6, 7])
    vote_all(jobs, job, 0, h("model 1"), bitmap(range(3)), voters=job.aggregators[:1])
    assert jobs.commit_of(job.id, 0, job.trainers[0]) == (h("update 0 0"), 5)
    with boa.env.prank(job.trainers[0]):
        jobs.commit_update(job.id, 1, h("next"), 9)
    assert jobs.commit_of(job.id, 1, job.trainers[0]) == (h("next"), 9)
    assert jobs.commit_of(job.id, 0, job.trainers[0]) == (EMPTY, 0)  # documented: latest only
    assert jobs.commit_of(job.id, 0, job.trainers[1]) == (h("update 0 1"), 6)


def test_a_reveal_records_a_vote(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry, aggregators=3)
    commit_all(jobs, job, 0)
    included = bitmap([0, 2])
    aggregator = job.aggregators[0]
    commit_votes(jobs, job, 0, [(a, h("m"), included) for a in job.aggregators])
    assert jobs.vote_of(job.id, 0, aggregator) == EMPTY  # committed, not revealed
    reveal(jobs, job, 0, aggregator, h("m"), included)
    key = vote_key(h("m"), included, 2)
    assert jobs.vote_of(job.id, 0, aggregator) == key
    assert jobs.vote_of(job.id, 0, job.aggregators[1]) == EMPTY
    assert jobs.vote_of(job.id, 1, aggregator) == EMPTY
    assert jobs.votes(job.id, 0, key) == 1  # attempt 0
    assert jobs.voted_in_attempt(job.id, aggregator)


def test_a_job_of_300_trainers_finalizes_over_two_bitmap_words(jobs: Any, registry: Any) -> None:
    job = make_job(
        jobs, registry, trainers=300, aggregators=1, quorum=1, min_trainers=1, max_trainers=1024
    )
    commit_all(jobs, job, 0)
    everyone = 2**300 - 1
    vote_all(jobs, job, 0, h("m"), everyone)
    assert jobs.jobs(job.id).current_round == 1
    claim_round(jobs, job, 0, h("m"), everyone)
    assert len({jobs.owed(t) for t in job.trainers}) == 1
