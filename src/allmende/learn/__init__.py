"""Tasks, deterministic local training, aggregation rules.

The built-in task :class:`allmende.learn.digits.DigitsMLP` is found through its entry point
(:func:`load_task`), so importing this package does not import scikit-learn.
"""

from __future__ import annotations

from allmende.learn.aggregate import RULES, aggregate, check_update, delta_norm, rule_params
from allmende.learn.task import (
    DatasetDecl,
    LocalData,
    Task,
    installed_tasks,
    load_task,
    seeded_model,
)
from allmende.learn.train import derive_seed, train_local

__all__ = [
    "RULES",
    "DatasetDecl",
    "LocalData",
    "Task",
    "aggregate",
    "check_update",
    "delta_norm",
    "derive_seed",
    "installed_tasks",
    "load_task",
    "rule_params",
    "seeded_model",
    "train_local",
]
