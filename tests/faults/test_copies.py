"""Copied work and selective serving against real honest nodes on a real devnet.

Honest: five ``allmende node run`` processes, started once for the module: three aggregators
(the job owner's node and two more) and two trainers (one IID half of digits each).

- **Copies** (a two-round job aggregated by the owner's node, quorum 1 of its named committee of
  one): four trainers in the test process (``adversaries.py``) do no work. One commits an honest
  trainer's update hash as it is (seen on chain), one fetches the other honest trainer's update
  and commits its tensors re-wrapped under its own name, one commits the global model re-wrapped
  under its own name (a zero update), one commits the global model's own hash. Proven: every
  round is finalized with exactly the honest trainers, each copier is left out for its reason
  once a round, no copier is owed a wei, and the honest trainers are.
- **Selective serving** (one round, a committee of all three aggregators, quorum 2): a trainer
  commits near the deadline and serves its update to nobody until the aggregator with no fetch
  grace has voted without it, then to one requester only. The other two aggregators get it
  from whichever fetched it (an update is asked for from every participant), include it and
  finalize the round; the first one's vote named another included set, so it is neither paid
  for it nor slashed. (Having no quorum past the deadline, the hasty aggregator may reopen the
  round first; then all three vote again in the new attempt, by when every one can get the
  update.) Proven: the round is final with the update, the votes really split, and no
  aggregator is slashed or loses stake.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from adversaries import (
    Adversaries,
    BadTrainer,
    BlobServer,
    Copier,
    global_model_blob,
    nudged,
    unchanged,
)
from fault_nodes import network_homes
from nodes import NodeFactory, NodeProcess, wait_ready

from allmende.chain import ROLE_TRAINER, Contracts, JobStatus
from allmende.chain.events import AggregatorSlashed, Proposed
from allmende.node.jobspec import parse_jobspec
from allmende.node.submit import submit_job
from waiting import wait_until

STAKE = 10**18
JOB_TIMEOUT = 300.0
SPEC = {
    "task": "digits-mlp",
    "local_epochs": 1,
    "batch_size": 64,
    "reward_per_round": 10**16,
    "seed": 11,
    "optimizer": {"name": "sgd", "lr": 0.1},
    "aggregation": {"rule": "fedavg", "params": {}},
}
PARTITION = {"partition": "iid", "num_parts": 2, "seed": 4}
PATIENT_GRACE = 60  # seconds two aggregators ask for a missing update after the deadline


@dataclass
class Fleet:
    devnet: object
    owner: NodeProcess  # aggregator, patient
    patient: NodeProcess  # aggregator, patient
    hasty: NodeProcess  # aggregator that gives up on a missing update at the deadline
    trainers: list[NodeProcess]
    root: Path


def wait_for(condition, what: str, timeout: float = JOB_TIMEOUT) -> None:
    wait_until(condition, what, timeout, every=0.3)


@pytest.fixture(scope="module")
def fleet(devnet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("copies")
    factory = NodeFactory(root / "nodes")
    factory.root.mkdir()
    try:
        homes = network_homes(
            factory.root, devnet, trainers=2, trainer_section={}, partition=PARTITION,
            stake_wei=STAKE, aggregators={
                name: {"fetch_grace_seconds": grace}
                for name, grace in (("owner", PATIENT_GRACE), ("patient", PATIENT_GRACE),
                                    ("hasty", 0))
            },
        )  # fmt: skip
        running = {name: factory.start(home, wait=False) for name, home in homes.items()}
        for node in running.values():
            wait_ready(node)
        yield Fleet(
            devnet=devnet, owner=running["owner"], patient=running["patient"],
            hasty=running["hasty"], trainers=[running["trainer0"], running["trainer1"]], root=root,
        )  # fmt: skip
    finally:
        factory.close()


@dataclass
class VoteWatch:
    """Stepped with the adversaries: sets ``voted`` once ``aggregator`` committed its vote in
    round 0, which fixes the result it can reveal (the blob server's request threads only read
    the flag, never the chain)."""

    contracts: Contracts
    aggregator: str
    voted: threading.Event = field(default_factory=threading.Event)

    def step(self, job_id: int) -> None:
        job = self.contracts.jobs.job(job_id)
        if job.current_round > 0 or self.contracts.jobs.vote_committed(job_id, self.aggregator):
            self.voted.set()


def left_out(log: str, trainer: str) -> list[str]:
    return [line for line in log.splitlines() if f"leaving out {trainer}'s update" in line]


def test_copied_rewrapped_and_zero_updates_are_neither_included_nor_paid(fleet: Fleet) -> None:
    devnet, owner = fleet.devnet, fleet.owner
    honest = fleet.trainers
    servers = [BlobServer(fleet.root / f"copier{i}") for i in range(4)]
    for server in servers:
        server.__enter__()
    try:
        copiers = [
            Copier("hash", devnet.contracts(devnet.new_key()), honest[0].address, honest[0].url,
                   servers[0], rewrap=False),
            Copier("rewrap", devnet.contracts(devnet.new_key()), honest[1].address,
                   honest[1].url, servers[1], rewrap=True),
            BadTrainer("zero", devnet.contracts(devnet.new_key()), unchanged, servers[2],
                       owner.url),
            BadTrainer("global", devnet.contracts(devnet.new_key()), global_model_blob,
                       servers[3], owner.url),
        ]  # fmt: skip
        for copier in copiers:
            copier.enlist(STAKE)
        rounds = 2
        terms = {
            **SPEC, "rounds": rounds, "min_trainers": 2, "max_trainers": 6, "quorum": 1,
            "round_deadline": 120, "committee": {"members": [owner.address]},
        }  # fmt: skip
        job_id = submit_job(owner.home, parse_jobspec(terms)).job_id
        for copier in copiers:
            copier.contracts.jobs.join(job_id, ROLE_TRAINER)
        reader = devnet.contracts()
        with Adversaries(copiers).running(job_id):
            wait_for(lambda: reader.jobs.job(job_id).status != JobStatus.OPEN, "the job to end")
        assert reader.jobs.job(job_id).status == JobStatus.FINISHED
        log = owner.log_once(f"Job {job_id} round {rounds - 1}: finalized")
    finally:
        for server in servers:
            server.__exit__(None, None, None)

    trainers = reader.jobs.trainers(job_id)
    honest_bits = sum(1 << trainers.index(node.address) for node in honest)
    for round_ in range(rounds):
        assert reader.jobs.round_result(job_id, round_).included == honest_bits, round_
    reasons = {
        "hash": f"(a copy): its blob names job {job_id}, round ",
        "rewrap": "the same tensors under another name (a copy)",
        "zero": "the round's global model unchanged (a zero update)",
        "global": "its blob names no author",
    }
    for copier in copiers:
        assert sorted(copier.committed) == list(range(rounds)), copier.name
        lines = left_out(log, copier.address)
        assert len(lines) == rounds, (copier.name, lines)  # once a round
        assert all(reasons[copier.name] in line for line in lines), (copier.name, lines)
        assert reader.jobs.owed(copier.address) == 0, copier.name
    hash_lines = left_out(log, copiers[0].address)
    assert all(f"trainer {honest[0].address.lower()}" in line for line in hash_lines)
    rewrap_lines = left_out(log, copiers[1].address)
    assert all(f"those of {honest[1].address}'s" in line for line in rewrap_lines)
    for node in honest:  # each claims its share once a round is final
        wait_for(lambda node=node: reader.jobs.owed(node.address) > 0, "a share to be claimed")
    assert "failed unexpectedly" not in log


def test_selective_serving_near_the_deadline_slashes_no_honest_aggregator(fleet: Fleet) -> None:
    devnet, owner = fleet.devnet, fleet.owner
    committee = [owner, fleet.patient, fleet.hasty]
    reader = devnet.contracts()
    server = BlobServer(fleet.root / "selective")
    served: list[str] = []
    lock = threading.Lock()
    watch = VoteWatch(reader, fleet.hasty.address)

    def serve_once_after_the_hasty_vote(digest: str) -> bool:
        if not watch.voted.is_set():
            return False  # nobody gets it before the hasty aggregator voted without it
        with lock:
            if served:
                return False
            served.append(digest)
            return True

    server.serve_when = serve_once_after_the_hasty_vote
    lead: list[float] = []  # how far the devnet's clock runs ahead (earlier tests moved it)

    def near_the_deadline(job: Any) -> bool:
        return job.round_start + job.round_deadline - (time.time() + lead[0]) < 6

    selective = BadTrainer(
        "selective", devnet.contracts(devnet.new_key()), nudged, server, owner.url,
        commit_when=near_the_deadline,
    )  # fmt: skip
    selective.enlist(STAKE)
    header = reader.client.block_header(reader.client.block_number())  # enlisting just mined it
    assert header is not None
    lead.append(max(0.0, header[1] - time.time()))
    stakes = {node.address: reader.registry.node(node.address).stake for node in committee}
    terms = {
        **SPEC, "rounds": 1, "min_trainers": 1, "max_trainers": 3, "quorum": 2,
        "round_deadline": 20, "committee": {"members": [n.address for n in committee]},
    }  # fmt: skip
    first_block = reader.client.block_number()
    with server:
        job_id = submit_job(owner.home, parse_jobspec(terms)).job_id
        selective.contracts.jobs.join(job_id, ROLE_TRAINER)
        with Adversaries([selective, watch]).running(job_id):  # type: ignore[list-item]
            wait_for(lambda: reader.jobs.job(job_id).status != JobStatus.OPEN, "the job to end")
    assert reader.jobs.job(job_id).status == JobStatus.FINISHED
    events = reader.event_stream(from_block=first_block).fetch(
        first_block, reader.client.block_number()
    )

    assert selective.committed and served == [selective.committed[0]]  # served exactly once
    trainers = reader.jobs.trainers(job_id)
    bit = 1 << trainers.index(selective.address)
    included = reader.jobs.round_result(job_id, 0).included
    assert included & bit  # the patient aggregators got it and finalized with it
    # the split really happened: the hasty aggregator committed its vote without the selective
    # update (its reveal, if it came before the quorum's, names that smaller set; it may then
    # have reopened the round, having no quorum past the deadline, and voted again with it)
    hasty_log = fleet.hasty.log_once(f"Job {job_id} round 0: proposed model")
    proposed = f"Job {job_id} round 0: proposed"
    proposals = [line for line in hasty_log.splitlines() if proposed in line]
    assert proposals and "with 2 of 3 trainers" in proposals[0], proposals
    votes = [
        (e.aggregator, e.included)
        for e in events if isinstance(e, Proposed) and e.job_id == job_id
    ]  # fmt: skip
    assert all(bits & bit for a, bits in votes if a != fleet.hasty.address), votes
    assert not any(isinstance(e, AggregatorSlashed) and e.job_id == job_id for e in events)
    for node in committee:
        assert reader.registry.node(node.address).stake == stakes[node.address]
        assert reader.jobs.is_aggregator(job_id, node.address)  # nobody was removed
    hasty_log = fleet.hasty.log_once(f"leaving out {selective.address}'s update")
    assert "nobody served it" in " ".join(left_out(hasty_log, selective.address))
