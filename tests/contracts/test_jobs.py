"""Jobs: constructor, create_job, join, commit_update, propose and their views."""

from __future__ import annotations

from typing import Any

import boa
import pytest
from contract_helpers import (
    AGGREGATOR,
    AGGREGATOR_SHARE_BPS,
    EMPTY,
    OPEN,
    REWARD,
    ROUND_DEADLINE,
    SLASH_AMOUNT,
    TRAINER,
    bitmap,
    commit_all,
    events,
    funded,
    h,
    make_job,
    node,
    vote_key,
)

ZERO_ADDRESS = "0x" + "00" * 20


def test_constructor_sets_parameters(jobs: Any, registry: Any) -> None:
    assert jobs.registry() == registry.address
    assert jobs.aggregator_share_bps() == AGGREGATOR_SHARE_BPS
    assert jobs.slash_amount() == SLASH_AMOUNT
    assert jobs.next_job_id() == 1
    assert jobs.total_escrow() == 0 and jobs.total_owed() == 0


def test_constructor_rejects_bad_parameters(jobs_deployer: Any, registry: Any) -> None:
    with boa.reverts("jobs: aggregator share exceeds 10000 basis points"):
        jobs_deployer.deploy(registry.address, 10_001, SLASH_AMOUNT)
    with boa.reverts("jobs: registry is the zero address"):
        jobs_deployer.deploy(ZERO_ADDRESS, AGGREGATOR_SHARE_BPS, SLASH_AMOUNT)


def test_create_job_escrows_and_numbers_jobs_from_one(jobs: Any) -> None:
    owner = funded()
    with boa.env.prank(owner):
        first = jobs.create_job(h("spec"), h("model"), 3, REWARD, 2, 4, 1, 60, value=3 * REWARD)
        (event,) = events(jobs, "JobCreated")
        second = jobs.create_job(h("spec"), h("model"), 1, 5, 1, 1, 1, 60, value=5)
    assert (first, second) == (1, 2)
    assert (event.job_id, event.owner, event.rounds) == (1, owner, 3)
    assert event.reward_per_round == REWARD
    job = jobs.jobs(1)
    assert (job.owner, job.spec_hash, job.model_hash) == (owner, h("spec"), h("model"))
    assert job.rounds == 3
    assert (job.min_trainers, job.max_trainers, job.quorum, job.round_deadline) == (2, 4, 1, 60)
    assert (job.escrow, job.current_round, job.status, job.n_trainers) == (3 * REWARD, 0, OPEN, 0)
    assert job.round_start == boa.env.evm.patch.timestamp
    assert jobs.deadline(1) == job.round_start + 60
    assert jobs.total_escrow() == 3 * REWARD + 5
    assert boa.env.get_balance(jobs.address) == 3 * REWARD + 5


VALID = dict(spec=h("s"), model=h("m"), rounds=2, reward=10, lo=1, hi=4, quorum=1, deadline=60)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"spec": EMPTY}, "jobs: spec hash is empty"),
        ({"model": EMPTY}, "jobs: model hash is empty"),
        ({"rounds": 0}, "jobs: rounds must be at least 1"),
        ({"reward": 0}, "jobs: reward per round must be between 1 and 2**128 - 1 wei"),
        ({"reward": 2**128}, "jobs: reward per round must be between 1 and 2**128 - 1 wei"),
        ({"lo": 0}, "jobs: min_trainers must be at least 1"),
        ({"lo": 5}, "jobs: min_trainers exceeds max_trainers"),
        ({"hi": 257}, "jobs: max_trainers exceeds 256"),
        ({"quorum": 0}, "jobs: quorum must be between 1 and 16"),
        ({"quorum": 17}, "jobs: quorum must be between 1 and 16"),
        ({"deadline": 0}, "jobs: round deadline must be at least 1 second"),
        ({"value": 19}, "jobs: value must equal rounds * reward_per_round"),
        ({"value": 21}, "jobs: value must equal rounds * reward_per_round"),
    ],
)
def test_create_job_rejects_bad_arguments(jobs: Any, change: dict[str, Any], reason: str) -> None:
    args = {**VALID, "value": 20, **change}
    with boa.env.prank(funded()), boa.reverts(reason):
        jobs.create_job(
            args["spec"], args["model"], args["rounds"], args["reward"], args["lo"], args["hi"],
            args["quorum"], args["deadline"], value=args["value"],
        )


def test_join_assigns_indices_in_join_order(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry, trainers=0, aggregators=0, max_trainers=4)
    both = node(registry, TRAINER | AGGREGATOR)
    with boa.env.prank(both):
        jobs.join(job.id, TRAINER)
        (joined,) = events(jobs, "Joined")
        jobs.join(job.id, AGGREGATOR)
    assert (joined.job_id, joined.node, joined.role, joined.index) == (job.id, both, TRAINER, 0)
    second = node(registry, TRAINER)
    with boa.env.prank(second):
        jobs.join(job.id, TRAINER)
    assert [jobs.trainer_at(job.id, i) for i in range(2)] == [both, second]
    assert [jobs.trainer_index(job.id, a) for a in (both, second, funded())] == [1, 2, 0]
    assert jobs.is_aggregator(job.id, both) and not jobs.is_aggregator(job.id, second)
    assert jobs.aggregator_at(job.id, 0) == both
    assert (jobs.jobs(job.id).n_trainers, jobs.jobs(job.id).n_aggregators) == (2, 1)


def test_join_rejects_wrong_role_inactive_nodes_and_missing_roles(
    jobs: Any, registry: Any
) -> None:
    job = make_job(jobs, registry, trainers=0, aggregators=0, max_trainers=4)
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


def test_join_rejects_duplicates_and_full_jobs(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry, trainers=2, aggregators=16, max_trainers=2)
    first = job.trainers[0]
    with boa.env.prank(first), boa.reverts("jobs: caller is already a trainer of the job"):
        jobs.join(job.id, TRAINER)
    agg = job.aggregators[0]
    with boa.env.prank(agg), boa.reverts("jobs: caller is already an aggregator of the job"):
        jobs.join(job.id, AGGREGATOR)
    late_trainer, late_aggregator = node(registry, TRAINER), node(registry, AGGREGATOR)
    with boa.env.prank(late_trainer), boa.reverts("jobs: job already has max_trainers trainers"):
        jobs.join(job.id, TRAINER)
    with boa.env.prank(late_aggregator), boa.reverts("jobs: job already has 16 aggregators"):
        jobs.join(job.id, AGGREGATOR)


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
            with boa.reverts("jobs: weight must be between 1 and 2**64 - 1"):
                jobs.commit_update(job.id, 0, h("u"), weight)
        jobs.commit_update(job.id, 0, h("u"), 2**64 - 1)
        with boa.reverts("jobs: already committed this round"):
            jobs.commit_update(job.id, 0, h("again"), 1)
    for outsider in (job.aggregators[0], funded()):
        with boa.env.prank(outsider), boa.reverts("jobs: caller is not a trainer of the job"):
            jobs.commit_update(job.id, 0, h("u"), 1)


def test_commit_of_keeps_only_the_latest_round(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry, quorum=1)
    commit_all(jobs, job, 0, [5, 6, 7])
    with boa.env.prank(job.aggregators[0]):
        jobs.propose(job.id, 0, h("model 1"), bitmap(range(3)))  # quorum 1: final
    assert jobs.commit_of(job.id, 0, job.trainers[0]) == (h("update 0 0"), 5)
    with boa.env.prank(job.trainers[0]):
        jobs.commit_update(job.id, 1, h("next"), 9)
    assert jobs.commit_of(job.id, 1, job.trainers[0]) == (h("next"), 9)
    assert jobs.commit_of(job.id, 0, job.trainers[0]) == (EMPTY, 0)  # documented: latest only
    assert jobs.commit_of(job.id, 0, job.trainers[1]) == (h("update 0 1"), 6)


def test_propose_records_a_vote(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry)
    commit_all(jobs, job, 0)
    included = bitmap([0, 2])
    aggregator = job.aggregators[0]
    with boa.env.prank(aggregator):
        jobs.propose(job.id, 0, h("m"), included)
        (event,) = events(jobs, "Proposed")
    assert (event.job_id, event.round, event.aggregator, event.model_hash, event.included) == (
        job.id, 0, aggregator, h("m"), included,
    )
    key = vote_key(h("m"), included)
    assert jobs.vote_of(job.id, 0, aggregator) == key
    assert jobs.vote_of(job.id, 0, job.aggregators[1]) == EMPTY
    assert jobs.vote_of(job.id, 1, aggregator) == EMPTY
    assert jobs.votes(job.id, 0, key) == 1
    with boa.env.prank(job.aggregators[1]):
        jobs.propose(job.id, 0, h("m"), included)
    assert jobs.votes(job.id, 0, key) == 2


def test_propose_rejects_outsiders_double_votes_and_wrong_rounds(
    jobs: Any, registry: Any
) -> None:
    job = make_job(jobs, registry)
    commit_all(jobs, job, 0)
    everyone = bitmap(range(3))
    for outsider in (job.trainers[0], funded()):
        with boa.env.prank(outsider), boa.reverts("jobs: caller is not an aggregator of the job"):
            jobs.propose(job.id, 0, h("m"), everyone)
    with boa.env.prank(job.aggregators[0]):
        with boa.reverts("jobs: wrong round"):
            jobs.propose(job.id, 1, h("m"), everyone)
        with boa.reverts("jobs: job is not open"):
            jobs.propose(job.id + 1, 0, h("m"), everyone)
        jobs.propose(job.id, 0, h("m"), everyone)
        with boa.reverts("jobs: already voted this round"):
            jobs.propose(job.id, 0, h("other"), everyone)


def test_propose_rejects_bad_pairs(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry, trainers=3, min_trainers=2)
    commit_all(jobs, job, 0)
    with boa.env.prank(job.aggregators[0]):
        with boa.reverts("jobs: model hash is empty"):
            jobs.propose(job.id, 0, EMPTY, bitmap(range(3)))
        with boa.reverts("jobs: included names a trainer index that has not joined"):
            jobs.propose(job.id, 0, h("m"), bitmap([0, 1, 3]))
        with boa.reverts("jobs: included has fewer than min_trainers trainers"):
            jobs.propose(job.id, 0, h("m"), bitmap([2]))
        jobs.propose(job.id, 0, h("m"), bitmap([0, 2]))


def test_propose_waits_for_every_trainer_until_the_deadline(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry, trainers=3)
    for trainer in job.trainers[:2]:
        with boa.env.prank(trainer):
            jobs.commit_update(job.id, 0, h("u"), 1)
    with boa.env.prank(job.aggregators[0]):
        with boa.reverts("jobs: a trainer has not committed and the deadline has not passed"):
            jobs.propose(job.id, 0, h("m"), bitmap([0, 1]))
        boa.env.time_travel(seconds=ROUND_DEADLINE + 1)
        jobs.propose(job.id, 0, h("m"), bitmap([0, 1]))
    assert jobs.votes(job.id, 0, vote_key(h("m"), bitmap([0, 1]))) == 1


def test_a_256_trainer_bitmap_is_accepted(jobs: Any, registry: Any) -> None:
    job = make_job(jobs, registry, trainers=256, aggregators=1, quorum=1, min_trainers=256)
    commit_all(jobs, job, 0)
    everyone = 2**256 - 1
    with boa.env.prank(job.aggregators[0]):
        jobs.propose(job.id, 0, h("m"), everyone)  # quorum 1: final, 256 trainers credited
    assert jobs.round_result(job.id, 0) == (h("m"), everyone, 256)
