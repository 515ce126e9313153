"""Crash faults end to end: real node processes and a real Anvil of the test's own.

Six trainers (one IID part of digits each) and three aggregators (quorum 2; the first is the
job owner's node) run a ten-round FedAvg job while the test:

- SIGKILLs a trainer in the middle of round 3 and restarts it at once (``allmende node run`` on
  the same home, no other operator action);
- SIGKILLs an aggregator and another trainer together in the middle of round 5, and restarts
  the aggregator, then the trainer once the aggregator serves again;
- stops Anvil in the middle of round 8 and starts it again from its state file.

Proven: the job finishes; every killed node worked again after its restart (its log and the
rounds' included trainers say so); the final model's test accuracy is within 1 point of the
undisturbed run (computed with ``allmende.learn`` in this process: the same training and FedAvg
the nodes run, which the e2e test proves equal to plain PyTorch); and the money adds up to the
wei: the contract holds escrow + owed, and the job's credits plus its refund equal its escrow.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import time

import pytest
import torch
from eth_account import Account
from fault_nodes import write_home
from nodes import NodeFactory, NodeProcess, wait_ready

from allmende.chain import Contracts, Devnet, DevnetConfig, JobStatus, advance_time, dev_keys
from allmende.chain.events import Credited, Refunded
from allmende.chain.jobs import MAX_REOPENS
from allmende.errors import ChainError, ContractRevert
from allmende.learn.aggregate import aggregate
from allmende.learn.task import DatasetDecl, load_task
from allmende.learn.train import derive_seed, train_local
from allmende.node.jobspec import JobSpec, parse_jobspec
from allmende.node.submit import initial_model_bytes, submit_job
from allmende.store.codec import decode_state

ROUNDS = 10
N_TRAINERS = 6
N_AGGREGATORS = 3
STAKE = 10**18
REWARD = 10**16
JOB_TIMEOUT = 1500.0
SPEC = {
    "task": "digits-mlp",
    "rounds": ROUNDS,
    "local_epochs": 1,
    "batch_size": 32,
    "min_trainers": 4,
    "max_trainers": N_TRAINERS,
    "quorum": 2,
    "reward_per_round": REWARD,
    "round_deadline": 90,
    "norm_bound": 10.0,
    "seed": 9,
    "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
    "aggregation": {"rule": "fedavg", "params": {}},
}
PARTITION = {"partition": "iid", "num_parts": N_TRAINERS, "seed": 4}
FAST_ROLES = {"poll_seconds": 0.3, "refresh_seconds": 1.0}


def wait_for(condition, what: str, timeout: float = JOB_TIMEOUT) -> None:
    """Wait until ``condition()`` holds. Only a chain that cannot be reached (or answers garbage
    while it restarts) is retried; any other error in the condition is a bug that must show at
    once, not as a timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except ContractRevert:
            raise
        except ChainError:  # the chain is down on purpose, or restarting: ask again
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def undisturbed_accuracy(spec: JobSpec, job_id: int, trainers: dict[str, int]) -> float:
    """Test accuracy of the job's final model had every trainer joined every round."""
    task = load_task(spec.task)
    state = decode_state(initial_model_bytes(spec))
    parts = {addr: task.load_data(DatasetDecl(**PARTITION, part=p)) for addr, p in trainers.items()}
    for round_ in range(spec.rounds):
        updates = []
        for address, data in parts.items():
            trained, weight, _ = train_local(
                task, state, data, **spec.training_settings(),
                seed=derive_seed(job_id, round_, address),
            )  # fmt: skip
            updates.append((address, trained, weight))
        state = aggregate("fedavg", state, updates, {})
    return accuracy(spec, state)


def accuracy(spec: JobSpec, state: dict[str, torch.Tensor]) -> float:
    task = load_task(spec.task)
    model = task.model()
    model.load_state_dict(state)
    return task.evaluate(model, task.test_data())["accuracy"]


def in_round(reader: Contracts, job_id: int, round_: int) -> bool:
    """Round ``round_`` is current and at least one trainer committed in it."""
    job = reader.jobs.job(job_id)
    if job.current_round != round_:
        return job.current_round > round_
    return any(
        bytes(reader.jobs.commit_of(job_id, round_, t).update_hash) != bytes(32)
        for t in reader.jobs.trainers(job_id)
    )


def funded_key(funder: Contracts) -> str:
    """A fresh account with 100 ether from ``funder``; its private key."""
    key = Account.create().key.to_0x_hex()
    funder.client.send_value(Account.from_key(key).address, 100 * 10**18)
    return key


def kill_and_restart(factory: NodeFactory, node: NodeProcess) -> NodeProcess:
    """SIGKILL a node (a crash) and start it again on the same home, as an operator would."""
    node.stop(signal.SIGKILL)
    return factory.start(node.home, wait=False)


def test_crashed_nodes_and_a_restarted_chain_do_not_stop_the_job(devnet_slot, tmp_path) -> None:
    chain = Devnet(DevnetConfig(state_dir=devnet_slot.state_dir, port=devnet_slot.port))
    deployment_path = chain.deployment_path
    factory = NodeFactory(tmp_path / "nodes")
    factory.root.mkdir()
    try:
        deployment = chain.up()
        funder = Contracts.connect(deployment, dev_keys(1)[0])
        aggregators = []
        for i in range(N_AGGREGATORS):
            home = write_home(
                factory.root / f"aggregator{i}", deployment=deployment_path,
                key=funded_key(funder), roles=("aggregator",), stake_wei=STAKE,
                sections={"aggregator": {**FAST_ROLES, "fetch_grace_seconds": 5.0}},
            )  # fmt: skip
            aggregators.append(factory.start(home, wait=False))
        trainers = []
        for i in range(N_TRAINERS):
            home = write_home(
                factory.root / f"trainer{i}", deployment=deployment_path,
                key=funded_key(funder), roles=("trainer",), stake_wei=STAKE,
                sections={"trainer": {**FAST_ROLES, "dataset": {**PARTITION, "part": i}}},
            )  # fmt: skip
            trainers.append(factory.start(home, wait=False))
        for node in [*aggregators, *trainers]:
            wait_ready(node)

        # the owner names its committee: the three aggregators, two of which must agree
        committee = {"members": [node.address for node in aggregators]}
        spec = parse_jobspec({**SPEC, "committee": committee})
        owner = aggregators[0]
        job_id = submit_job(owner.home, spec).job_id
        reader = Contracts.connect(deployment)
        first_block = reader.client.block_number()

        wait_for(lambda: in_round(reader, job_id, 3), "the middle of round 3")
        trainers[1] = kill_and_restart(factory, trainers[1])
        wait_for(lambda: in_round(reader, job_id, 5), "the middle of round 5")
        # An aggregator and a trainer crash together. The round waits for the trainer (until
        # its deadline), so the aggregator, restarted first, is back for the rounds after it;
        # without that wait, a busy machine can take longer to start a node than the job
        # takes for its last rounds, since two other aggregators make the quorum.
        aggregators[2].stop(signal.SIGKILL)
        trainers[4].stop(signal.SIGKILL)
        aggregators[2] = factory.start(aggregators[2].home, wait=False)
        wait_ready(aggregators[2])
        trainers[4] = factory.start(trainers[4].home, wait=False)
        wait_for(lambda: in_round(reader, job_id, 8), "the middle of round 8")
        assert chain.down(timeout=30.0)
        chain.up()  # from its state file, on the same port
        reader = Contracts.connect(deployment)

        wait_for(lambda: reader.jobs.job(job_id).status != JobStatus.OPEN, "the job to end")
        job = reader.jobs.job(job_id)
        assert job.status == JobStatus.FINISHED, job
        owner_key = json.loads((owner.home / "key.json").read_text())["private_key"]
        # claims close a challenge window after the end; the owner's refund takes the rest
        advance_time(reader.client, reader.jobs.challenge_window() + 1)
        Contracts.connect(deployment, owner_key).jobs.refund(job_id)
        events = reader.event_stream(from_block=first_block).fetch(
            first_block, reader.client.block_number()
        )
        final = decode_state(owner.store.read_bytes(bytes(job.final_model_hash).hex()))
        last = f"Job {job_id} round {ROUNDS - 1}: "
        logs = {
            node.home.name: node.log_once(f"{last}trained", f"{last}proposed", f"{last}finalized")
            for node in [*aggregators, *trainers]
        }
        results = [reader.jobs.round_result(job_id, r) for r in range(ROUNDS)]
        on_chain_trainers = reader.jobs.trainers(job_id)
        balance = reader.client.balance(deployment.jobs.address)
        escrow, owed = reader.jobs.total_escrow(), reader.jobs.total_owed()
    finally:
        factory.close()
        chain.down(timeout=10.0)

    # every killed node worked again after its restart
    for name, later_round in (("trainer1", 9), ("trainer4", 9)):
        assert f"Job {job_id} round {later_round}: trained" in logs[name], name
        index = on_chain_trainers.index(trainers[int(name[-1])].address)
        assert results[later_round].included >> index & 1, name
    # the restarted aggregator worked again in a later round: it voted, or saw the quorum beat
    # its vote (it need not vote in the last one: two aggregators make the quorum)
    after_restart = logs["aggregator2"].rsplit("serving on", 1)[-1]
    assert re.search(
        rf"Job {job_id} round [5-9]: (proposed|finalized before this node's vote)", after_restart
    ), after_restart

    # accuracy within 1 point of the undisturbed run
    parts = {node.address: i for i, node in enumerate(trainers)}
    reference = undisturbed_accuracy(spec, job_id, parts)
    got = accuracy(spec, final)
    print(
        f"final accuracy {got:.4f}, undisturbed {reference:.4f}, included per round "
        f"{[bin(r.included).count('1') for r in results]}"
    )
    assert abs(got - reference) <= 0.01

    # the money adds up to the wei
    credited = sum(e.amount for e in events if isinstance(e, Credited) and e.job_id == job_id)
    refunded = sum(e.amount for e in events if isinstance(e, Refunded) and e.job_id == job_id)
    assert credited + refunded == ROUNDS * REWARD
    assert balance == escrow + owed


def test_a_job_that_lost_its_trainers_is_cancelled_and_refunded(devnet_slot, tmp_path) -> None:
    """Where the job cannot finish, the owner cancels it and gets the unspent escrow back.

    Two trainers are both required (``min_trainers`` 2); one is SIGKILLed for good once round 0
    is final. The next round stalls, its deadline passes (the chain's clock is moved on), the owner
    cancels: the finalized rounds were paid, the rest of the escrow is refunded, to the wei.
    """
    chain = Devnet(DevnetConfig(state_dir=devnet_slot.state_dir, port=devnet_slot.port))
    factory = NodeFactory(tmp_path / "nodes")
    factory.root.mkdir()
    # Rounds take well under a second: with many of them the job is still running when the
    # trainer dies, whatever round that happens in.
    spec = parse_jobspec({**SPEC, "rounds": 40, "min_trainers": 2, "max_trainers": 2,
                          "quorum": 1, "round_deadline": 600})  # fmt: skip
    try:
        deployment = chain.up()
        funder = Contracts.connect(deployment, dev_keys(1)[0])
        homes = [
            write_home(
                factory.root / "owner", deployment=chain.deployment_path, key=funded_key(funder),
                roles=("aggregator",), stake_wei=STAKE, sections={"aggregator": FAST_ROLES},
            ),
            *(
                write_home(
                    factory.root / f"trainer{i}", deployment=chain.deployment_path,
                    key=funded_key(funder), roles=("trainer",), stake_wei=STAKE,
                    sections={"trainer": {**FAST_ROLES, "dataset": {**PARTITION, "part": i}}},
                )
                for i in range(2)
            ),
        ]  # fmt: skip
        owner, trainer0, trainer1 = (factory.start(home, wait=False) for home in homes)
        for node in (owner, trainer0, trainer1):
            wait_ready(node)
        spec = parse_jobspec({**spec.model_dump(), "committee": {"members": [owner.address]}})
        job_id = submit_job(owner.home, spec).job_id
        reader = Contracts.connect(deployment)
        first_block = reader.client.block_number()

        wait_for(lambda: reader.jobs.job(job_id).current_round >= 1, "round 0 to finish")
        trainer1.stop(signal.SIGKILL)  # for good
        # the next round gets the survivor's commit and stalls (one round later if trainer1
        # committed before it died)
        wait_for(
            lambda: in_round(reader, job_id, reader.jobs.job(job_id).current_round),
            "the surviving trainer's commit in the stalled round",
        )
        owner_key = json.loads((owner.home / "key.json").read_text())["private_key"]
        as_owner = Contracts.connect(deployment, owner_key)
        advance_time(reader.client, spec.round_deadline + 1)
        with pytest.raises(ContractRevert, match="jobs: "):
            as_owner.jobs.cancel(job_id)  # a stalled round is reopened first, not cancelled
        for _ in range(MAX_REOPENS):  # anyone may reopen; the lone trainer cannot fill it
            as_owner.jobs.reopen(job_id)
            advance_time(reader.client, spec.round_deadline + 1)
        as_owner.jobs.cancel(job_id)
        as_owner.jobs.refund(job_id)  # the rounds never finalized, at once
        advance_time(reader.client, reader.jobs.challenge_window() + 1)
        with contextlib.suppress(ContractRevert):  # and what nobody claimed, after the window
            as_owner.jobs.refund(job_id)
        job = reader.jobs.job(job_id)
        events = reader.event_stream(from_block=first_block).fetch(
            first_block, reader.client.block_number()
        )
        balance = reader.client.balance(deployment.jobs.address)
        escrow, owed = reader.jobs.total_escrow(), reader.jobs.total_owed()
    finally:
        factory.close()
        chain.down(timeout=10.0)

    paid_rounds = job.current_round  # the rounds finalized before the stall
    assert job.status == JobStatus.CANCELLED and 1 <= paid_rounds < spec.rounds
    credited = sum(e.amount for e in events if isinstance(e, Credited) and e.job_id == job_id)
    refunded = sum(e.amount for e in events if isinstance(e, Refunded) and e.job_id == job_id)
    assert 0 < credited <= paid_rounds * REWARD  # finalized rounds only (less rounding dust)
    assert refunded >= (spec.rounds - paid_rounds) * REWARD
    assert credited + refunded == spec.rounds * REWARD
    assert balance == escrow + owed
    print(f"cancelled in round {paid_rounds}: credited {credited} wei, refunded {refunded} wei")
