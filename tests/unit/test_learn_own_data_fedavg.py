"""FedAvg of ``tabular-mlp`` and ``image-cnn`` on operators' files reproduces a plain PyTorch loop.

Allmende's path: each trainer's task reads its own file (a CSV, a PNG folder), ``train_local``
trains it, ``aggregate("fedavg")`` averages. The reference is written out with plain PyTorch
from the same numbers (parsed with NumPy, not by Allmende's readers): the final models must be
the same bytes, and another trainer's data must change them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from allmende.learn.aggregate import aggregate
from allmende.learn.dataset import ImageSource, TableSource
from allmende.learn.task import load_task, seeded_state
from allmende.learn.train import derive_seed, train_local
from datafiles import IMAGE_OPTIONS, TABLE_OPTIONS, digits_rows, write_csv, write_pngs

TRAINERS = 3
ROUNDS = 2
LR = 0.05
BATCH = 16
JOB_ID = 4
ADDRESSES = [f"0x{i + 10:040x}" for i in range(TRAINERS)]


@pytest.fixture(autouse=True)
def _restore_torch_settings():
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def allmende_fedavg(task, sources) -> dict[str, torch.Tensor]:
    state = seeded_state(task, seed=1)
    datasets = [task.load_data(source) for source in sources]
    for round_ in range(ROUNDS):
        updates = []
        for address, data in zip(ADDRESSES, datasets, strict=True):
            new, examples, _ = train_local(
                task, state, data, epochs=1, batch_size=BATCH, lr=LR, momentum=0.9,
                seed=derive_seed(JOB_ID, round_, address),
            )  # fmt: skip
            updates.append((address, new, examples))
        state = aggregate("fedavg", state, updates, {})
    return state


def plain_fedavg(task, parts: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, torch.Tensor]:
    """The same job with plain PyTorch: SGD with momentum, weighted by examples, address order."""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(1)
    state = {k: v.detach().clone() for k, v in task.model().state_dict().items()}
    tensors = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in parts]
    for round_ in range(ROUNDS):
        trained = []
        for address, (x, y) in sorted(zip(ADDRESSES, tensors, strict=True)):
            seed = derive_seed(JOB_ID, round_, address)
            torch.manual_seed(seed)
            model = task.model()
            model.load_state_dict(state)
            sgd = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, foreach=False)
            order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
            for start in range(0, len(y), BATCH):
                rows = order[start : start + BATCH]
                loss = torch.nn.functional.cross_entropy(model(x[rows]), y[rows])
                sgd.zero_grad()
                loss.backward()
                sgd.step()
            trained.append((len(y), model.state_dict()))
        total = sum(n for n, _ in trained)
        for key in state:
            acc = torch.zeros_like(state[key])
            for n, trained_state in trained:
                acc = acc + n * trained_state[key]
            state[key] = acc / total
    return state


def same_bytes(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_tabular_fedavg_on_csv_files_is_plain_pytorch_bit_for_bit(tmp_path: Path) -> None:
    task = load_task("tabular-mlp", data=TABLE_OPTIONS)
    sources, parts = [], []
    for i in range(TRAINERS):
        pixels, labels = digits_rows(i, 6)  # half of the training split, in three parts
        sources.append(TableSource(kind="table", path=write_csv(tmp_path / f"{i}.csv", pixels,
                                                                labels)))  # fmt: skip
        normalised = ((pixels.astype(np.float64) - 5.0) / 6.0).astype(np.float32)
        parts.append((normalised, labels))
    ours = allmende_fedavg(task, sources)
    assert same_bytes(ours, plain_fedavg(task, parts))
    swapped = [sources[0], sources[0], sources[2]]
    assert not same_bytes(allmende_fedavg(task, swapped), ours)


def test_image_cnn_fedavg_on_png_folders_is_plain_pytorch_bit_for_bit(tmp_path: Path) -> None:
    task = load_task("image-cnn", data=IMAGE_OPTIONS)
    sources, parts = [], []
    for i in range(TRAINERS):
        pixels, labels = digits_rows(i, 9)
        root = write_pngs(tmp_path / f"imgs{i}", pixels, labels)
        sources.append(ImageSource(kind="images", path=root))
        order = np.lexsort((np.arange(len(labels)), labels))  # class folders, then file names
        grey = np.rint(pixels[order] * 255 / 16).astype(np.float32) / 255  # the PNG's bytes
        parts.append((grey.reshape(-1, 1, 8, 8), labels[order]))
    ours = allmende_fedavg(task, sources)
    assert same_bytes(ours, plain_fedavg(task, parts))
    assert not same_bytes(allmende_fedavg(task, sources[::-1]), ours)
