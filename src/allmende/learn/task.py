"""The Task API: the ML code a job names and a node operator installs.

A task is a Python class registered under the entry-point group ``allmende.tasks``. It knows how
to build its model, load the node's local data from the operator's declared
:data:`~allmende.learn.dataset.DataSource`, compute the training loss of a batch, and evaluate a
model. *No code travels with a job*: a node runs only the tasks installed in its own environment,
found by :func:`load_task`.

What a job may say about the data and the model (a table's feature columns, the classes, an
image size) is the job spec's ``[data]`` table. Each task validates it with its own schema,
:attr:`Task.Options` (a pydantic model; none by default), and :meth:`Task.with_options` returns
the task configured by it: the options are the only thing a job can change in a task.

Batches are ``(inputs, targets)`` pairs of tensors; :class:`LocalData` holds one split.
See ``docs/tasks.md`` for how to write and install a task.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, ClassVar, Self

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import Tensor, nn

from allmende.errors import TaskError
from allmende.learn.dataset import DatasetDecl, DataSource

__all__ = ["DataSource", "DatasetDecl", "LocalData", "NoOptions", "Task", "TaskOptions"]

ENTRY_POINT_GROUP = "allmende.tasks"


class TaskOptions(BaseModel):
    """Base of a task's :attr:`Task.Options`: unknown keys and wrong types are refused."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class NoOptions(TaskOptions):
    """The options of a task that takes none: the job spec's ``[data]`` table must be empty."""

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
    Options: ClassVar[type[TaskOptions]] = NoOptions
    """The schema of the job spec's ``[data]`` table for this task."""
    options: TaskOptions | None = None
    """The job's options, set by :meth:`with_options`; None on a task no job configured."""

    @abstractmethod
    def model(self) -> nn.Module:
        """A freshly initialised model (deterministic given torch's seed)."""

    @abstractmethod
    def load_data(self, dataset: DataSource) -> LocalData:
        """The node's local training data, as the operator declared it (and the job's options
        select from it); :class:`~allmende.errors.DataError` naming the file and row at fault."""

    @abstractmethod
    def test_data(self) -> LocalData:
        """The held-out split every node evaluates on; TaskError where the task has none
        (a task on the operators' own data: evaluate with :meth:`load_data` of a test file)."""

    def epoch_batches(
        self, data: LocalData, *, batch_size: int, generator: torch.Generator
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """One local epoch's batches, in training order, drawn with ``generator`` (seeded with
        the round's derived seed). By default a permutation of all of ``data``, cut into
        batches of ``batch_size``; a task over a stream (``byte-gpt``) draws windows instead."""
        order = torch.randperm(len(data), generator=generator)  # (n,)
        for start in range(0, len(data), batch_size):
            yield data.batch(order[start : start + batch_size])

    @abstractmethod
    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        """The scalar training loss of ``model`` on one batch."""

    @abstractmethod
    def evaluate(self, model: nn.Module, data: LocalData) -> dict[str, float]:
        """Metrics of ``model`` on ``data``; at least ``accuracy`` and ``loss``."""

    def with_options(self, raw: Mapping[str, Any]) -> Self:
        """A copy of this task configured by a job spec's ``[data]`` table ``raw``.

        Raises :class:`TaskError` with one line naming the bad field (``data.classes``) when
        :attr:`Options` refuses it.
        """
        try:
            parsed = self.Options.model_validate(dict(raw))
        except ValidationError as exc:
            error = exc.errors()[0]
            loc = [str(part) for part in error["loc"]]
            field = f"'data.{'.'.join(loc)}'" if loc else "[data]"
            message = str(error["msg"]).removeprefix("Value error, ")
            raise TaskError(
                f"job spec: {field} is refused by task '{self.name}': {message}; see the "
                "task's documentation for its [data] options."
            ) from None
        configured = copy.copy(self)
        configured.options = parsed
        return configured

    def needs_options(self) -> bool:
        """True when the task cannot build a model or read data before a job's ``[data]``
        options configure it (its :attr:`Options` has required fields)."""
        if self.options is not None:
            return False
        try:
            self.Options()
        except ValidationError:
            return True
        return False

    def configured(self) -> TaskOptions:
        """The job's options; TaskError when no job configured this task and it needs some."""
        if self.options is not None:
            return self.options
        try:
            self.options = self.Options()
        except ValidationError:
            raise TaskError(
                f"Task '{self.name}' needs the job spec's [data] table (its options); it "
                "cannot build a model or load data without a job."
            ) from None
        return self.options

    def data_key(self) -> str:
        """Names the local data this configured task loads: the task and its options."""
        options = self.options.model_dump(mode="json") if self.options is not None else {}
        return f"{self.name}/{json.dumps(options, sort_keys=True)}"

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


# The tasks this package ships. They are declared as entry points in pyproject.toml too; listed
# here as well, a source checkout on PYTHONPATH (or an editable install made before a task was
# added) finds them. An installed entry point of the same name takes precedence.
BUILTIN_TASKS = {
    "digits-mlp": "allmende.learn.digits:DigitsMLP",
    "tabular-mlp": "allmende.learn.tabular:TabularMLP",
    "image-cnn": "allmende.learn.images:ImageCNN",
    "byte-gpt": "allmende.learn.text:ByteGPTTask",
}


def _entry_points() -> dict[str, EntryPoint]:
    found = {
        name: EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)
        for name, value in BUILTIN_TASKS.items()
    }
    found.update({ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)})
    return found


def installed_tasks() -> dict[str, str]:
    """Every task installed on this node: name -> ``module:Class`` (nothing is imported)."""
    return {name: ep.value for name, ep in sorted(_entry_points().items())}


def load_task(name: str, *, data: Mapping[str, Any] | None = None) -> Task:
    """Import and instantiate the installed task ``name``, configured by a job spec's ``[data]``
    table ``data`` when given (see :meth:`Task.with_options`).

    Raises :class:`TaskError` when no such task is installed, the entry point does not
    produce a :class:`Task` with that name, or the task refuses ``data``.
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
    return task if data is None else task.with_options(data)


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
