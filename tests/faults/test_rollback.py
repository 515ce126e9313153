"""The nodes follow the chain through a rollback and a SIGKILLed, restarted Anvil.

A chain can lose blocks the nodes already acted on: a reorg on a live chain, or a dev chain
killed and restarted from a state file up to two seconds old. Before, the nodes' local state won
over the chain's: a trainer "knew" it had committed a round the chain no longer had, the event
stream waited for block numbers the chain had already re-used, and the job sat in a dead round.

One job, three trainer nodes and the owner's aggregator node, all real processes on a real Anvil:

1. In round 2 the test takes a snapshot of the chain; in round 5 it reverts to it, so the chain
   loses three rounds of commits, votes and credits while every node keeps running.
2. Past the point reached before the revert, the test SIGKILLs Anvil (no state dump on the way
   out) and starts it again from its state file, on the same port.

Proven: the job finishes; every node logged that it reconciled with the chain; every round's
model is the one the lineage check recomputes (``allmende job show``); the money adds up.
"""

from __future__ import annotations

import json
import os
import signal
import time

from fault_nodes import write_home
from nodes import NodeFactory, allmende, wait_ready
from test_crashes import funded_key, in_round, wait_for

from allmende.chain import Contracts, Devnet, DevnetConfig, JobStatus, dev_keys
from allmende.chain import devnet as devnet_module
from allmende.chain.events import Credited, Refunded
from allmende.node.jobspec import parse_jobspec
from allmende.node.submit import submit_job

ROUNDS = 8
N_TRAINERS = 3
STAKE = 10**18
REWARD = 10**16
JOB_TIMEOUT = 900.0
SPEC = {
    "task": "digits-mlp",
    "rounds": ROUNDS,
    "local_epochs": 1,
    "batch_size": 64,
    "min_trainers": 2,
    "max_trainers": N_TRAINERS,
    "quorum": 1,
    "reward_per_round": REWARD,
    "round_deadline": 30,
    "seed": 11,
    "optimizer": {"name": "sgd", "lr": 0.1},
    "aggregation": {"rule": "fedavg", "params": {}},
}
PARTITION = {"partition": "iid", "num_parts": N_TRAINERS, "seed": 2}
FAST_ROLES = {"poll_seconds": 0.3, "refresh_seconds": 1.0}
RECONCILED = "reconciling its state with the chain"


def sigkill_anvil(chain: Devnet) -> None:
    """SIGKILL the devnet's Anvil (a crash: it dumps no state) and wait until it is gone."""
    pid = chain.pid()
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while devnet_module._group_alive(pid):
        assert time.monotonic() < deadline, "Anvil did not die"
        time.sleep(0.05)


def test_the_job_finishes_through_a_rollback_and_a_killed_anvil(devnet_slot, tmp_path) -> None:
    chain = Devnet(DevnetConfig(state_dir=devnet_slot.state_dir, port=devnet_slot.port))
    factory = NodeFactory(tmp_path / "nodes")
    factory.root.mkdir()
    try:
        deployment = chain.up()
        funder = Contracts.connect(deployment, dev_keys(1)[0])
        owner_home = write_home(
            factory.root / "owner", deployment=chain.deployment_path, key=funded_key(funder),
            roles=("aggregator",), stake_wei=STAKE,
            sections={"aggregator": {**FAST_ROLES, "fetch_grace_seconds": 2.0}},
        )  # fmt: skip
        nodes = [factory.start(owner_home, wait=False)]
        for i in range(N_TRAINERS):
            home = write_home(
                factory.root / f"trainer{i}", deployment=chain.deployment_path,
                key=funded_key(funder), roles=("trainer",), stake_wei=STAKE,
                sections={"trainer": {**FAST_ROLES, "dataset": {**PARTITION, "part": i}}},
            )  # fmt: skip
            nodes.append(factory.start(home, wait=False))
        for node in nodes:
            wait_ready(node)
        owner = nodes[0]

        spec = parse_jobspec({**SPEC, "committee": {"members": [owner.address]}})
        job_id = submit_job(owner.home, spec).job_id
        reader = Contracts.connect(deployment)
        first_block = reader.client.block_number()

        wait_for(lambda: in_round(reader, job_id, 2), "a commit in round 2", JOB_TIMEOUT)
        snapshot = reader.client.rpc("evm_snapshot", [])
        after_snapshot = reader.client.block_number() + 1
        wait_for(lambda: in_round(reader, job_id, 5), "a commit in round 5", JOB_TIMEOUT)
        lost_block = reader.client.block_hash(after_snapshot)
        assert reader.client.rpc("evm_revert", [snapshot]) is True
        assert reader.client.block_hash(after_snapshot) != lost_block  # rounds 2 to 5 are gone
        for node in nodes:
            assert RECONCILED in node.log_once(RECONCILED), node.home.name

        wait_for(lambda: in_round(reader, job_id, 6), "a commit in round 6", JOB_TIMEOUT)
        sigkill_anvil(chain)
        chain.start()  # from its state file, on the same port
        reader = Contracts.connect(deployment)

        done = lambda: reader.jobs.job(job_id).status != JobStatus.OPEN  # noqa: E731
        wait_for(done, "the job to end", JOB_TIMEOUT)
        job = reader.jobs.job(job_id)
        assert job.status == JobStatus.FINISHED, job
        show = allmende(
            "job", "show", str(job_id), "--deployment", str(chain.deployment_path), timeout=300
        )
        owner_key = json.loads((owner.home / "key.json").read_text())["private_key"]
        Contracts.connect(deployment, owner_key).jobs.refund(job_id)
        events = reader.event_stream(from_block=first_block).fetch(
            first_block, reader.client.block_number()
        )
        balance = reader.client.balance(deployment.jobs.address)
        escrow, owed = reader.jobs.total_escrow(), reader.jobs.total_owed()
        logs = {node.home.name: node.log() for node in nodes}
    finally:
        factory.close()
        chain.down(timeout=10.0)

    assert show.returncode == 0, show.stderr
    assert "lineage check: all" in show.stdout and "checks passed" in show.stdout
    for name, log in logs.items():
        assert "failed unexpectedly" not in log, (name, log[-3000:])
    credited = sum(e.amount for e in events if isinstance(e, Credited) and e.job_id == job_id)
    refunded = sum(e.amount for e in events if isinstance(e, Refunded) and e.job_id == job_id)
    assert credited + refunded == ROUNDS * REWARD
    assert balance == escrow + owed
