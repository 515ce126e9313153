"""Deterministic local training: the same (model, data, settings, seed) gives the same bytes.

Determinism, on CPU:

- the shuffle order comes from a ``torch.Generator`` seeded with ``seed``, and torch's global
  RNG is forked and seeded with it too (for tasks that use dropout); the caller's RNG is restored;
- while training, ``torch.use_deterministic_algorithms(True)`` is on and torch runs on one
  intra-op thread, because a matrix product split over a different number of threads may round
  differently. Both are process-wide settings, so they are restored afterwards, and while
  they are switched no other torch work of the process may run: :data:`TORCH_LOCK` says who
  may. :func:`train_local` and :func:`~allmende.learn.aggregate.aggregate` take it themselves;
  other torch work that runs beside them in a process (building a model, seeding one) holds it
  too.

Bit-identical results are guaranteed on the same machine and torch build; across CPUs with
different vector units (AVX2 vs AVX-512) the kernels of a matrix product may differ.

The result is the trainer's new *model* (FedAvg semantics); aggregation rules take it from there
(see :mod:`allmende.learn.aggregate`).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from allmende.errors import ConfigError, TaskError
from allmende.learn.devices import resolve_device
from allmende.learn.optim import LocalOptimizer
from allmende.learn.task import LocalData, Task, state_of

SEED_BITS = 63
# One torch job at a time in a process: training switches process-wide torch settings (threads,
# deterministic algorithms, the global RNG). Re-entrant, so a holder may call train_local.
TORCH_LOCK = threading.RLock()


def derive_seed(job_id: int, round: int, address: str) -> int:
    """The training seed of ``address`` in round ``round`` of job ``job_id`` (sha256 based).

    The address is lower-cased first, so checksummed and plain spellings agree.
    """
    message = f"allmende/train-seed/{job_id}/{round}/{address.lower()}".encode()
    digest = hashlib.sha256(message).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - SEED_BITS)


@contextmanager
def deterministic_torch(seed: int) -> Iterator[None]:
    """One thread, deterministic algorithms and a seeded global RNG; all restored on exit.
    Holds :data:`TORCH_LOCK` throughout."""
    with TORCH_LOCK, torch.random.fork_rng(devices=[]):
        threads = torch.get_num_threads()
        was_deterministic = torch.are_deterministic_algorithms_enabled()
        torch.manual_seed(seed)
        torch.set_num_threads(1)
        _use_deterministic_algorithms(True)
        try:
            yield
        finally:
            _use_deterministic_algorithms(was_deterministic)
            torch.set_num_threads(threads)


def _use_deterministic_algorithms(mode: bool) -> None:
    """``torch.use_deterministic_algorithms(mode)`` for eager code.

    The public function also sets the flag in the compiler's config, and imports the compiler
    (``torch._inductor``, then ``torch._dynamo`` and sympy: seconds of a node's start-up) to do
    so. Local training never compiles, so only the flag eager kernels read is set, through the
    call the public function makes; where this torch build lacks it, the public function.
    """
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None:
        torch.use_deterministic_algorithms(mode)
    else:
        setter(mode, warn_only=False)


def train_local(
    task: Task,
    model_state: dict[str, Tensor],
    data: LocalData,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    optimizer: str = "sgd",
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    seed: int,
    device: str = "cpu",
) -> tuple[dict[str, Tensor], int, dict[str, float]]:
    """Train a copy of ``model_state`` on ``data``; return (new state, examples, metrics).

    ``device`` is ``"cpu"``, ``"cuda"`` or ``"auto"`` (see :mod:`allmende.learn.devices`); the
    batches are drawn on the CPU either way (:meth:`Task.epoch_batches`) and the new state is
    returned on the CPU.

    ``examples`` is ``len(data)``, the FedAvg weight of this update. ``metrics`` holds the mean
    training ``loss`` of the last epoch and the number of optimizer ``steps``. The optimizer
    starts fresh every call (no state carries over between rounds).
    """
    if epochs < 1 or batch_size < 1:
        raise ConfigError(
            f"epochs and batch_size must be >= 1 (got {epochs} and {batch_size}); "
            "fix local_epochs / batch_size in the job spec."
        )
    n = len(data)
    if n == 0:
        raise ConfigError("The node's local dataset is empty; declare a dataset with examples.")
    where = resolve_device(device)
    with deterministic_torch(seed):
        model = task.model()
        try:
            model.load_state_dict(model_state, strict=True)
        except (RuntimeError, TypeError) as exc:
            raise TaskError(
                f"The model to train does not fit task '{task.name}' ({exc}); the job's model "
                "was made for another task or version, so do not train it."
            ) from None
        model.to(where)
        model.train()
        opt = LocalOptimizer(
            optimizer,
            list(model.parameters()),
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
        )
        shuffle = torch.Generator().manual_seed(seed)
        steps = 0
        epoch_loss = 0.0
        for _ in range(epochs):
            epoch_loss = 0.0
            for inputs, targets in task.epoch_batches(
                data, batch_size=batch_size, generator=shuffle
            ):
                batch = (inputs.to(where), targets.to(where))
                loss = task.loss(model, batch)
                opt.zero_grad()
                loss.backward()
                opt.step()
                epoch_loss += float(loss.detach()) * len(batch[1])
                steps += 1
        new_state = state_of(model.to("cpu"))
    return new_state, n, {"loss": epoch_loss / n, "steps": float(steps)}
