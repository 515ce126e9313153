"""Registered endpoints that point inside a node's network, against real nodes on a real devnet.

Honest: an owner-aggregator node and a trainer node, both allowing only ``127.0.0.1/32`` besides
public addresses. Hostile, in the test process: four trainers of the job that registered the
endpoints ``http://127.0.0.2:<port>`` (a listener that counts connections, on loopback but not
in the allowed range), the cloud metadata URL ``http://169.254.169.254/latest/meta-data/#``,
``http://10.0.0.1:9`` and ``http://user:pw@127.0.0.1:<port>`` (a second counting listener, on an
allowed address but with userinfo), and commit updates nobody serves.

Proven: nobody connects to either listener; each hostile endpoint is a ``refused`` peer fault in
both honest nodes' state; the round is finalized with the honest trainer alone, each hostile
update left out; both honest nodes still serve. The trainer node is stopped (SIGSTOP) while the
hostile trainers join and commit, so they are in the round whatever the machine's speed.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import threading
from pathlib import Path

from fault_nodes import PROBE, write_home
from nodes import NodeFactory, wait_ready

from allmende.chain import ROLE_TRAINER, JobStatus
from allmende.node.jobspec import parse_jobspec
from allmende.node.submit import submit_job
from waiting import wait_until

STAKE = 10**18
ROUND_DEADLINE = 20  # seconds; the honest trainer commits within it, then the hostile are dropped
JOB_TIMEOUT = 120.0
ALLOWED = {"allow_endpoint_ranges": ["127.0.0.1/32"]}
SPEC = {
    "task": "digits-mlp",
    "rounds": 1,
    "local_epochs": 1,
    "batch_size": 32,
    "min_trainers": 1,
    "max_trainers": 5,
    "quorum": 1,
    "reward_per_round": 10**16,
    "round_deadline": ROUND_DEADLINE,
    "seed": 3,
    "optimizer": {"name": "sgd", "lr": 0.1},
    "aggregation": {"rule": "fedavg", "params": {}},
}


class CountingListener:
    """A TCP listener on ``host`` that accepts and counts connections (and answers nothing)."""

    def __init__(self, host: str) -> None:
        self._sock = socket.create_server((host, 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()


def wait_for(condition, what: str, timeout: float = JOB_TIMEOUT) -> None:
    wait_until(condition, what, timeout, every=0.3)


def test_internal_endpoints_are_never_contacted_and_their_members_are_skipped(
    devnet, tmp_path: Path
) -> None:
    deployment = devnet.devnet.deployment_path
    factory = NodeFactory(tmp_path / "nodes")
    factory.root.mkdir()
    outside = CountingListener("127.0.0.2")
    userinfo = CountingListener("127.0.0.1")
    hostile_endpoints = [
        f"http://127.0.0.2:{outside.port}",
        "http://169.254.169.254/latest/meta-data/#",
        "http://10.0.0.1:9",
        f"http://user:pw@127.0.0.1:{userinfo.port}",
    ]
    try:
        owner_home = write_home(
            factory.root / "owner", deployment=deployment, key=devnet.new_key(),
            roles=("aggregator",), stake_wei=STAKE,
            sections={"net": ALLOWED, "aggregator": {"fetch_grace_seconds": 0}},
        )  # fmt: skip
        trainer_home = write_home(
            factory.root / "trainer", deployment=deployment, key=devnet.new_key(),
            roles=("trainer",), stake_wei=STAKE,
            sections={"net": ALLOWED},
        )  # fmt: skip
        owner = factory.start(owner_home, wait=False)
        trainer = factory.start(trainer_home, wait=False)
        wait_ready(owner)
        wait_ready(trainer)

        hostile = [devnet.contracts(devnet.new_key()) for _ in hostile_endpoints]
        for contracts, endpoint in zip(hostile, hostile_endpoints, strict=True):
            contracts.registry.register(endpoint, ROLE_TRAINER)
            contracts.registry.stake(STAKE)

        os.kill(trainer.process.pid, signal.SIGSTOP)  # the hostile join and commit first
        try:
            spec = parse_jobspec({**SPEC, "committee": {"members": [owner.address]}})
            job_id = submit_job(owner.home, spec).job_id
            for i, contracts in enumerate(hostile):
                contracts.jobs.join(job_id, ROLE_TRAINER)
                digest = hashlib.sha256(f"an update nobody serves {i}".encode()).hexdigest()
                contracts.jobs.commit_update(job_id, 0, digest, 1)
        finally:
            os.kill(trainer.process.pid, signal.SIGCONT)

        reader = devnet.contracts()
        wait_for(lambda: reader.jobs.job(job_id).status != JobStatus.OPEN, "the job to end")
        assert reader.jobs.job(job_id).status == JobStatus.FINISHED
        trainers = reader.jobs.trainers(job_id)
        assert reader.jobs.round_result(job_id, 0).included == 1 << trainers.index(trainer.address)
        assert reader.jobs.is_aggregator(job_id, owner.address)
        assert PROBE.serving(owner.url) and PROBE.serving(trainer.url)
        faults = {}
        for node in (owner, trainer):
            state = node.state()
            try:
                faults[node.home.name] = {(f.peer, f.kind) for f in state.peer_faults()}
            finally:
                state.close()
        owner_log = owner.log()
    finally:
        factory.close()
        outside.close()
        userinfo.close()

    assert (outside.accepted, userinfo.accepted) == (0, 0)
    for name, seen in faults.items():
        refused = {peer for peer, kind in seen if kind == "refused"}
        assert refused == set(hostile_endpoints), (name, seen)
    for contracts in hostile:
        assert f"leaving out {contracts.client.address}'s update" in owner_log
