"""Deterministic local training, training seeds, and federated training on digits end to end."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from allmende.errors import ConfigError, TaskError
from allmende.learn.aggregate import aggregate
from allmende.learn.digits import DigitsMLP
from allmende.learn.task import DatasetDecl, seeded_model
from allmende.learn.train import derive_seed, train_local
from allmende.node.jobspec import load_jobspec

EXAMPLE_SPEC = Path(__file__).resolve().parents[2] / "examples" / "jobs" / "digits-fedavg.toml"
ADDRESS = "0x5B38Da6a701c568545dCfcB03FcB875f56beddC4"


@pytest.fixture(scope="module")
def task():
    return DigitsMLP()


@pytest.fixture(scope="module")
def data(task):
    return task.load_data(DatasetDecl(num_parts=6, part=2, seed=1))


def train(task, data, *, seed, **overrides):
    settings = {"epochs": 1, "batch_size": 32, "lr": 0.1, "momentum": 0.9, "seed": seed}
    settings.update(overrides)
    return train_local(task, seeded_model(task, seed=0).state_dict(), data, **settings)


def test_same_seed_gives_identical_tensors(task, data):
    state_a, n_a, metrics_a = train(task, data, seed=11, epochs=2)
    state_b, n_b, metrics_b = train(task, data, seed=11, epochs=2)
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert (n_a, metrics_a) == (n_b, metrics_b)


def test_other_seed_gives_other_tensors(task, data):
    state_a, _, _ = train(task, data, seed=11)
    state_b, _, _ = train(task, data, seed=12)
    assert not torch.equal(state_a["0.weight"], state_b["0.weight"])


def test_training_learns_and_reports_weight_and_metrics(task, data):
    start = seeded_model(task, seed=0).state_dict()
    before = {k: v.clone() for k, v in start.items()}
    state, examples, metrics = train_local(
        task, start, data, epochs=3, batch_size=32, lr=0.1, momentum=0.9, seed=1
    )
    assert all(torch.equal(start[k], before[k]) for k in start)  # the input is not modified
    assert examples == len(data)
    assert metrics["steps"] == 3 * math.ceil(len(data) / 32)
    model = task.model()
    model.load_state_dict(state)
    assert task.evaluate(model, data)["accuracy"] > 0.8
    assert metrics["loss"] < task.evaluate(seeded_model(task, seed=0), data)["loss"]


def test_adam_and_weight_decay_are_deterministic_too(task, data):
    settings = {"optimizer": "adam", "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4}
    a, _, _ = train(task, data, seed=3, **settings)
    b, _, _ = train(task, data, seed=3, **settings)
    sgd, _, _ = train(task, data, seed=3)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["0.weight"], sgd["0.weight"])


def test_process_wide_torch_settings_are_restored(task, data):
    threads = torch.get_num_threads()
    torch.manual_seed(99)
    expected = torch.rand(4)
    torch.manual_seed(99)
    train(task, data, seed=5)
    assert torch.equal(torch.rand(4), expected)
    assert torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"optimizer": "lion"}, "Unknown optimizer 'lion'"),
        ({"lr": 0.0}, "learning rate"),
        ({"momentum": 1.0}, "momentum"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"epochs": 0}, "epochs and batch_size"),
        ({"batch_size": 0}, "epochs and batch_size"),
    ],
)
def test_bad_settings_raise_config_error(task, data, overrides, words):
    with pytest.raises(ConfigError, match=words):
        train(task, data, seed=1, **overrides)


def test_a_model_of_another_shape_is_refused(task, data):
    state = seeded_model(task, seed=0).state_dict()
    state["0.weight"] = torch.zeros(128, 65)
    with pytest.raises(TaskError, match="does not fit task 'digits-mlp'"):
        train_local(task, state, data, epochs=1, batch_size=32, lr=0.1, seed=0)
    del state["0.weight"]
    with pytest.raises(TaskError, match="does not fit"):
        train_local(task, state, data, epochs=1, batch_size=32, lr=0.1, seed=0)


def test_derive_seed_is_stable_and_separates_jobs_rounds_and_trainers():
    seed = derive_seed(1, 0, ADDRESS)
    assert seed == derive_seed(1, 0, ADDRESS.lower())
    assert 0 <= seed < 2**63
    others = {derive_seed(2, 0, ADDRESS), derive_seed(1, 1, ADDRESS), derive_seed(1, 0, "0x1")}
    assert seed not in others and len(others) == 3


def federated_accuracy(task, *, partition: str, trainers: int = 6) -> float:
    """Plain FedAvg with the example spec's settings; returns the final test accuracy."""
    spec = load_jobspec(EXAMPLE_SPEC)
    parts = [
        task.load_data(DatasetDecl(partition=partition, alpha=0.5, num_parts=trainers, part=i))
        for i in range(trainers)
    ]
    addresses = [f"0x{i + 1:040x}" for i in range(trainers)]
    state = seeded_model(task, seed=spec.seed).state_dict()
    for round_ in range(spec.rounds):
        updates = []
        for address, part in zip(addresses, parts, strict=True):
            new_state, examples, _ = train_local(
                task,
                state,
                part,
                **spec.training_settings(),
                seed=derive_seed(1, round_, address),
            )
            updates.append((address, new_state, examples))
        state = aggregate(spec.aggregation.rule, state, updates, spec.aggregation.params)
    model = task.model()
    model.load_state_dict(state)
    return task.evaluate(model, task.test_data())["accuracy"]


def test_example_fedavg_spec_reaches_093_with_six_iid_trainers(task):
    assert load_jobspec(EXAMPLE_SPEC).aggregation.rule == "fedavg"
    assert federated_accuracy(task, partition="iid") >= 0.93


def test_example_fedavg_spec_learns_on_dirichlet_half_parts(task):
    assert federated_accuracy(task, partition="dirichlet") >= 0.90
