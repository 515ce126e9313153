"""The nodes follow the chain through a rollback and a SIGKILLed, restarted Anvil.

A chain can lose blocks the nodes already acted on: a reorg on a live chain, or a dev chain
killed and restarted from a state file up to two seconds old. Before, the nodes' local state won
over the chain's: a trainer "knew" it had committed a round the chain no longer had, the event
stream waited for block numbers the chain had already re-used, and the job sat in a dead round.

One job, three trainer nodes and the owner's aggregator node, all real processes on a real Anvil
of the test's own, disturbed in one of two ways (separately: Anvil's state file is unreliable
after a revert):

1. Right after the job is created the test takes a snapshot of the chain; in round 3 (or later)
   it reverts to it, so the chain loses three rounds or more of commits, votes and credits while
   every node keeps running (paused with SIGSTOP only for the revert itself, which must not race
   a block being mined).
2. In round 3 the test SIGKILLs Anvil (no state dump on the way out) and starts it again from
   its state file (written every 2 s), on the same port.

Proven: the job finishes; after the revert every node logged that it reconciled; every round's
model is the one the lineage check recomputes (``allmende job show``); the money adds up.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fault_nodes import write_home
from nodes import NodeFactory, allmende, wait_ready
from test_crashes import funded_key, in_round, wait_for

from allmende.chain import (
    Contracts,
    Devnet,
    DevnetConfig,
    Job,
    JobStatus,
    advance_time,
    dev_keys,
)
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


def dumped_block(chain: Devnet) -> int:
    """The newest block in the devnet's state file (-1 while there is none or it is mid-write)."""
    try:
        state = json.loads(chain.state_file.read_text())
        number = state["best_block_number"]
        return int(number, 16) if isinstance(number, str) else int(number)
    except (OSError, ValueError, KeyError, TypeError):
        return -1


def pool_is_empty(reader: Contracts) -> bool:
    """No transaction waits in Anvil's pool (each one sent has been mined)."""
    status = reader.client.rpc("txpool_status", [])
    return int(status["pending"], 16) == 0 and int(status["queued"], 16) == 0


def sigkill_anvil(chain: Devnet) -> None:
    """SIGKILL the devnet's Anvil (a crash: it dumps no state) and wait until it is gone."""
    pid = chain.pid()
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while devnet_module._group_alive(pid):
        assert time.monotonic() < deadline, "Anvil did not die"
        time.sleep(0.05)


@dataclass
class Outcome:
    job: Job
    show: Any
    events: list[Any]
    balance: int
    escrow: int
    owed: int
    logs: dict[str, str]


def run_job(devnet_slot, tmp_path, disturb: Callable[[Devnet, Contracts, int, list], None]):
    """Run the job on its own devnet; ``disturb(chain, reader, job_id, nodes)`` mid-job."""
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
        disturb(chain, reader, job_id, nodes)
        reader = Contracts.connect(deployment)
        assert reader.jobs.job(job_id).owner == owner.address, "the chain lost the job itself"

        done = lambda: reader.jobs.job(job_id).status != JobStatus.OPEN  # noqa: E731
        wait_for(done, "the job to end", JOB_TIMEOUT)
        job = reader.jobs.job(job_id)
        show = allmende(
            "job", "show", str(job_id), "--deployment", str(chain.deployment_path), timeout=300
        )
        owner_key = json.loads((owner.home / "key.json").read_text())["private_key"]
        # claims close a challenge window after the end; the owner's refund takes the rest
        advance_time(reader.client, reader.jobs.challenge_window() + 1)
        Contracts.connect(deployment, owner_key).jobs.refund(job_id)
        events = reader.event_stream(from_block=first_block).fetch(
            first_block, reader.client.block_number()
        )
        events = [e for e in events if getattr(e, "job_id", None) == job_id]
        outcome = Outcome(
            job=job, show=show, events=events,
            balance=reader.client.balance(deployment.jobs.address),
            escrow=reader.jobs.total_escrow(), owed=reader.jobs.total_owed(),
            logs={node.home.name: node.log() for node in nodes},
        )  # fmt: skip
    finally:
        factory.close()
        chain.down(timeout=10.0)
    check(outcome)
    return outcome


def check(outcome: Outcome) -> None:
    """The job finished, its lineage checks, no step failed unexpectedly, the money is exact."""
    assert outcome.job.status == JobStatus.FINISHED, outcome.job
    assert outcome.show.returncode == 0, outcome.show.stderr
    assert "lineage check: all" in outcome.show.stdout
    assert "checks passed" in outcome.show.stdout
    for name, log in outcome.logs.items():
        assert "failed unexpectedly" not in log, (name, log[-3000:])
    credited = sum(e.amount for e in outcome.events if isinstance(e, Credited))
    refunded = sum(e.amount for e in outcome.events if isinstance(e, Refunded))
    assert credited + refunded == ROUNDS * REWARD
    assert outcome.balance == outcome.escrow + outcome.owed


def test_the_nodes_follow_the_chain_back_three_rounds(devnet_slot, tmp_path) -> None:
    def revert(chain: Devnet, reader: Contracts, job_id: int, nodes: list) -> None:
        snapshot = reader.client.rpc("evm_snapshot", [])  # the job just created, no round done
        wait_for(lambda: in_round(reader, job_id, 3), "a commit in round 3", JOB_TIMEOUT)
        # Anvil mines each transaction as it arrives; a block mined while it reverts lands on
        # the old head (the revert then loses nothing), so the nodes pause until it is done
        for node in nodes:
            os.killpg(node.process.pid, signal.SIGSTOP)
        try:
            wait_for(lambda: pool_is_empty(reader), "the pending transactions to be mined", 60.0)
            before = reader.client.block_number()
            assert reader.client.rpc("evm_revert", [snapshot]) is True
        finally:
            for node in nodes:
                os.killpg(node.process.pid, signal.SIGCONT)
        # three rounds and more are gone (the nodes cannot mine that many blocks in a moment)
        assert reader.client.block_number() < before - 8
        for node in nodes:
            assert RECONCILED in node.log_once(RECONCILED), node.home.name

    outcome = run_job(devnet_slot, tmp_path, revert)
    for name, log in outcome.logs.items():
        assert "The chain lost blocks this node had read" in log, name


def test_the_job_finishes_after_anvil_is_sigkilled_and_restarted(devnet_slot, tmp_path) -> None:
    def crash(chain: Devnet, reader: Contracts, job_id: int, nodes: list) -> None:
        wait_for(lambda: in_round(reader, job_id, 2), "a commit in round 2", JOB_TIMEOUT)
        in_round_2 = reader.client.block_number()
        # once the state file holds the job's round 2, the crash loses what came after it
        wait_for(lambda: dumped_block(chain) >= in_round_2, "a state dump in round 2", 60)
        sigkill_anvil(chain)
        chain.start()  # from its state file, on the same port

    run_job(devnet_slot, tmp_path, crash)
