"""Secure aggregation (SecAgg, ``[aggregation.secure]``) on real node processes and a real devnet.

Eight ``allmende node run`` processes: two aggregators (the owner's node and one more, quorum
2) and six trainers, each with one IID sixth of digits. The trainers exchange X25519 keys and
encrypted Shamir shares through the aggregators' boards (signed messages), commit the hashes of
their masked updates' manifests and reveal after the commits are fixed; the aggregators see only
the masked updates and unmask the sum.

- All six: the finalized model equals plain FedAvg of the six updates (trained again here with
  the same seeds) within the fixed-point error ``2^-(f+1)`` plus float32 rounding; a quorum of 2
  finalized it, so both aggregators proposed the same bytes.
- With DP (``noise = "split"``) as well: the noisy sum is unmasked, and every trainer's privacy
  budget records the job's epsilon.
- Two of six (a third) SIGKILLed right after they sent their shares, before they could commit
  (``make test-long``; see the comment on the test):
  the round still finalizes at its deadline with the four others, the survivors' pairwise masks
  with the dead are removed from the reconstructed keys, and the sum equals FedAvg of the four.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import torch
from fault_nodes import network_homes
from nodes import NodeFactory, NodeProcess, allmende, wait_ready

from allmende.chain import JobStatus
from allmende.learn.aggregate import aggregate
from allmende.learn.task import DatasetDecl, load_task
from allmende.learn.train import derive_seed, train_local
from allmende.node.jobspec import JobSpec, parse_jobspec
from allmende.node.submit import initial_model_bytes, submit_job
from allmende.privacy.params import scale_bits
from allmende.store.codec import decode_state
from waiting import wait_until

N_TRAINERS = 6
STAKE = 10**18
CLIP = 4.0
JOB_TIMEOUT = 240.0
PARTITION = {"partition": "iid", "num_parts": N_TRAINERS, "seed": 4}
FAST_ROLES = {"poll_seconds": 0.3, "refresh_seconds": 0.5}


def spec_for(committee: list[str], *, round_deadline: int, epochs: int, seed: int,
             **more: object) -> JobSpec:  # fmt: skip
    """A one-round secure job for ``committee``; ``more``: further top-level spec tables."""
    return parse_jobspec({
        "task": "digits-mlp",
        "rounds": 1,
        "local_epochs": epochs,
        "batch_size": 32,
        "min_trainers": 4,
        "max_trainers": N_TRAINERS,
        "quorum": 2,
        "reward_per_round": 10**15,
        "round_deadline": round_deadline,
        "seed": seed,
        "optimizer": {"name": "sgd", "lr": 0.1},
        "aggregation": {"rule": "fedavg", "params": {}, "secure": {"clip": CLIP}},
        "committee": {"members": committee},
        **more,
    })  # fmt: skip


@dataclass
class Network:
    devnet: object
    owner: NodeProcess
    aggregators: list[NodeProcess]
    trainers: list[NodeProcess]  # trainer i holds part i
    factory: NodeFactory  # restarts a killed node, so the next test has the whole fleet


def wait_for(condition, what: str, timeout: float = JOB_TIMEOUT) -> None:
    wait_until(condition, what, timeout, every=0.05)


@pytest.fixture(scope="module")
def network(devnet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    root = tmp_path_factory.mktemp("secure")
    factory = NodeFactory(root / "nodes")
    factory.root.mkdir()
    try:
        homes = network_homes(
            factory.root, devnet, trainers=N_TRAINERS, trainer_section=FAST_ROLES,
            partition=PARTITION, stake_wei=STAKE,
            aggregators={name: {**FAST_ROLES, "fetch_grace_seconds": 5}
                         for name in ("owner", "aggregator")},
        )  # fmt: skip
        running = {name: factory.start(home, wait=False) for name, home in homes.items()}
        for node in running.values():
            wait_ready(node)
        yield Network(
            devnet=devnet, owner=running["owner"],
            aggregators=[running["owner"], running["aggregator"]],
            trainers=[running[f"trainer{i}"] for i in range(N_TRAINERS)], factory=factory,
        )  # fmt: skip
    finally:
        factory.close()


def plain_fedavg(spec: JobSpec, job_id: int, parts: dict[str, int]) -> dict[str, torch.Tensor]:
    """Round 0's plain FedAvg of the given trainers (address -> data part), trained here."""
    task = load_task(spec.task)
    state = decode_state(initial_model_bytes(spec))
    updates = []
    for address, part in sorted(parts.items(), key=lambda item: item[0].lower()):
        data = task.load_data(DatasetDecl(**PARTITION, part=part))
        trained, _, _ = train_local(
            task, state, data, **spec.training_settings(), seed=derive_seed(job_id, 0, address)
        )
        updates.append((address, trained, spec.weight_of(len(data))))
    return aggregate("fedavg", state, updates, {})


def check_sum(network: Network, spec: JobSpec, job_id: int, parts: dict[str, int]) -> None:
    reader = network.devnet.contracts()
    job = reader.jobs.job(job_id)
    assert job.status == JobStatus.FINISHED, job
    trainers = reader.jobs.trainers(job_id)
    included = reader.jobs.round_result(job_id, 0).included
    expected = sum(1 << trainers.index(address) for address in parts)
    assert included == expected, (bin(included), bin(expected))
    final = decode_state(network.owner.store.read_bytes(bytes(job.final_model_hash).hex()))
    plain = plain_fedavg(spec, job_id, parts)
    f = scale_bits(trainers=N_TRAINERS, max_weight=1, clip=CLIP, ring_bits=64)
    for key, ref in plain.items():
        bound = 2.0 ** -(f + 1) + 2.0**-22 * max(1.0, float(ref.abs().max()))
        error = float((final[key].double() - ref.double()).abs().max())
        assert error <= bound, (key, error, bound)
    assert any(not torch.equal(final[k], v) for k, v in decode_state(
        initial_model_bytes(spec)).items()), "the model did not change"  # fmt: skip


def test_the_unmasked_sum_is_plain_fedavg_and_both_aggregators_agree(network: Network) -> None:
    committee = [node.address for node in network.aggregators]
    spec = spec_for(committee, round_deadline=120, epochs=1, seed=3)
    job_id = submit_job(network.owner.home, spec).job_id
    reader = network.devnet.contracts()
    wait_for(lambda: reader.jobs.job(job_id).status != JobStatus.OPEN, "the job to end")
    parts = {node.address: i for i, node in enumerate(network.trainers)}
    check_sum(network, spec, job_id, parts)
    for node in network.aggregators:
        log = node.log()
        assert f"Job {job_id} round 0: unmasked the sum of 6 trainers" in log, log[-3000:]
        assert "failed unexpectedly" not in log, log[-3000:]


# In `make test-long` only, for a known fault (issue 17): on a loaded machine (the whole suite on
# 2 cores) the trainers' views of who posted keys can differ at the end of the key phase; a
# trainer then deals shares to fewer partners than the others think, and once a third of them
# are killed a survivor's seed has fewer shares than the threshold, so the round cannot be
# unmasked, and its re-opened attempt (the aggregators keep the first attempt's keys) cannot
# either. Alone it passes; the fix is a key list the aggregators fix for everyone.
@pytest.mark.long
def test_a_third_of_the_trainers_killed_after_their_shares_still_finalizes(
    network: Network,
) -> None:
    committee = [node.address for node in network.aggregators]
    # the key and share phases get a quarter and a half of the deadline: 30 s left a trainer
    # busy with the previous job 7.5 s to post its keys, too little on a loaded machine
    spec = spec_for(committee, round_deadline=90, epochs=40, seed=5)
    job_id = submit_job(network.owner.home, spec).job_id
    reader = network.devnet.contracts()
    victims = network.trainers[:2]
    marker = f"Job {job_id} round 0: sent its secure-aggregation shares."
    try:
        for victim in victims:  # killed while they train, before they can commit
            wait_for(lambda v=victim: marker in v.log(), "a victim to send its shares", 120.0)
            victim.kill()
        for victim in victims:
            assert reader.jobs.commit_of(job_id, 0, victim.address).weight == 0
        wait_for(lambda: reader.jobs.job(job_id).status != JobStatus.OPEN, "the job to end")
    finally:  # a secure round waits for its full roster: the next job needs all six again
        for i, victim in enumerate(victims):
            victim.kill()
            network.trainers[i] = network.factory.start(victim.home)
    survivors = {node.address: i for i, node in enumerate(network.trainers) if i >= 2}
    check_sum(network, spec, job_id, survivors)
    for node in network.aggregators:
        assert f"Job {job_id} round 0: unmasked the sum of 4 trainers" in node.log()


# `make test-long` only, for the same key-view fault as the kill test above: about one run in
# five a trainer ends with no partner and is left out, and this test expects all six included.
@pytest.mark.long
def test_a_dp_job_with_secure_aggregation_records_its_epsilon_in_every_trainers_budget(
    network: Network,
) -> None:
    """DP and secure aggregation in one job: each trainer clips its update and adds its share of
    the noise (``noise = "split"``) before masking it; the aggregators unmask only the noisy sum,
    and every trainer's budget records the job's ε for its dataset."""
    committee = [node.address for node in network.aggregators]
    privacy = {"epsilon": 4.0, "delta": 1e-5, "clip_norm": 1.0, "noise": "split"}
    spec = spec_for(committee, round_deadline=120, epochs=1, seed=9, privacy=privacy)
    job_id = submit_job(network.owner.home, spec).job_id
    reader = network.devnet.contracts()
    wait_for(lambda: reader.jobs.job(job_id).status != JobStatus.OPEN, "the job to end")
    job = reader.jobs.job(job_id)
    assert job.status == JobStatus.FINISHED, job
    assert reader.jobs.round_result(job_id, 0).included == (1 << N_TRAINERS) - 1
    final = decode_state(network.owner.store.read_bytes(bytes(job.final_model_hash).hex()))
    initial = decode_state(initial_model_bytes(spec))
    assert all(torch.isfinite(t).all() for t in final.values())
    assert any(not torch.equal(final[k], v) for k, v in initial.items()), "nothing was learned"
    for node in network.aggregators:
        assert f"Job {job_id} round 0: unmasked the sum of {N_TRAINERS} trainers" in node.log()
    job_key = f"{network.devnet.deployment.jobs.address.lower()}:{job_id}"
    spent = spec.privacy.epsilon_after(1, rounds=1)
    assert 0 < spent <= 4.0
    for trainer in network.trainers:
        done = allmende("node", "privacy", str(trainer.home), "--json")
        assert done.returncode == 0, done.stderr
        (row,) = json.loads(done.stdout)["datasets"]
        jobs = {entry["job"]: entry for entry in row["jobs"]}
        assert jobs[job_key]["epsilon"] == pytest.approx(spent), row
        assert jobs[job_key]["rounds"] == 1
