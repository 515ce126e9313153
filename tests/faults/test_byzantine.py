"""Byzantine participants against real honest nodes on a real devnet.

Honest: five ``allmende node run`` processes — three trainers (one IID part of digits each) and
two aggregators, one of which is the job owner's node. Byzantine, in the test process (see
``adversaries.py``): three trainers committing a NaN/Inf update, a wrongly shaped one and a
norm-exploding one, and a third member of the owner-named committee that votes for a made-up
model hash over the same trainers as the honest aggregators, committing its vote last and
revealing it in the same block; quorum 2 of 3.

Proven: every round is finalized with exactly the honest trainers; each bad update is left out
for its own reason (in the honest aggregators' logs); no bad trainer and not the wrong
aggregator is credited a wei; the wrong aggregator's provably wrong vote is challenged by an
honest node and slashed from the
stake it locked for the job, which leaves it below the lock and so out of the committee for the
later rounds, the honest ones never; and the money adds up: the contract holds escrow + owed,
and the job's credits plus its refund are exactly its escrow.
"""

from __future__ import annotations

import json
from pathlib import Path

from adversaries import (
    Adversaries,
    BadTrainer,
    BlobServer,
    WrongAggregator,
    exploding_norm,
    with_nan,
    wrong_shape,
)
from fault_nodes import write_home
from nodes import NodeFactory, wait_ready

from allmende.chain import ROLE_AGGREGATOR, ROLE_TRAINER, Contracts, JobStatus, advance_time
from allmende.chain.events import (
    AggregatorRemoved,
    AggregatorSlashed,
    Credited,
    Proposed,
    Refunded,
)
from allmende.node.jobspec import parse_jobspec
from allmende.node.submit import submit_job
from waiting import wait_until

ROUNDS = 2
STAKE = 10**18
REWARD = 10**16
JOB_TIMEOUT = 900.0
SPEC = {
    "task": "digits-mlp",
    "rounds": ROUNDS,
    "local_epochs": 1,
    "batch_size": 32,
    "min_trainers": 3,
    "max_trainers": 6,
    "quorum": 2,
    "reward_per_round": REWARD,
    "round_deadline": 240,
    "norm_bound": 10.0,
    "seed": 5,
    "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
    "aggregation": {"rule": "fedavg", "params": {}},
}
PARTITION = {"partition": "iid", "num_parts": 3, "seed": 2}


def wait_for(condition, what: str, timeout: float = JOB_TIMEOUT) -> None:
    wait_until(condition, what, timeout, every=0.5)


def test_bad_updates_are_left_out_unpaid_and_the_wrong_aggregator_is_slashed(
    devnet, tmp_path: Path
) -> None:
    deployment = devnet.devnet.deployment_path
    factory = NodeFactory(tmp_path / "nodes")
    factory.root.mkdir()
    servers = [BlobServer(tmp_path / f"bad{i}") for i in range(3)]
    try:
        homes = {
            name: write_home(
                factory.root / name, deployment=deployment, key=devnet.new_key(),
                roles=("aggregator",), stake_wei=STAKE,
            )
            for name in ("owner", "aggregator")
        }  # fmt: skip
        for i in range(3):
            homes[f"trainer{i}"] = write_home(
                factory.root / f"trainer{i}", deployment=deployment, key=devnet.new_key(),
                roles=("trainer",), stake_wei=STAKE,
                sections={"trainer": {"dataset": {**PARTITION, "part": i}}},
            )  # fmt: skip
        running = {name: factory.start(home, wait=False) for name, home in homes.items()}
        for node in running.values():
            wait_ready(node)
        for server in servers:
            server.__enter__()

        owner_node = running["owner"]
        attacks = (with_nan, wrong_shape, exploding_norm)
        bad_trainers = [
            BadTrainer(attack.__name__, devnet.contracts(devnet.new_key()), attack, server,
                       owner_node.url)
            for attack, server in zip(attacks, servers, strict=True)
        ]  # fmt: skip
        wrong = WrongAggregator(
            devnet.contracts(devnet.new_key()), leave_out={b.address for b in bad_trainers}
        )
        for actor in [*bad_trainers, wrong]:
            actor.enlist(STAKE)
        committee = [running["owner"].address, running["aggregator"].address, wrong.address]
        spec = parse_jobspec({**SPEC, "committee": {"members": committee}})
        submitted = submit_job(owner_node.home, spec)
        job_id = submitted.job_id
        reader = devnet.contracts()
        first_block = reader.client.block_number()
        for bad in bad_trainers:
            bad.contracts.jobs.join(job_id, ROLE_TRAINER)
        wrong.contracts.jobs.join(job_id, ROLE_AGGREGATOR)
        stake_before = reader.registry.node(wrong.address).stake

        adversaries = Adversaries([*bad_trainers, wrong])
        with adversaries.running(job_id):
            wait_for(lambda: reader.jobs.job(job_id).status != JobStatus.OPEN, "the job to end")
        job = reader.jobs.job(job_id)
        assert job.status == JobStatus.FINISHED, job

        owner_key = json.loads((owner_node.home / "key.json").read_text())["private_key"]
        # claims close a challenge window after the end; the owner's refund takes the rest
        advance_time(reader.client, reader.jobs.challenge_window() + 1)
        Contracts.connect(devnet.deployment, owner_key).jobs.refund(job_id)
        events = reader.event_stream(from_block=first_block).fetch(
            first_block, reader.client.block_number()
        )
        logs = {name: node.log() for name, node in running.items()}
    finally:
        for server in servers:
            server.__exit__(None, None, None)
        factory.close()

    honest_trainers = {running[f"trainer{i}"].address for i in range(3)}
    honest_aggregators = {running["owner"].address, running["aggregator"].address}
    trainers = reader.jobs.trainers(job_id)
    assert set(trainers) == honest_trainers | {bad.address for bad in bad_trainers}
    honest_bits = sum(1 << trainers.index(address) for address in honest_trainers)

    # every round: exactly the honest trainers, and each bad update left out for its reason
    for round_ in range(ROUNDS):
        assert reader.jobs.round_result(job_id, round_).included == honest_bits
    reasons = {"with_nan": "NaN", "wrong_shape": "shape", "exploding_norm": "norm bound"}
    aggregator_logs = logs["owner"] + logs["aggregator"]
    for bad in bad_trainers:
        assert bad.committed, f"{bad.name} never committed"
        lines = [
            line for line in aggregator_logs.splitlines()
            if f"leaving out {bad.address}'s update" in line
        ]  # fmt: skip
        assert lines and all(reasons[bad.name] in line for line in lines), (bad.name, lines)

    # nobody byzantine is paid; the honest are
    credited = {}
    for event in events:
        if isinstance(event, Credited) and event.job_id == job_id:
            credited[event.account] = credited.get(event.account, 0) + event.amount
    assert set(credited) == honest_trainers | honest_aggregators
    for bad in [*bad_trainers, wrong]:
        assert reader.jobs.owed(bad.address) == 0

    # the wrong aggregator is slashed in every round it got its vote in; the honest never
    wrong_votes = {
        e.round for e in events
        if isinstance(e, Proposed) and e.job_id == job_id and e.aggregator == wrong.address
    }  # fmt: skip
    slashed = [e for e in events if isinstance(e, AggregatorSlashed) and e.job_id == job_id]
    assert wrong_votes == {0}, f"its votes: {wrong_votes}, {adversaries.errors[-5:]}"
    assert [(e.aggregator, e.round) for e in slashed] == [(wrong.address, 0)]
    slash_amount = reader.jobs.slash_amount()
    assert slash_amount < spec.aggregator_stake  # the slash leaves it below its lock: removed
    removed = [e for e in events if isinstance(e, AggregatorRemoved) and e.job_id == job_id]
    assert [(e.aggregator, e.round) for e in removed] == [(wrong.address, 0)]
    stake_after = reader.registry.node(wrong.address).stake
    assert stake_before - stake_after == slash_amount
    assert reader.registry.owed(running["owner"].address) >= slash_amount  # to the job's owner

    print(
        f"rounds {ROUNDS}: included {[bin(honest_bits).count('1')] * ROUNDS} of "
        f"{len(trainers)} trainers; wrong aggregator voted in rounds {sorted(wrong_votes)}, "
        f"slashed {stake_before - stake_after} wei; credited {sum(credited.values())} wei"
    )

    # the money adds up
    refunds = sum(e.amount for e in events if isinstance(e, Refunded) and e.job_id == job_id)
    assert sum(credited.values()) + refunds == ROUNDS * REWARD
    balance = reader.client.balance(reader.deployment.jobs.address)
    assert balance == reader.jobs.total_escrow() + reader.jobs.total_owed()
