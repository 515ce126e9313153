"""The one FedAvg job every benchmark column runs, and the pieces all columns share.

``digits-mlp``, 8 trainers, IID partition, 20 rounds, 1 local epoch, SGD lr 0.05, batch 32.
Every column (plain PyTorch, Flower, Allmende) builds the same initial model, gives trainer *i*
partition part *i*, and trains with :func:`allmende.learn.train.train_local` semantics under the
seed ``derive_seed(job_id, round, trainer_id)`` — so the columns differ only in how they move and
average models, which is what the benchmark measures.

This module must import in both the project venv and ``benchmarks/.venv-flower``: it depends on
pydantic and ``allmende.learn`` only.
"""

from __future__ import annotations

import hashlib
import json
import resource
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from allmende.learn.dataset import DatasetDecl

if TYPE_CHECKING:  # torch is imported where a model is built, not by the drivers' start-up
    from torch import Tensor

    from allmende.learn.task import LocalData, Task

DEFAULT_TASK = "digits-mlp"
DEFAULT_TRAINERS = 8
DEFAULT_ROUNDS = 20
DEFAULT_EPOCHS = 1
DEFAULT_LR = 0.05
DEFAULT_BATCH_SIZE = 32
DEFAULT_JOB_ID = 1
DEFAULT_MODEL_SEED = 0
DEFAULT_PARTITION_SEED = 0
DEFAULT_DIRICHLET_ALPHA = 0.3


class FedAvgJob(BaseModel):
    """Settings of one benchmark job; every column must be given the same values."""

    model_config = ConfigDict(extra="forbid")

    task: str = DEFAULT_TASK
    trainers: int = Field(default=DEFAULT_TRAINERS, ge=1)
    rounds: int = Field(default=DEFAULT_ROUNDS, ge=1)
    epochs: int = Field(default=DEFAULT_EPOCHS, ge=1)
    lr: float = Field(default=DEFAULT_LR, gt=0)
    batch_size: int = Field(default=DEFAULT_BATCH_SIZE, ge=1)
    partition: Literal["iid", "dirichlet"] = "iid"
    alpha: float = Field(default=DEFAULT_DIRICHLET_ALPHA, gt=0)
    partition_seed: int = Field(default=DEFAULT_PARTITION_SEED, ge=0)
    model_seed: int = Field(default=DEFAULT_MODEL_SEED, ge=0)
    job_id: int = Field(default=DEFAULT_JOB_ID, ge=0)
    trainer_ids: list[str] = Field(default_factory=list)
    """Who trainer *i* is (its seed depends on it). Empty: ``trainer-0`` .. ``trainer-{n-1}``.
    An Allmende run passes the nodes' addresses here so the reference reproduces it exactly."""

    def ids(self) -> list[str]:
        """Trainer identities, index *i* trains on partition part *i*."""
        if self.trainer_ids:
            if len(self.trainer_ids) != self.trainers:
                raise ValueError(
                    f"{len(self.trainer_ids)} trainer ids given for {self.trainers} trainers; "
                    "pass one id per trainer."
                )
            return list(self.trainer_ids)
        return [f"trainer-{i}" for i in range(self.trainers)]

    def dataset(self, part: int) -> DatasetDecl:
        """The dataset declaration of trainer ``part``."""
        return DatasetDecl(
            partition=self.partition,
            alpha=self.alpha,
            num_parts=self.trainers,
            part=part,
            seed=self.partition_seed,
        )


def load_job_task(job: FedAvgJob) -> Task:
    """The installed task the job names."""
    from allmende.learn.task import load_task

    return load_task(job.task)


def initial_state(task: Task, job: FedAvgJob) -> dict[str, Tensor]:
    """Round-0 model, the same in every column."""
    from allmende.learn.task import seeded_model

    model = seeded_model(task, seed=job.model_seed)
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def local_datasets(task: Task, job: FedAvgJob) -> list[LocalData]:
    """Trainer *i*'s training data, for every *i*."""
    return [task.load_data(job.dataset(part)) for part in range(job.trainers)]


def evaluate_state(task: Task, state: dict[str, Tensor]) -> dict[str, float]:
    """Accuracy and loss of ``state`` on the task's held-out split (the same for every column)."""
    model = task.model()
    model.load_state_dict(state, strict=True)
    return task.evaluate(model, task.test_data())


def state_bytes(state: dict[str, Tensor]) -> int:
    """Raw tensor bytes of a model state (what one update weighs before any encoding)."""
    return sum(value.numel() * value.element_size() for value in state.values())


def state_digest(state: dict[str, Tensor]) -> str:
    """SHA-256 over the keys and raw bytes of a state: equal digests mean bit-identical models."""
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].contiguous().numpy().tobytes())
    return digest.hexdigest()


def peak_rss_bytes() -> int:
    """This process's peak resident set size (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def parse_job_args(argv: list[str]) -> tuple[FedAvgJob, Path | None]:
    """``[--job JSON] [--out PATH]``: the job settings and where to write the result."""
    job, out = FedAvgJob(), None
    args = iter(argv)
    for arg in args:
        if arg == "--job":
            job = FedAvgJob.model_validate_json(next(args))
        elif arg == "--out":
            out = Path(next(args))
        else:
            sys.exit(f"Unknown argument {arg!r}; use [--job JSON] [--out PATH].")
    return job, out


def emit(result: dict[str, Any], out: Path | None) -> None:
    """Write ``result`` as JSON to ``out`` (or stdout), stamping when it was written."""
    result = {**result, "written_at": time.time()}
    text = json.dumps(result, indent=2, sort_keys=True)
    if out is None:
        print(text)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
