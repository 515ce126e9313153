"""A trainer that deals a malformed share, on real node processes and a real devnet.

Six trainers and two aggregators (quorum 2) run a secure-aggregation job; one trainer is a
real node process whose shares message gives one neighbour a share that does not decrypt
(``hostile_share/sitecustomize.py``, one flipped ciphertext byte, signed as usual). That
neighbour refuses it as a partner; the hostile trainer still names the neighbour, so every
aggregator excludes it from the committed manifests alone (``secagg.decide``), and the round
finalizes with the other five, as soon as their reveals are in (well before the deadline),
to plain FedAvg of the five.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_nodes import network_homes
from nodes import NodeFactory, wait_ready
from test_secure_aggregation import (
    FAST_ROLES,
    N_TRAINERS,
    PARTITION,
    STAKE,
    Network,
    check_sum,
    spec_for,
    wait_for,
)

from allmende.chain import JobStatus
from allmende.node.submit import submit_job

HOSTILE = Path(__file__).resolve().parent / "hostile_share"
ROUND_DEADLINE = 120


@pytest.fixture(scope="module")
def network(devnet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    root = tmp_path_factory.mktemp("bad-share")
    factory = NodeFactory(root / "nodes")
    factory.root.mkdir()
    try:
        homes = network_homes(
            factory.root, devnet, trainers=N_TRAINERS, trainer_section=FAST_ROLES,
            partition=PARTITION, stake_wei=STAKE,
            aggregators={name: {**FAST_ROLES, "fetch_grace_seconds": 5}
                         for name in ("owner", "aggregator")},
        )  # fmt: skip
        path = os.pathsep.join(p for p in (str(HOSTILE), os.environ.get("PYTHONPATH")) if p)
        running = {
            name: factory.start(
                home, wait=False, env={"PYTHONPATH": path} if name == "trainer0" else None
            )
            for name, home in homes.items()
        }
        for node in running.values():
            wait_ready(node)
        yield Network(
            devnet=devnet, owner=running["owner"],
            aggregators=[running["owner"], running["aggregator"]],
            trainers=[running[f"trainer{i}"] for i in range(N_TRAINERS)], factory=factory,
        )  # fmt: skip
    finally:
        factory.close()


def test_a_trainer_dealing_a_malformed_share_is_excluded_and_the_round_goes_on(
    network: Network,
) -> None:
    committee = [node.address for node in network.aggregators]
    spec = spec_for(committee, round_deadline=ROUND_DEADLINE, epochs=1, seed=7)
    job_id = submit_job(network.owner.home, spec).job_id
    reader = network.devnet.contracts()
    hostile, honest = network.trainers[0], network.trainers[1:]
    wait_for(lambda: reader.jobs.job(job_id).sealed, "the committee to be sealed")
    started = reader.jobs.job(job_id).round_start  # round 0's start, in chain time
    wait_for(lambda: reader.jobs.job(job_id).status != JobStatus.OPEN, "the job to end")
    job = reader.jobs.job(job_id)
    assert job.reopens == 0 and job.ended_at < started + ROUND_DEADLINE, (job, started)
    assert "HOSTILE: dealt" in hostile.log(), hostile.log()[-2000:]
    assert reader.jobs.commit_of(job_id, 0, hostile.address).weight > 0  # it did commit
    parts = {node.address: i for i, node in enumerate(network.trainers) if i >= 1}
    check_sum(network, spec, job_id, parts)  # included: exactly the five honest trainers
    victims = [
        node for node in honest
        if f"{hostile.address} is not a partner: its share for this trainer does not decrypt"
        in node.log()
    ]  # fmt: skip
    assert len(victims) == 1, [node.log()[-1500:] for node in honest]
    for node in network.aggregators:
        log = node.log()
        assert f"Job {job_id} round 0: unmasked the sum of 5 trainers" in log, log[-3000:]
        assert "which does not name it back" in log, log[-3000:]
        assert "failed unexpectedly" not in log, log[-3000:]
