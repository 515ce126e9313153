"""A federated training job end to end: seven real node processes on a real devnet.

Nodes: the job owner (serves the spec and initial model; its aggregator policy accepts no
owner, so it only serves), three trainers each holding one IID part of the digits data, a
fourth trainer whose consent policy admits only another owner, and two aggregators (quorum 2).
Alongside the real job, the owner creates a job naming a task no node has installed.

Checked: the job finishes through the CLI (`job submit`); a trainer and an aggregator killed
mid-job resume by themselves; the final model equals a plain single-process PyTorch FedAvg loop
tensor for tensor; refusals never join and say why in the node's log; `job watch`, `job show`
and `model get` work (and `job show` fails once a round's model is gone from every node).
"""

from __future__ import annotations

import hashlib
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from e2e_nodes import CLI_TIMEOUT, init_node
from nodes import NodeFactory, NodeProcess, allmende, wait_ready

from allmende.chain import Contracts, JobStatus
from allmende.learn.digits import DigitsMLP
from allmende.learn.task import DatasetDecl
from allmende.learn.train import derive_seed
from allmende.node.jobspec import load_jobspec
from allmende.node.submit import initial_model_bytes
from allmende.store.codec import decode_state
from waiting import wait_until

ROUNDS = 3
N_TRAINERS = 3
STAKE = 10**18
JOB_TIMEOUT = 900.0  # generous: node processes start slowly on a loaded machine
START_TIMEOUT = 600.0
SPEC = f"""
task = "digits-mlp"
rounds = {ROUNDS}
local_epochs = 1
batch_size = 32
min_trainers = {N_TRAINERS}
max_trainers = {N_TRAINERS}
quorum = 2
reward_per_round = "0.01 ether"
round_deadline = 180
norm_bound = 10.0
seed = 3

[optimizer]
name = "sgd"
lr = 0.1
momentum = 0.9

[aggregation]
rule = "fedavg"
params = {{}}

[committee]
size = 2             # an open committee: both aggregators volunteer and are drawn
signup_seconds = 15
"""
PARTITION = {"partition": "iid", "num_parts": N_TRAINERS, "seed": 11}
NOBODY = "0x000000000000000000000000000000000000dEaD"


@dataclass
class Network:
    devnet: object
    deployment: Path
    owner: NodeProcess
    trainers: list[NodeProcess]
    picky: NodeProcess
    aggregators: list[NodeProcess]
    factory: NodeFactory

    @property
    def everyone(self) -> list[NodeProcess]:
        return [self.owner, *self.trainers, self.picky, *self.aggregators]


@dataclass
class Outcome:
    job_id: int
    unknown_task_job: int
    final_hash: str
    spec_path: Path
    killed_in: int  # the job's round once the killed nodes were dead: later rounds are theirs


@pytest.fixture(scope="module")
def network(devnet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    factory = NodeFactory(tmp_path_factory.mktemp("nodes"))
    deployment = devnet.devnet.deployment_path
    try:

        def init(name: str, roles: tuple[str, ...], sections: dict[str, dict[str, object]]):
            home = init_node(
                factory.root / name, deployment=deployment, key=devnet.new_key(), roles=roles,
                stake_wei=STAKE, sections=sections,
            )  # fmt: skip
            return factory.start(home, wait=False)

        owner = init("owner", ("aggregator",), {"aggregator": {"allowed_owners": []}})
        trainers = [
            init(f"trainer{i}", ("trainer",), {"trainer": {"dataset": {**PARTITION, "part": i}}})
            for i in range(N_TRAINERS)
        ]
        picky = init("picky", ("trainer",), {"trainer": {"allowed_owners": [NOBODY]}})
        aggregators = [init(f"aggregator{i}", ("aggregator",), {}) for i in range(2)]
        net = Network(devnet, deployment, owner, trainers, picky, aggregators, factory)
        for node in net.everyone:
            wait_ready(node, timeout=START_TIMEOUT)
        yield net
    finally:
        factory.close()


def create_unknown_task_job(net: Network, owner_key: str) -> int:
    """The owner publishes a job naming a task that no node has installed."""
    spec = load_jobspec_text(SPEC.replace('"digits-mlp"', '"no-such-task"'), net)
    spec_hash = net.owner.store.put_bytes(spec.canonical_bytes())
    model_hash = net.owner.store.put_bytes(initial_model_bytes(load_jobspec_text(SPEC, net)))
    owner = Contracts.connect(net.devnet.deployment, owner_key)  # type: ignore[attr-defined]
    job_id, _ = owner.jobs.create_job(
        spec_hash=spec_hash, model_hash=model_hash, rounds=spec.rounds,
        reward_per_round=spec.reward_per_round, min_trainers=spec.min_trainers,
        max_trainers=spec.max_trainers, quorum=spec.quorum, round_deadline=spec.round_deadline,
        committee_size=spec.committee_size, signup_period=spec.committee.signup_seconds,
        aggregator_stake=spec.aggregator_stake,
    )  # fmt: skip
    return job_id


def load_jobspec_text(text: str, net: Network):
    path = net.factory.root / f"spec-{hashlib.sha256(text.encode()).hexdigest()[:8]}.toml"
    path.write_text(text)
    return load_jobspec(path)


def owner_key(net: Network) -> str:
    import json

    return str(json.loads((net.owner.home / "key.json").read_text())["private_key"])


@pytest.fixture(scope="module")
def outcome(network: Network) -> Outcome:
    net = network
    unknown = create_unknown_task_job(net, owner_key(net))
    spec_path = net.factory.root / "job.toml"
    spec_path.write_text(SPEC)
    submitted = allmende(
        "job", "submit", str(spec_path), "--home", str(net.owner.home), timeout=CLI_TIMEOUT
    )
    assert submitted.returncode == 0, submitted.stderr
    job_id = int(submitted.stdout.strip())
    reader = Contracts.connect(net.devnet.deployment)  # type: ignore[attr-defined]

    wait_for(lambda: reader.jobs.job(job_id).current_round >= 1, "round 0 to finish")
    # a trainer and an aggregator crash mid-job, then restart with no operator action
    net.trainers[0].stop(signal.SIGKILL)
    net.aggregators[1].stop(signal.SIGKILL)
    # The dead processes cannot act in a round that had not begun: every later round's commit
    # and vote comes from the restarted ones (rounds are quick, so this may be any round).
    killed_in = reader.jobs.job(job_id).current_round
    net.trainers[0] = net.factory.start(net.trainers[0].home, timeout=START_TIMEOUT)
    net.aggregators[1] = net.factory.start(net.aggregators[1].home, timeout=START_TIMEOUT)

    wait_for(lambda: reader.jobs.job(job_id).status != JobStatus.OPEN, "the job to end")
    job = reader.jobs.job(job_id)
    assert job.status == JobStatus.FINISHED
    return Outcome(job_id, unknown, job.final_model_hash.hex(), spec_path, killed_in)


def wait_for(condition, what: str) -> None:
    wait_until(condition, what, JOB_TIMEOUT, every=0.5)


# -- the reference: plain single-process PyTorch FedAvg --------------------------------------


def plain_fedavg(addresses: list[str], job_id: int) -> dict[str, torch.Tensor]:
    """FedAvg written out with plain PyTorch: same data parts, seeds and hyper-parameters."""
    task = DigitsMLP()
    torch.manual_seed(3)  # the spec's seed
    global_state = {k: v.detach().clone() for k, v in task.model().state_dict().items()}
    parts = {
        address: task.load_data(DatasetDecl(**PARTITION, part=i))
        for i, address in enumerate(addresses)
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for round_ in range(ROUNDS):
            trained = []
            for address in sorted(addresses, key=str.lower):
                data = parts[address]
                seed = derive_seed(job_id, round_, address)
                torch.manual_seed(seed)
                model = task.model()
                model.load_state_dict(global_state)
                opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, foreach=False)
                order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
                for start in range(0, len(data), 32):
                    rows = order[start : start + 32]
                    loss = F.cross_entropy(model(data.inputs[rows]), data.targets[rows])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                trained.append((1, model.state_dict()))  # equal weights, the spec's default
            total = sum(n for n, _ in trained)
            for key in global_state:
                acc = torch.zeros_like(global_state[key])
                for n, state in trained:
                    acc = acc + n * state[key]
                global_state[key] = acc / total
    finally:
        torch.set_num_threads(threads)
    return global_state


# -- the tests -----------------------------------------------------------------------------


def test_the_job_finishes_with_every_trainer_in_every_round(network, outcome) -> None:
    reader = Contracts.connect(network.devnet.deployment)
    job = reader.jobs.job(outcome.job_id)
    assert job.current_round == ROUNDS and job.n_trainers == N_TRAINERS
    assert job.n_aggregators == 2  # the owner's node refused to aggregate
    for round_ in range(ROUNDS):
        assert reader.jobs.round_result(outcome.job_id, round_).included == 0b111
    # the restarted nodes worked in every round after their crash (every trainer is included in
    # every round, and quorum 2 of 2 needs both aggregators' votes)
    for round_ in range(outcome.killed_in + 1, ROUNDS):
        trained = f"Job {outcome.job_id} round {round_}: trained"
        assert trained in network.trainers[0].log_once(trained)
        proposed = f"Job {outcome.job_id} round {round_}: proposed"
        assert proposed in network.aggregators[1].log_once(proposed)


def test_final_model_equals_plain_pytorch_fedavg(network, outcome) -> None:
    reader = Contracts.connect(network.devnet.deployment)
    trainers = reader.jobs.trainers(outcome.job_id)
    by_home = {node.address: node for node in network.trainers}
    ordered = [node.address for node in network.trainers]  # trainer i holds part i
    assert sorted(trainers) == sorted(by_home)
    final = decode_state(network.aggregators[0].store.read_bytes(outcome.final_hash))
    reference = plain_fedavg(ordered, outcome.job_id)
    assert final.keys() == reference.keys()
    for key in reference:
        assert torch.equal(final[key], reference[key]), key
    initial = decode_state(initial_model_bytes(load_jobspec(outcome.spec_path)))
    assert not torch.equal(final["0.weight"], initial["0.weight"])  # it did train


def test_a_trainer_whose_policy_rejects_the_owner_never_joins(network, outcome) -> None:
    reader = Contracts.connect(network.devnet.deployment)
    assert reader.jobs.trainer_index(outcome.job_id, network.picky.address) is None
    owner = network.owner.address
    expected = (
        f"Not joining job {outcome.job_id} as trainer: the job owner {owner} is not in the "
        "consent policy's allowed_owners"
    )
    assert expected in network.picky.log()
    for trainer in network.trainers:
        assert f"Joined job {outcome.job_id} as trainer" in trainer.log()


def test_a_job_naming_an_uninstalled_task_is_refused(network, outcome) -> None:
    reader = Contracts.connect(network.devnet.deployment)
    job = reader.jobs.job(outcome.unknown_task_job)
    assert job.status == JobStatus.OPEN and job.n_trainers == 0 and job.n_aggregators == 0
    line = (
        f"Not joining job {outcome.unknown_task_job} as trainer: task 'no-such-task' is not "
        "installed on this node"
    )
    for trainer in network.trainers:
        assert line in trainer.log()
    # the picky trainer refuses the owner from the chain's data, before it fetches the spec
    refused = f"Not joining job {outcome.unknown_task_job} as trainer: the job owner"
    assert refused in network.picky.log()
    assert f"Not joining job {outcome.unknown_task_job} as aggregator: task 'no-such-task'" in (
        network.aggregators[0].log()
    )


def test_job_watch_reports_every_round(network, outcome) -> None:
    args = ["job", "watch", str(outcome.job_id), "--deployment", str(network.deployment)]
    result = allmende(*args, timeout=CLI_TIMEOUT)
    assert result.returncode == 0, result.stderr
    for round_ in range(ROUNDS):
        assert f"round {round_:>3}/{ROUNDS}  accuracy 0." in result.stdout
    assert outcome.final_hash in result.stdout.replace("\n", "")


def test_model_get_fetches_and_verifies_the_final_model(network, outcome, tmp_path) -> None:
    target = tmp_path / "final.safetensors"
    args = ["--job", str(outcome.job_id), "--deployment", str(network.deployment)]
    result = allmende(
        "model", "get", outcome.final_hash, "-o", str(target), *args, timeout=CLI_TIMEOUT
    )
    assert result.returncode == 0, result.stderr
    assert hashlib.sha256(target.read_bytes()).hexdigest() == outcome.final_hash
    missing = allmende(
        "model", "get", "ab" * 32, "-o", str(tmp_path / "x"), *args, timeout=CLI_TIMEOUT
    )
    assert missing.returncode == 1 and "No peer served blob" in missing.stderr
    assert not (tmp_path / "x").exists()


def test_job_show_refuses_an_unknown_job(network) -> None:
    result = allmende("job", "show", "999", "--deployment", str(network.deployment))
    assert result.returncode == 2 and "There is no job 999" in result.stderr  # bad input


def test_job_show_verifies_the_lineage_and_fails_once_a_model_is_gone(network, outcome) -> None:
    args = ["job", "show", str(outcome.job_id), "--deployment", str(network.deployment)]
    result = allmende(*args, timeout=CLI_TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert "lineage check: all" in result.stdout and "checks passed" in result.stdout
    assert outcome.final_hash in result.stdout
    reader = Contracts.connect(network.devnet.deployment)
    lost = reader.jobs.round_result(outcome.job_id, 0).model_hash.hex()
    for node in network.everyone:  # the model of round 0 disappears from the network
        node.store.delete(lost)
    broken = allmende(*args, timeout=CLI_TIMEOUT)
    assert broken.returncode == 1
    assert "check failed round 0: model blob matches its hash" in broken.stderr


def test_node_withdraw_pays_a_trainer_what_it_earned(network, outcome) -> None:
    reader = Contracts.connect(network.devnet.deployment)
    trainer = network.trainers[1]
    owed = reader.jobs.owed(trainer.address)
    assert owed > 0, "a trainer included in every round must have earned something"
    before = reader.client.balance(trainer.address)

    paid = allmende("node", "withdraw", str(trainer.home), timeout=CLI_TIMEOUT)
    assert paid.returncode == 0, paid.stderr
    assert f"withdrew {owed} wei" in paid.stdout
    fee = int(paid.stdout.split("fee ")[1].split(" wei")[0])
    assert reader.client.balance(trainer.address) == before + owed - fee
    assert reader.jobs.owed(trainer.address) == 0

    again = allmende("node", "withdraw", str(trainer.home), timeout=CLI_TIMEOUT)
    assert again.returncode == 0, again.stderr
    assert "owed nothing" in again.stdout
    assert reader.client.balance(trainer.address) == before + owed - fee
