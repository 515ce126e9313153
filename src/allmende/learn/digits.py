"""``digits-mlp``: the built-in task, 8x8 handwritten digits with a small MLP.

Data is scikit-learn's bundled digits (1,797 images, no download), read from the file
``load_digits`` reads, without importing scikit-learn (a second of every node's start-up),
pixels scaled to [0, 1]. A stratified 80/20 train/test split is fixed in code (``SPLIT_SEED``),
so every node has the same held-out set; a node's training data is one part of a seeded
partition of the training split (see :mod:`allmende.learn.partition`).
"""

from __future__ import annotations

import gzip
import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from allmende.errors import DataError
from allmende.learn.dataset import DatasetDecl, DataSource
from allmende.learn.partition import partition_indices
from allmende.learn.task import LocalData, Task

SPLIT_SEED = 20_240_601
TEST_FRACTION = 0.2
PIXEL_MAX = 16.0
N_FEATURES = 64
N_HIDDEN = 128
N_CLASSES = 10


DIGITS_FILE = ("datasets", "data", "digits.csv.gz")  # inside the scikit-learn package


def digits_table() -> np.ndarray:
    """scikit-learn's digits as one float64 table ``(1797, 65)``: 64 pixels, then the label.

    Read exactly as ``sklearn.datasets.load_digits`` reads it (``np.loadtxt`` of the gzipped
    CSV it ships), found without importing scikit-learn; where the file is not at that place,
    ``load_digits`` itself is asked.
    """
    spec = importlib.util.find_spec("sklearn")
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location).joinpath(*DIGITS_FILE)
        if path.is_file():
            with gzip.open(path, mode="rt", encoding="utf-8") as text:
                return np.loadtxt(text, delimiter=",")
    from sklearn.datasets import load_digits

    digits = load_digits()
    return np.column_stack([digits.data, digits.target.astype(np.float64)])


@lru_cache(maxsize=1)
def _split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_x, train_y, test_x, test_y): per label, a seeded ``TEST_FRACTION`` goes to test."""
    table = digits_table()  # (1797, 65)
    features = (table[:, :N_FEATURES] / PIXEL_MAX).astype(np.float32)  # (1797, 64) in [0, 1]
    labels = table[:, N_FEATURES].astype(np.int64)  # (1797,)
    rng = np.random.default_rng(SPLIT_SEED)
    test_rows: list[np.ndarray] = []
    for label in range(N_CLASSES):
        members = rng.permutation(np.flatnonzero(labels == label))
        test_rows.append(members[: round(len(members) * TEST_FRACTION)])
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[np.concatenate(test_rows)] = True
    return features[~is_test], labels[~is_test], features[is_test], labels[is_test]


def _as_data(features: np.ndarray, labels: np.ndarray) -> LocalData:
    return LocalData(
        inputs=torch.from_numpy(features.copy()), targets=torch.from_numpy(labels.copy())
    )


class DigitsMLP(Task):
    """MLP 64-128-10 (Linear, ReLU, Linear) with cross-entropy on scikit-learn's digits."""

    name = "digits-mlp"
    version = "1.0.0"

    def model(self) -> nn.Module:
        return nn.Sequential(
            nn.Linear(N_FEATURES, N_HIDDEN),  # (batch, 64) -> (batch, 128)
            nn.ReLU(),
            nn.Linear(N_HIDDEN, N_CLASSES),  # (batch, 128) -> (batch, 10) logits
        )

    def load_data(self, dataset: DataSource) -> LocalData:
        if not isinstance(dataset, DatasetDecl):
            raise DataError(
                f"Task 'digits-mlp' trains on the digits it ships, but this node declares "
                f"kind = '{dataset.kind}' in [trainer.dataset]; declare a partition there, or "
                "allow tasks that train on such data (tabular-mlp, image-cnn)."
            )
        train_x, train_y, _, _ = _split()
        parts = partition_indices(
            train_y,
            scheme=dataset.partition,
            num_parts=dataset.num_parts,
            alpha=dataset.alpha,
            seed=dataset.seed,
        )
        rows = parts[dataset.part]
        return _as_data(train_x[rows], train_y[rows])

    def train_data(self) -> LocalData:
        """The whole training split (what a single-process baseline trains on)."""
        train_x, train_y, _, _ = _split()
        return _as_data(train_x, train_y)

    def test_data(self) -> LocalData:
        _, _, test_x, test_y = _split()
        return _as_data(test_x, test_y)

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        inputs, targets = batch  # (batch, 64), (batch,)
        return F.cross_entropy(model(inputs), targets)

    def evaluate(self, model: nn.Module, data: LocalData) -> dict[str, float]:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            logits = model(data.inputs)  # (n, 10)
            loss = F.cross_entropy(logits, data.targets)
            correct = (logits.argmax(dim=1) == data.targets).sum()
        model.train(was_training)
        return {"accuracy": float(correct) / len(data), "loss": float(loss)}
