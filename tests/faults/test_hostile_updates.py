"""Hostile update bytes against a real honest aggregator on a real devnet.

Honest: two ``allmende node run`` processes, the job owner's node (the one aggregator, quorum 1)
and one trainer. Hostile, in the test process (see ``adversaries.py``): a trainer that commits
raw bytes instead of a model, served from its own blob server.

- A header nested far past Python's recursion limit, in a blob exactly as long as a model of the
  task (so the fetch takes it): before the codec bounded headers, ``json.loads`` raised
  RecursionError and every step of the aggregator failed, so the round never ended.
- A blob a megabyte larger than any model of the task: the fetch is cut off at the reference
  model's encoded size, so nobody serves it, and it is left out once the deadline passed.

Proven each time: the round is finalized with exactly the honest trainer, the bad update is left
out for its reason, no step failed unexpectedly, and the aggregator still answers ``/healthz``.
"""

from __future__ import annotations

from pathlib import Path

from adversaries import Adversaries, Attack, BadTrainer, BlobServer, nested_header, oversized
from fault_nodes import PROBE, write_home
from nodes import NodeFactory, wait_ready

from allmende.chain import ROLE_TRAINER, JobStatus
from allmende.node.jobspec import parse_jobspec
from allmende.node.submit import submit_job
from waiting import wait_until

STAKE = 10**18
JOB_TIMEOUT = 300.0


def spec(round_deadline: int) -> dict[str, object]:
    """One round of digits-mlp that two trainers join; one honest update is enough."""
    return {
        "task": "digits-mlp",
        "rounds": 1,
        "local_epochs": 1,
        "batch_size": 64,
        "min_trainers": 1,
        "max_trainers": 2,
        "quorum": 1,
        "reward_per_round": 10**15,
        "round_deadline": round_deadline,
        "seed": 3,
        "optimizer": {"name": "sgd", "lr": 0.1},
        "aggregation": {"rule": "fedavg", "params": {}},
    }


def wait_for(condition, what: str, timeout: float = JOB_TIMEOUT) -> None:
    wait_until(condition, what, timeout, every=0.3)


def run_round_with(devnet, tmp_path: Path, attack: Attack, *, round_deadline: int) -> str:
    """Run the one-round job with a hostile trainer committing ``attack``'s bytes; check the
    outcome; the aggregator's log line that left the bad update out."""
    deployment = devnet.devnet.deployment_path
    factory = NodeFactory(tmp_path / "nodes")
    factory.root.mkdir()
    server = BlobServer(tmp_path / "bad")
    try:
        owner_home = write_home(
            factory.root / "owner", deployment=deployment, key=devnet.new_key(),
            roles=("aggregator",), stake_wei=STAKE,
            sections={"aggregator": {"fetch_grace_seconds": 0}},
        )  # fmt: skip
        trainer_home = write_home(
            factory.root / "trainer", deployment=deployment, key=devnet.new_key(),
            roles=("trainer",), stake_wei=STAKE,
        )  # fmt: skip
        owner = factory.start(owner_home, wait=False)
        trainer = factory.start(trainer_home, wait=False)
        wait_ready(owner)
        wait_ready(trainer)
        server.__enter__()

        bad = BadTrainer(attack.__name__, devnet.contracts(devnet.new_key()), attack, server,
                         owner.url)  # fmt: skip
        bad.enlist(STAKE)
        terms = {**spec(round_deadline), "committee": {"members": [owner.address]}}
        job_id = submit_job(owner.home, parse_jobspec(terms)).job_id
        bad.contracts.jobs.join(job_id, ROLE_TRAINER)
        reader = devnet.contracts()
        with Adversaries([bad]).running(job_id):
            wait_for(lambda: reader.jobs.job(job_id).status != JobStatus.OPEN, "the job to end")
            assert PROBE.serving(owner.url) and owner.alive()
        assert reader.jobs.job(job_id).status == JobStatus.FINISHED
        log = owner.log_once(f"leaving out {bad.address}'s update")
    finally:
        server.__exit__(None, None, None)
        factory.close()

    assert bad.committed, "the hostile trainer never committed"
    trainers = reader.jobs.trainers(job_id)
    assert set(trainers) == {trainer.address, bad.address}
    included = reader.jobs.round_result(job_id, 0).included
    assert included == 1 << trainers.index(trainer.address)
    assert "failed unexpectedly" not in log, log[-3000:]
    lines = [line for line in log.splitlines() if f"leaving out {bad.address}'s update" in line]
    assert lines, log[-3000:]
    return lines[0]


def test_an_update_with_a_deeply_nested_header_is_left_out(devnet, tmp_path: Path) -> None:
    line = run_round_with(devnet, tmp_path, nested_header, round_deadline=240)
    assert "not a model of this task" in line and "header" in line, line
    assert "served by http://127.0.0.1:" in line or "from the local store" in line, line


def test_an_update_larger_than_any_model_is_cut_off_and_left_out(devnet, tmp_path: Path) -> None:
    line = run_round_with(devnet, tmp_path, oversized, round_deadline=45)
    assert "nobody served it" in line and "over the limit" in line, line
