"""The Task API: the ML code a job names and a node operator installs.

A task is a Python class registered under the entry-point group ``allmende.tasks``. It knows how
to build its model, load the node's local data from the operator's :class:`DatasetDecl`, compute
the training loss of a batch, and evaluate a model. *No code travels with a job*: a node runs only
the tasks installed in its own environment, found by :func:`load_task`.

Batches are ``(inputs, targets)`` pairs of tensors; :class:`LocalData` holds one split.
"""

from __future__ import annotations

import hashlib
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import torch
from torch import Tensor, nn

from allmende.errors import TaskError
from allmende.learn.dataset import DatasetDecl

ENTRY_POINT_GROUP = "allmende.tasks"

@dataclass(frozen=True)
class LocalData:
    """One split of a task's data: ``inputs`` ``(n, ...)`` and ``targets`` ``(n, ...)``."""

    inputs: Tensor
    targets: Tensor

    def __post_init__(self) -> None:
        if self.inputs.shape[0] != self.targets.shape[0]:
            raise TaskError(
                f"A task returned {self.inputs.shape[0]} inputs but {self.targets.shape[0]} "
                "targets; fix the task's data loading so both have one row per example."
            )

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def batch(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        """The examples at ``indices`` as an ``(inputs, targets)`` batch."""
        return self.inputs[indices], self.targets[indices]


class Task(ABC):
    """Base of every task. Subclasses set ``name`` and ``version`` and implement the methods.

    ``model()`` must build its parameters only from torch's global RNG, so that the same
    ``torch.manual_seed`` gives the same initial model on every node.
    """

    name: str = ""
    version: str = ""

    @abstractmethod
    def model(self) -> nn.Module:
        """A freshly initialised model (deterministic given torch's seed)."""

    @abstractmethod
    def load_data(self, dataset: DatasetDecl) -> LocalData:
        """The node's local training data, as the operator declared it."""

    @abstractmethod
    def test_data(self) -> LocalData:
        """The held-out split every node evaluates on."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        """The scalar training loss of ``model`` on one batch."""

    @abstractmethod
    def evaluate(self, model: nn.Module, data: LocalData) -> dict[str, float]:
        """Metrics of ``model`` on ``data``; at least ``accuracy`` and ``loss``."""

    def code_hash(self) -> str:
        """SHA-256 (hex) of the source file of the module that defines this task class."""
        module = sys.modules[type(self).__module__]
        source = getattr(module, "__file__", None)
        if source is None:
            raise TaskError(
                f"Task '{self.name}' has no source file to hash; install it as a regular "
                "Python package."
            )
        return hashlib.sha256(Path(source).read_bytes()).hexdigest()

    def describe(self) -> dict[str, str]:
        """``name``, ``version`` and ``code_hash``: what a node advertises about this task."""
        return {"name": self.name, "version": self.version, "code_hash": self.code_hash()}


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def installed_tasks() -> dict[str, str]:
    """Every task installed on this node: name -> ``module:Class`` (nothing is imported)."""
    return {name: ep.value for name, ep in sorted(_entry_points().items())}


def load_task(name: str) -> Task:
    """Import and instantiate the installed task ``name``.

    Raises :class:`TaskError` when no such task is installed, or the entry point does not
    produce a :class:`Task` with that name.
    """
    found = _entry_points()
    if name not in found:
        listed = ", ".join(sorted(found)) or "none"
        raise TaskError(
            f"Task '{name}' is not installed on this node; installed tasks: {listed}. "
            f"Install the package that provides it (entry-point group '{ENTRY_POINT_GROUP}')."
        )
    try:
        factory = found[name].load()
        task = factory()
    except Exception as exc:
        raise TaskError(
            f"Task '{name}' is installed but failed to load ({exc}); reinstall its package."
        ) from exc
    if not isinstance(task, Task):
        raise TaskError(
            f"The entry point of task '{name}' ({found[name].value}) does not produce an "
            "allmende Task; fix the package that provides it."
        )
    if task.name != name:
        raise TaskError(
            f"The entry point '{name}' produces a task named '{task.name}'; the names must "
            "match, fix the package that provides it."
        )
    return task


def seeded_model(task: Task, *, seed: int) -> nn.Module:
    """``task.model()`` initialised under ``torch.manual_seed(seed)``; the global RNG is kept."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return task.model()


def state_of(model: nn.Module) -> dict[str, Tensor]:
    """The model's tensors by name, detached copies that later training does not touch."""
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def seeded_state(task: Task, *, seed: int) -> dict[str, Tensor]:
    """:func:`state_of` of :func:`seeded_model`: the job's initial model as tensors."""
    return state_of(seeded_model(task, seed=seed))
