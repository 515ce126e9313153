"""Operators' own data files for tests: digits as CSV/Parquet tables and as PNG folders.

The rows are scikit-learn's digits (the training split of ``digits-mlp``), written out the way
an operator's export would hold them: a CSV with a header (pixels ``p0``..``p63`` as integers
0..16 and a ``label`` column), or one 8x8 grey PNG per example in a folder named by its class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from allmende.learn.digits import _split

N_PIXELS = 64
FEATURES = [f"p{i}" for i in range(N_PIXELS)]
CLASSES = [str(c) for c in range(10)]
# The job owner fixes the normalisation in the spec; these are digits' rough pixel statistics.
TABLE_OPTIONS = {
    "features": FEATURES,
    "label": "label",
    "classes": CLASSES,
    "mean": [5.0] * N_PIXELS,
    "std": [6.0] * N_PIXELS,
    "hidden": 32,
}
IMAGE_OPTIONS = {"classes": CLASSES, "size": 8, "channels": 1, "width": 4}


def digits_rows(part: int, parts: int) -> tuple[np.ndarray, np.ndarray]:
    """Every ``parts``-th training row from ``part``: pixels (n, 64) as 0..16 ints, labels.

    Copies: a test may spoil them, and the task's own split (cached) must stay as it is."""
    train_x, train_y, _, _ = _split()
    pixels = np.rint(train_x[part::parts] * 16).astype(np.int64)  # (n, 64)
    return pixels, train_y[part::parts].copy()


def test_rows() -> tuple[np.ndarray, np.ndarray]:
    """The held-out split: pixels (n, 64) as 0..16 ints, labels (n,)."""
    _, _, test_x, test_y = _split()
    return np.rint(test_x * 16).astype(np.int64), test_y.copy()


def write_csv(path: Path, pixels: np.ndarray, labels: np.ndarray) -> Path:
    lines = [",".join([*FEATURES, "label"])]
    lines += [",".join([*map(str, row), str(y)]) for row, y in zip(pixels, labels, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_parquet(path: Path, pixels: np.ndarray, labels: np.ndarray) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {name: pixels[:, i] for i, name in enumerate(FEATURES)}
    pq.write_table(pa.table({**columns, "label": labels.astype(np.int64)}), path)
    return path


def write_pngs(root: Path, pixels: np.ndarray, labels: np.ndarray) -> Path:
    """``root/<label>/<index>.png``, 8x8 grey, 0..16 scaled to 0..255."""
    for i, (row, y) in enumerate(zip(pixels, labels, strict=True)):
        folder = root / str(y)
        folder.mkdir(parents=True, exist_ok=True)
        grey = np.rint(row.reshape(8, 8) * 255 / 16).astype(np.uint8)
        Image.fromarray(grey, mode="L").save(folder / f"{i:05d}.png")
    return root
