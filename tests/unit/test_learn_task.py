"""The Task API: discovery by entry point, the digits-mlp task, dataset declarations."""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from allmende.errors import TaskError
from allmende.learn import task as task_module
from allmende.learn.digits import DigitsMLP
from allmende.learn.task import DatasetDecl, LocalData, installed_tasks, load_task, seeded_model


def test_digits_task_is_loaded_through_its_entry_point():
    assert installed_tasks()["digits-mlp"] == "allmende.learn.digits:DigitsMLP"
    task = load_task("digits-mlp")
    assert isinstance(task, DigitsMLP)
    assert task.name == "digits-mlp"
    assert task.version


def test_unknown_task_raises_task_error_listing_installed_tasks():
    with pytest.raises(
        TaskError, match=r"Task 'nope' is not installed on this node; installed tasks: .*digits-mlp"
    ):
        load_task("nope")
    with pytest.raises(LookupError):  # TaskError is also a LookupError
        load_task("nope")


class _FakeEntryPoint:
    def __init__(self, name, target):
        self.name, self.value, self._target = name, f"fake:{name}", target

    def load(self):
        return self._target


@pytest.mark.parametrize(
    ("target", "words"),
    [
        (lambda: object(), "does not produce an allmende Task"),
        (lambda: DigitsMLP(), "produces a task named 'digits-mlp'"),
        (lambda: 1 / 0, "failed to load"),
    ],
)
def test_broken_entry_points_raise_task_error(monkeypatch, target, words):
    monkeypatch.setattr(task_module, "_entry_points", lambda: {"x": _FakeEntryPoint("x", target)})
    with pytest.raises(TaskError, match=words):
        load_task("x")


def test_code_hash_is_sha256_of_the_task_module_source():
    expected = hashlib.sha256(Path(inspect.getfile(DigitsMLP)).read_bytes()).hexdigest()
    task = DigitsMLP()
    assert task.code_hash() == expected
    assert task.describe() == {"name": "digits-mlp", "version": task.version, "code_hash": expected}


def test_model_init_is_deterministic_given_the_seed():
    task = DigitsMLP()
    a, b, c = (seeded_model(task, seed=s).state_dict() for s in (5, 5, 6))
    assert [tuple(v.shape) for v in a.values()] == [(128, 64), (128,), (10, 128), (10,)]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["0.weight"], c["0.weight"])


def test_seeded_model_keeps_the_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    seeded_model(DigitsMLP(), seed=9)
    assert torch.equal(torch.rand(3), expected)


def test_digits_split_is_fixed_disjoint_and_scaled():
    task = DigitsMLP()
    train, test = task.train_data(), task.test_data()
    assert len(train) + len(test) == 1797
    assert 0.19 < len(test) / 1797 < 0.21
    for data in (train, test):
        assert data.inputs.dtype == torch.float32 and data.inputs.shape[1] == 64
        assert float(data.inputs.min()) >= 0.0 and float(data.inputs.max()) <= 1.0
        assert data.inputs.max() > 0.9
    assert sorted(torch.unique(test.targets).tolist()) == list(range(10))  # stratified
    train_rows = {tuple(row.tolist()) for row in train.inputs}
    test_rows = [tuple(row.tolist()) for row in test.inputs]
    overlap = sum(row in train_rows for row in test_rows)
    assert overlap < len(test_rows) // 10  # only genuinely duplicated images can coincide
    assert torch.equal(DigitsMLP().test_data().targets, test.targets)


def test_parts_of_the_training_set_are_disjoint_and_cover_it():
    task = DigitsMLP()
    parts = [task.load_data(DatasetDecl(num_parts=3, part=i, seed=4)) for i in range(3)]
    assert sum(len(p) for p in parts) == len(task.train_data())
    assert sorted(torch.cat([p.targets for p in parts]).tolist()) == sorted(
        task.train_data().targets.tolist()
    )


def test_evaluate_reports_accuracy_and_loss():
    task = DigitsMLP()
    data = task.test_data()
    model = seeded_model(task, seed=0)
    metrics = task.evaluate(model, data)
    assert set(metrics) == {"accuracy", "loss"}
    assert 0.0 <= metrics["accuracy"] <= 0.3  # an untrained model is near chance
    with torch.no_grad():
        model[2].weight.zero_()
        model[2].bias.copy_(torch.nn.functional.one_hot(torch.tensor(3), 10).float() * 10)
    assert task.evaluate(model, data)["accuracy"] == pytest.approx(
        float((data.targets == 3).float().mean())
    )


@pytest.mark.parametrize(
    "raw",
    [
        {"part": 3, "num_parts": 3},
        {"partition": "shards"},
        {"alpha": 0.0},
        {"num_parts": 0},
        {"seed": -1},
        {"parts": 2},
        {"num_parts": "3"},
    ],
)
def test_dataset_declaration_rejects_bad_values(raw):
    with pytest.raises(ValidationError):
        DatasetDecl.model_validate(raw)


def test_local_data_rejects_mismatched_lengths():
    with pytest.raises(TaskError, match="3 inputs but 2 targets"):
        LocalData(inputs=torch.zeros(3, 2), targets=torch.zeros(2))


def test_digits_are_read_exactly_as_scikit_learn_loads_them(monkeypatch):
    from sklearn.datasets import load_digits

    from allmende.learn import digits as digits_module

    reference = load_digits()
    table = digits_module.digits_table()
    assert table.dtype == reference.data.dtype and table.shape == (1797, 65)
    assert (table[:, :64] == reference.data).all()  # the same float64 values, not just close
    assert (table[:, 64].astype(reference.target.dtype) == reference.target).all()

    # where the file is not in its usual place, scikit-learn is asked for it, with the same rows
    monkeypatch.setattr(digits_module, "DIGITS_FILE", ("no", "such", "file.csv.gz"))
    assert (digits_module.digits_table() == table).all()
