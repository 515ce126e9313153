"""``tabular-mlp``: an MLP classifier on any table the operators declare (CSV or Parquet).

The job spec's ``[data]`` table says which columns are the features, which one is the label and
which classes it has, and how every feature is normalised: ``(x - mean) / std`` with ``mean`` and
``std`` given per feature *in the spec*, so every trainer scales its rows the same way (a node
that scaled by its own statistics would train a different model on the same numbers)::

    task = "tabular-mlp"
    [data]
    features = ["age", "pressure", "glucose"]
    label = "outcome"
    classes = ["healthy", "ill"]
    mean = [52.0, 120.0, 5.5]
    std = [12.0, 15.0, 1.2]
    hidden = 32

Each node declares its own table in ``[trainer.dataset]`` (``kind = "table"``). A row with a
missing or non-numeric feature, or a label outside ``classes``, is an error naming the file and
the line: the node refuses the job rather than train on a guess. The task has no shared test
split (the data is the operators'); evaluate a model with :meth:`TabularMLP.load_data` of a test
table.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from allmende.errors import DataError, TaskError
from allmende.learn.classify import Classifier
from allmende.learn.dataset import DataSource, TableSource
from allmende.learn.sources import read_table, table_features, table_labels
from allmende.learn.task import LocalData, TaskOptions

# Bounds on what a job may ask for: a job owner may be hostile, and the model is built on
# every trainer from these numbers.
MAX_FEATURES = 4096
MAX_CLASSES = 1000
MAX_HIDDEN = 4096
DEFAULT_HIDDEN = 64


class TableOptions(TaskOptions):
    """The ``[data]`` table of a ``tabular-mlp`` job."""

    features: list[str] = Field(min_length=1, max_length=MAX_FEATURES)
    """The feature columns, in the order the model reads them."""
    label: str = Field(min_length=1)
    """The column holding each row's class."""
    classes: list[str] = Field(min_length=2, max_length=MAX_CLASSES)
    """Every class, in the order of the model's outputs; a label outside them is an error."""
    mean: list[float]
    """Per feature, the value subtracted before training (the same on every node)."""
    std: list[float]
    """Per feature, the scale divided by (> 0)."""
    hidden: int = Field(default=DEFAULT_HIDDEN, ge=1, le=MAX_HIDDEN)
    """Width of the hidden layer."""

    @model_validator(mode="after")
    def _consistent(self) -> TableOptions:
        for name, names in (("features", self.features), ("classes", self.classes)):
            if len(set(names)) != len(names):
                raise ValueError(f"{name} names one entry twice; list each once")
        if self.label in self.features:
            raise ValueError(f"the label column '{self.label}' is also listed as a feature")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) != len(self.features):
                raise ValueError(
                    f"{name} has {len(values)} values for {len(self.features)} features; give "
                    "one per feature"
                )
            if not all(math.isfinite(v) for v in values):
                raise ValueError(f"{name} holds a value that is not a finite number")
        if not all(v > 0 for v in self.std):
            raise ValueError("every std must be > 0")
        return self


class TabularMLP(Classifier):
    """MLP features-hidden-classes (Linear, ReLU, Linear) with cross-entropy on a declared table."""

    name = "tabular-mlp"
    version = "1.0.0"
    Options = TableOptions

    @property
    def table(self) -> TableOptions:
        options = self.configured()
        assert isinstance(options, TableOptions)
        return options

    def model(self) -> nn.Module:
        options = self.table
        return nn.Sequential(
            nn.Linear(len(options.features), options.hidden),  # (batch, f) -> (batch, hidden)
            nn.ReLU(),
            nn.Linear(options.hidden, len(options.classes)),  # (batch, hidden) -> (batch, c)
        )

    def load_data(self, dataset: DataSource) -> LocalData:
        if not isinstance(dataset, TableSource):
            raise DataError(
                f"Task 'tabular-mlp' trains on a table, but this node declares "
                f"kind = '{dataset.kind}' in [trainer.dataset]; declare kind = \"table\" and "
                "the path of a CSV or Parquet file."
            )
        options = self.table
        table = read_table(dataset)
        raw = table_features(table, options.features, source=dataset)  # (n, f) float64
        mean = np.asarray(options.mean, dtype=np.float64)  # (f,)
        std = np.asarray(options.std, dtype=np.float64)  # (f,)
        features = ((raw - mean) / std).astype(np.float32)  # (n, f), scaled as the spec says
        labels = table_labels(table, options.label, options.classes, source=dataset)  # (n,)
        return LocalData(inputs=torch.from_numpy(features), targets=torch.from_numpy(labels))

    def test_data(self) -> LocalData:
        raise TaskError(
            "Task 'tabular-mlp' has no shared test split: the data is the operators'. Evaluate "
            "a model on a test table with load_data."
        )
