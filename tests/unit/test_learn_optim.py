"""LocalOptimizer gives torch.optim's bytes step by step; training never imports the compiler."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from allmende.errors import ConfigError
from allmende.learn.optim import LocalOptimizer

SETTINGS = [
    ("sgd", 0.1, 0.0, 0.0),
    ("sgd", 0.05, 0.9, 0.0),
    ("sgd", 0.05, 0.9, 1e-3),
    ("adam", 0.01, 0.9, 0.0),
    ("adam", 0.003, 0.5, 1e-2),
]


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Linear(16, 8)
        self.head = torch.nn.Linear(8, 4)
        self.unused = torch.nn.Linear(4, 4)  # never in the forward pass: its grad stays None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.body(x)))


def reference(name: str, params, lr: float, momentum: float, weight_decay: float):
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=momentum, weight_decay=weight_decay, foreach=False
        )
    return torch.optim.Adam(
        params, lr=lr, betas=(momentum, 0.999), weight_decay=weight_decay, foreach=False
    )


@pytest.mark.parametrize(("name", "lr", "momentum", "weight_decay"), SETTINGS)
def test_every_step_equals_torch_optim(name, lr, momentum, weight_decay) -> None:
    torch.manual_seed(5)
    ours, theirs = Net(), Net()
    theirs.load_state_dict(ours.state_dict())
    mine = LocalOptimizer(
        name, list(ours.parameters()), lr=lr, momentum=momentum, weight_decay=weight_decay
    )
    torch_opt = reference(name, list(theirs.parameters()), lr, momentum, weight_decay)
    data = torch.randn(12, 32, 16)
    targets = torch.randint(0, 4, (12, 32))
    for x, y in zip(data, targets, strict=True):
        for model, opt in ((ours, mine), (theirs, torch_opt)):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        expected = theirs.state_dict()
        for key, value in ours.state_dict().items():
            assert torch.equal(value, expected[key]), key  # bit for bit, after every step
    assert all(p.grad is None for p in ours.unused.parameters())


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"name": "lion"}, "Unknown optimizer 'lion'"),
        ({"lr": 0.0}, "learning rate must be > 0"),
        ({"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
        ({"weight_decay": -1.0}, "weight_decay must be >= 0"),
    ],
)
def test_bad_settings_are_refused(settings: dict, message: str) -> None:
    arguments = {"name": "sgd", "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0, **settings}
    name = arguments.pop("name")
    with pytest.raises(ConfigError, match=message):
        LocalOptimizer(name, list(Net().parameters()), **arguments)


def test_local_training_does_not_import_the_compiler() -> None:
    code = (
        "import sys, torch\n"
        "from allmende.learn.dataset import DatasetDecl\n"
        "from allmende.learn.task import load_task, state_of\n"
        "from allmende.learn.train import deterministic_torch, train_local\n"
        "task = load_task('digits-mlp')\n"
        "data = task.load_data(DatasetDecl(partition='iid', num_parts=8, part=0, seed=0))\n"
        "for name in ('sgd', 'adam'):\n"
        "    train_local(task, state_of(task.model()), data, epochs=1, batch_size=32, lr=0.1,\n"
        "                optimizer=name, momentum=0.9, seed=1)\n"
        "with deterministic_torch(1):\n"
        "    assert torch.are_deterministic_algorithms_enabled()\n"
        "assert not torch.are_deterministic_algorithms_enabled()\n"
        "print(sorted(m for m in ('torch._dynamo', 'torch._inductor') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]"
