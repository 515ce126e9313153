"""Which torch device a trainer trains on: ``device = "auto" | "cpu" | "cuda"`` in ``[trainer]``.

``auto`` takes the first CUDA device where torch finds one, else the CPU; ``cuda`` insists on a
CUDA device and refuses to start without one (rather than train ten times slower unnoticed).

Determinism: on the CPU a round gives the same bytes on every run and machine of the same CPU
family, and FedAvg reproduces a plain single-process PyTorch loop bit for bit. On CUDA, training
runs with ``torch.use_deterministic_algorithms(True)`` and ``CUBLAS_WORKSPACE_CONFIG=:4096:8``,
so the same GPU model, driver and torch build give the same bytes from run to run; another GPU
model, or the CPU, gives slightly different floats. Trainers on different devices therefore do
not reproduce each other's updates, which no protocol step asks of them: aggregation runs on
the CPU and is reproduced exactly by every aggregator.
"""

from __future__ import annotations

import os
from typing import Literal

import torch

from allmende.errors import ConfigError

Device = Literal["auto", "cpu", "cuda"]
DEVICES = ("auto", "cpu", "cuda")
CUBLAS_WORKSPACE = ":4096:8"  # what cuBLAS needs to be deterministic


def resolve_device(device: str) -> torch.device:
    """The torch device ``device`` names here; ConfigError for ``cuda`` without a CUDA device."""
    if device not in DEVICES:
        raise ConfigError(
            f"device {device!r} is not one of {', '.join(DEVICES)}; set [trainer] device in "
            "node.toml to one of them."
        )
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
        raise ConfigError(
            f"[trainer] device = 'cuda' but torch ({torch.__version__}, {build}) finds no CUDA "
            "device; install a CUDA build of torch on a machine with a GPU, or set device = "
            "'auto' or 'cpu' in node.toml."
        )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    return torch.device("cuda")
