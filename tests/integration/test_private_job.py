"""A differentially private job on real node processes and a real Anvil, under the owners' budget.

Three ``allmende node run`` processes: the job owner's node (the only aggregator) and two
trainers, each on its half of digits, each with ``[trainer.privacy] budget_epsilon = 3`` and
``max_job_epsilon = 4``. The owner runs a three-round job with ``[privacy] epsilon = 2``.

In round 1 the test stops mining blocks (Anvil's automine off, blocks mined by the test), so a
trainer's commit stays pending; once trainer A's ledger shows the round charged, A is SIGKILLed
(its update has not left: a node serves an update only after its commit is mined), mining
resumes and A is restarted on the same home.

Proven: the job finishes; its final model is the bytes an in-process replay gives with each
trainer's clipping and noise drawn from that trainer's own secret (so the nodes added exactly
the calibrated noise, and the killed trainer recomputed the same noisy update); each trainer's
ledger holds each round once (A's round 1 charged before the kill, not again after it) and
``allmende node privacy`` reports the job's ε; then three more jobs are refused by both
trainers, each with its rule in the log: a second ε 2 job (1 left of the budget), a job without
DP, and a job with ε 8 (over max_job_epsilon).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
import threading
from pathlib import Path

import pytest
import torch
from nodes import NodeFactory, allmende, wait_ready

from allmende.chain import JobStatus
from allmende.learn.aggregate import aggregate
from allmende.learn.task import DatasetDecl, load_task, seeded_state
from allmende.learn.train import derive_seed, train_local
from allmende.node.jobspec import parse_jobspec
from allmende.node.roles.privacy import SECRET_KEY
from allmende.node.submit import submit_job
from allmende.privacy.dp import noise_generator, privatize
from allmende.store.codec import encode_state
from waiting import wait_until

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "faults"))
from fault_nodes import write_home

STAKE = 10**18
JOB_TIMEOUT = 600.0
BUDGET = 3.0
PRIVACY = {"epsilon": 2.0, "delta": 1e-5, "clip_norm": 1.0}
SPEC = {
    "task": "digits-mlp",
    "rounds": 3,
    "local_epochs": 1,
    "batch_size": 32,
    "min_trainers": 2,
    "max_trainers": 2,
    "quorum": 1,
    "reward_per_round": 10**15,
    "round_deadline": 300,
    "seed": 5,
    "norm_bound": 10_000.0,
    "optimizer": {"name": "sgd", "lr": 0.1},
    "aggregation": {"rule": "fedavg", "params": {}},
}


def wait_for(condition, what: str, timeout: float = JOB_TIMEOUT) -> None:
    wait_until(condition, what, timeout, every=0.2)


def charges(home: Path) -> list[tuple[str, int, float]]:
    """(job, round, job ε) of every charge in the node's ledger, read as another process."""
    path = home / "state.sqlite"
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT job, round, job_epsilon FROM privacy_charges ORDER BY job, round"
        ).fetchall()
    except sqlite3.OperationalError:  # the table is made on the node's first charge
        return []
    finally:
        conn.close()


def pinned(home: Path, ref: str) -> bool:
    conn = sqlite3.connect(home / "state.sqlite")
    try:
        return conn.execute("SELECT 1 FROM pins WHERE ref = ?", (ref,)).fetchone() is not None
    finally:
        conn.close()


def secret_of(home: Path) -> bytes:
    conn = sqlite3.connect(home / "state.sqlite")
    try:
        (value,) = conn.execute("SELECT value FROM kv WHERE key = ?", (SECRET_KEY,)).fetchone()
    finally:
        conn.close()
    return bytes.fromhex(value)


def replay(spec, job_key: str, job_id: int, trainers: dict[str, tuple[DatasetDecl, bytes]]) -> str:
    """The job in this process: each trainer's training, clipping and noise (from its secret),
    then FedAvg; the final model's hash."""
    task = load_task(spec.task)
    state = seeded_state(task, seed=spec.seed)
    data = {address: task.load_data(decl) for address, (decl, _) in trainers.items()}
    sigma = spec.privacy.noise_std(rounds=spec.rounds, min_trainers=spec.min_trainers)
    for round_ in range(spec.rounds):
        updates = []
        for address, (_, secret) in trainers.items():
            new, _, _ = train_local(
                task, state, data[address], **spec.training_settings(),
                seed=derive_seed(job_id, round_, address),
            )  # fmt: skip
            noisy, _ = privatize(
                new, state, clip_norm=spec.privacy.clip_norm, noise_std=sigma,
                generator=noise_generator(secret, job=job_key, round_=round_),
            )  # fmt: skip
            updates.append((address, noisy, 1))
        state = aggregate("fedavg", state, updates, {})
    return hashlib.sha256(encode_state(state)).hexdigest()


class Miner:
    """Mines a block every ``interval`` seconds (automine off) until :meth:`pause_when` holds
    after a block: then no block is mined until :meth:`resume`."""

    def __init__(self, client, interval: float = 0.25) -> None:
        self.client = client
        self.interval = interval
        self.condition = lambda: False
        self.paused = threading.Event()
        self._stop = threading.Event()
        self.client.rpc("evm_setAutomine", [False])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.client.rpc("evm_mine", [])
            if self.condition():
                self.paused.set()
                return
            self._stop.wait(self.interval)

    def resume(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self.client.rpc("evm_setAutomine", [True])
        self.client.rpc("evm_mine", [])  # the transactions that waited


@pytest.mark.timeout(900)
def test_a_dp_job_charges_each_round_once_through_a_sigkill_and_the_budget_refuses_more(
    devnet, tmp_path: Path
) -> None:
    deployment = devnet.devnet.deployment_path
    factory = NodeFactory(tmp_path / "nodes")
    factory.root.mkdir()
    decls = [DatasetDecl(partition="iid", num_parts=2, part=i, seed=3) for i in range(2)]
    trainer_section = {"privacy": {"budget_epsilon": BUDGET, "max_job_epsilon": 4.0}}
    homes = {
        "owner": write_home(factory.root / "owner", deployment=deployment, key=devnet.new_key(),
                            roles=("aggregator",), stake_wei=STAKE, allow_tasks=()),
    }  # fmt: skip
    for i, decl in enumerate(decls):
        homes[f"t{i}"] = write_home(
            factory.root / f"t{i}", deployment=deployment, key=devnet.new_key(),
            roles=("trainer",), stake_wei=STAKE,
            sections={"trainer": {**trainer_section, "dataset": decl.model_dump(mode="json")}},
        )  # fmt: skip
    reader = devnet.contracts()
    client = reader.client
    miner: Miner | None = None
    try:
        nodes = {name: factory.start(home, wait=False) for name, home in homes.items()}
        for node in nodes.values():
            wait_ready(node)
        owner, victim = nodes["owner"], nodes["t0"]
        committee = {"members": [owner.address]}
        spec = parse_jobspec({**SPEC, "privacy": PRIVACY, "committee": committee})

        job: dict[str, int] = {}
        miner = Miner(client)
        miner.condition = lambda: "id" in job and reader.jobs.job(job["id"]).current_round >= 1
        job["id"] = job_id = submit_job(owner.home, spec).job_id
        job_key = f"{devnet.deployment.jobs.address.lower()}:{job_id}"
        wait_for(miner.paused.is_set, "round 0 to be finalized")
        # No block is mined now: round 1's commits stay pending, so no update of it has left.
        wait_for(lambda: (job_key, 1) in {(j, r) for j, r, _ in charges(victim.home)},
                 "trainer A to charge round 1")  # fmt: skip
        victim.kill()
        assert reader.jobs.commit_of(job_id, 1, victim.address).weight == 0
        assert not pinned(victim.home, f"job:{job_id}:update:1")  # not served: not stored
        miner.resume()
        miner = None
        restarted = factory.start(victim.home)

        wait_for(lambda: reader.jobs.job(job_id).status != JobStatus.OPEN, "the job to end")
        assert reader.jobs.job(job_id).status == JobStatus.FINISHED
        trainers = {nodes[f"t{i}"].address: (decls[i], secret_of(homes[f"t{i}"])) for i in range(2)}
        assert set(reader.jobs.trainers(job_id)) == set(trainers)
        with torch.random.fork_rng(devices=[]):
            expected = replay(spec, job_key, job_id, dict(sorted(trainers.items())))
        assert reader.jobs.job(job_id).final_model_hash.hex() == expected

        spent = spec.privacy.epsilon_after(3, rounds=3)
        assert 1.9 < spent <= 2.0
        # A's round 1 commit was mined after the kill: restarted, A trained again, drew the same
        # noise from its secret and served the very update it had committed.
        assert f"Job {job_id} round 1: trained again and served committed update" in restarted.log()
        for name in ("t0", "t1"):
            rows = charges(homes[name])
            assert [(j, r) for j, r, _ in rows] == [(job_key, 0), (job_key, 1), (job_key, 2)]
            assert rows[-1][2] == pytest.approx(spent)
        report = json.loads(allmende("node", "privacy", str(homes["t0"]), "--json").stdout)
        (row,) = report["datasets"]
        assert row["declared"] and row["epsilon_spent"] == pytest.approx(spent)
        assert row["epsilon_left"] == pytest.approx(BUDGET - spent)
        assert row["jobs"] == [
            {"job": job_key, "rounds": 3, "epsilon": pytest.approx(spent), "delta": 1e-5}
        ]

        more = {
            "budget": {**SPEC, "privacy": PRIVACY, "committee": committee},
            "no-dp": {**SPEC, "committee": committee},
            "large": {**SPEC, "privacy": {**PRIVACY, "epsilon": 8.0}, "committee": committee},
        }
        ids = {why: submit_job(owner.home, parse_jobspec(raw)).job_id for why, raw in more.items()}
        reasons = {
            "budget": f"left of [trainer.privacy] budget_epsilon {BUDGET:g}",
            "no-dp": "requires differential privacy for every job",
            "large": "privacy.epsilon 8 is above [trainer.privacy] max_job_epsilon 4",
        }
        for node in (restarted, nodes["t1"]):
            for why, other in ids.items():
                line = f"Not joining job {other} as trainer: "
                text = node.log_once(line, timeout=120)
                said = [entry for entry in text.splitlines() if line in entry]
                assert said and reasons[why] in said[0], text[-3000:]
        for other in ids.values():
            assert reader.jobs.job(other).n_trainers == 0
        assert [(j, r) for j, r, _ in charges(homes["t0"])] == [(job_key, r) for r in range(3)]
    finally:
        if miner is not None:
            miner.resume()
        factory.close()
