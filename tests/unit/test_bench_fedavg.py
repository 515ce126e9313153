"""The benchmark's plain PyTorch FedAvg loop is the arithmetic Allmende runs, bit for bit.

It is written independently of ``allmende.learn``; these tests pin that both give the same bytes,
so the "same bits" column of ``make bench`` means something.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from allmende.learn.aggregate import aggregate
from allmende.learn.train import derive_seed, train_local
from fedavg_job import (
    FedAvgJob,
    evaluate_state,
    initial_state,
    load_job_task,
    local_datasets,
    state_digest,
)
from fedavg_pytorch import fedavg_plain, run_plain_fedavg, train_plain

SMALL_JOB = FedAvgJob(trainers=4, rounds=2)


@pytest.fixture(autouse=True)
def _restore_torch_settings():  # run_plain_fedavg sets them process-wide, as its own process may
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def _allmende_fedavg(job: FedAvgJob) -> dict[str, torch.Tensor]:
    """The same job through allmende.learn: train_local per trainer, aggregate('fedavg')."""
    task = load_job_task(job)
    datasets = local_datasets(task, job)
    state = initial_state(task, job)
    for round_ in range(job.rounds):
        updates = []
        for who, data in zip(job.ids(), datasets, strict=True):
            new_state, examples, _ = train_local(
                task, state, data, epochs=job.epochs, batch_size=job.batch_size, lr=job.lr,
                seed=derive_seed(job.job_id, round_, who),
            )
            updates.append((who, new_state, examples))
        state = aggregate("fedavg", state, updates, {})
    return state


def test_plain_training_equals_train_local_bit_for_bit() -> None:
    task = load_job_task(SMALL_JOB)
    state = initial_state(task, SMALL_JOB)
    data = local_datasets(task, SMALL_JOB)[1]
    seed = derive_seed(1, 0, "trainer-1")
    torch.set_num_threads(1)
    plain = train_plain(task, state, data, job=SMALL_JOB, seed=seed)
    reference, _, _ = train_local(task, state, data, epochs=1, batch_size=32, lr=0.05, seed=seed)
    assert state_digest(plain) == state_digest(reference)
    other_seed = train_plain(task, state, data, job=SMALL_JOB, seed=seed + 1)
    assert state_digest(other_seed) != state_digest(reference)


def test_plain_average_equals_allmende_fedavg_in_address_order() -> None:
    global_state = {"w": torch.tensor([0.0, 0.0, 0.0])}
    models = [{"w": torch.tensor([0.1, 0.7, 1.3])}, {"w": torch.tensor([0.3, 0.2, 0.9])},
              {"w": torch.tensor([1 / 3, 2 / 3, 0.05])}]
    examples = [7, 11, 13]
    updates = [(f"0x{i:040x}", m, n) for i, (m, n) in enumerate(zip(models, examples, strict=True))]
    expected = aggregate("fedavg", global_state, updates, {})["w"]
    assert torch.equal(fedavg_plain(models, examples)["w"], expected)
    assert not torch.equal(fedavg_plain(models, [1, 1, 1])["w"], expected)


def test_whole_plain_job_reproduces_allmende_and_depends_on_trainer_identities() -> None:
    result = run_plain_fedavg(SMALL_JOB)
    assert result["final_state_sha256"] == state_digest(_allmende_fedavg(SMALL_JOB))
    task = load_job_task(SMALL_JOB)
    assert result["accuracy"] == evaluate_state(task, _allmende_fedavg(SMALL_JOB))["accuracy"]
    assert len(result["round_s"]) == SMALL_JOB.rounds

    renamed = SMALL_JOB.model_copy(update={"trainer_ids": ["0xa", "0xb", "0xc", "0xd"]})
    assert run_plain_fedavg(renamed)["final_state_sha256"] != result["final_state_sha256"]


def test_job_refuses_a_wrong_number_of_trainer_ids() -> None:
    job = FedAvgJob(trainers=3, trainer_ids=["a", "b"])
    with pytest.raises(ValueError, match="one id per trainer"):
        job.ids()


def test_allmende_job_spec_carries_the_benchmark_settings() -> None:
    import tomllib

    from allmende.node.jobspec import parse_jobspec
    from allmende_net import job_spec_toml

    job = FedAvgJob(trainers=5, rounds=7, lr=0.25, batch_size=16, model_seed=3)
    spec = parse_jobspec(tomllib.loads(job_spec_toml(job)))
    assert (spec.task, spec.rounds, spec.local_epochs, spec.batch_size) == ("digits-mlp", 7, 1, 16)
    assert (spec.min_trainers, spec.max_trainers, spec.seed) == (5, 5, 3)
    assert (spec.optimizer.name, spec.optimizer.lr, spec.optimizer.momentum) == ("sgd", 0.25, 0.0)
    assert (spec.aggregation.rule, spec.aggregation.params) == ("fedavg", {})
    other = parse_jobspec(tomllib.loads(job_spec_toml(job.model_copy(update={"lr": 0.5}))))
    assert other.canonical_bytes() != spec.canonical_bytes()
