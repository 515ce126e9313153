"""``table-logreg``: multinomial logistic regression on a table each node declares.

A third-party task: installed with ``pip``, found through the ``allmende.tasks`` entry point in
this package's ``pyproject.toml``. Its job spec ``[data]`` table::

    [data]
    features = ["x0", "x1"]
    label = "y"
    classes = ["no", "yes"]
    scale = 10.0          # every feature is divided by this (the same on every node)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from allmende.errors import DataError, TaskError
from allmende.learn.dataset import DataSource, TableSource
from allmende.learn.sources import read_table, table_features, table_labels
from allmende.learn.task import LocalData, Task, TaskOptions


class LogRegOptions(TaskOptions):
    """What a job may say: the columns, the classes, one scale for all features."""

    features: list[str] = Field(min_length=1, max_length=1024)
    label: str
    classes: list[str] = Field(min_length=2, max_length=100)
    scale: float = Field(default=1.0, gt=0)


class TableLogReg(Task):
    name = "table-logreg"
    version = "0.1.0"
    Options = LogRegOptions

    def _options(self) -> LogRegOptions:
        options = self.configured()
        assert isinstance(options, LogRegOptions)
        return options

    def model(self) -> nn.Module:
        o = self._options()
        return nn.Linear(len(o.features), len(o.classes))  # (batch, f) -> (batch, classes)

    def load_data(self, dataset: DataSource) -> LocalData:
        if not isinstance(dataset, TableSource):
            raise DataError(f"Task 'table-logreg' needs a table, not kind = '{dataset.kind}'.")
        o = self._options()
        table = read_table(dataset)
        features = table_features(table, o.features, source=dataset) / o.scale  # (n, f)
        labels = table_labels(table, o.label, o.classes, source=dataset)  # (n,)
        return LocalData(
            inputs=torch.from_numpy(features.astype(np.float32)),
            targets=torch.from_numpy(labels),
        )

    def test_data(self) -> LocalData:
        raise TaskError("Task 'table-logreg' has no shared test split; use load_data.")

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        inputs, targets = batch
        return F.cross_entropy(model(inputs), targets)

    def evaluate(self, model: nn.Module, data: LocalData) -> dict[str, float]:
        with torch.no_grad():
            logits = model(data.inputs)
            accuracy = float((logits.argmax(dim=1) == data.targets).float().mean())
            return {"accuracy": accuracy, "loss": float(F.cross_entropy(logits, data.targets))}
