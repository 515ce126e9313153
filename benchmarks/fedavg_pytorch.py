"""The compute limit: the benchmark's FedAvg job as one plain single-process PyTorch loop.

No framework, no processes, no network: for every round, each trainer in turn trains a copy of
the global model on its part with plain SGD, then the global model becomes the example-weighted
mean of the trainers' models. This is the arithmetic Allmende must reproduce bit for bit
(DESIGN §3), written out here independently of ``allmende.learn.train``:

- trainer *i* of round *r* shuffles with ``torch.Generator().manual_seed(seed)`` where
  ``seed = derive_seed(job_id, r, trainer_id)``; one intra-op thread, deterministic algorithms;
- the mean runs over trainers sorted by id (Allmende sorts by address).

Run: ``python benchmarks/fedavg_pytorch.py [--job JSON] [--out result.json]``.
"""

from __future__ import annotations

import sys
import time

import torch
from torch import Tensor

from allmende.learn.task import LocalData, Task
from allmende.learn.train import derive_seed
from fedavg_job import (
    FedAvgJob,
    emit,
    evaluate_state,
    initial_state,
    load_job_task,
    local_datasets,
    parse_job_args,
    peak_rss_bytes,
    state_bytes,
    state_digest,
)


def train_plain(
    task: Task, state: dict[str, Tensor], data: LocalData, *, job: FedAvgJob, seed: int
) -> dict[str, Tensor]:
    """``job.epochs`` epochs of minibatch SGD from ``state``; returns the new state."""
    torch.manual_seed(seed)
    model = task.model()
    model.load_state_dict(state, strict=True)
    model.train()
    sgd = torch.optim.SGD(model.parameters(), lr=job.lr, foreach=False)
    shuffle = torch.Generator().manual_seed(seed)
    n = len(data)
    for _ in range(job.epochs):
        order = torch.randperm(n, generator=shuffle)  # (n,)
        for start in range(0, n, job.batch_size):
            loss = task.loss(model, data.batch(order[start : start + job.batch_size]))
            sgd.zero_grad(set_to_none=True)
            loss.backward()
            sgd.step()
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def fedavg_plain(models: list[dict[str, Tensor]], examples: list[int]) -> dict[str, Tensor]:
    """``sum(n_i * model_i) / sum(n_i)`` per entry, in float32, in the given (canonical) order."""
    total = sum(examples)  # exact integer
    averaged = {}
    for key in models[0]:
        acc = torch.zeros_like(models[0][key])  # the parameter's shape and dtype
        for model, n in zip(models, examples, strict=True):
            acc = acc + n * model[key]
        averaged[key] = acc / total
    return averaged


def run_plain_fedavg(job: FedAvgJob) -> dict[str, object]:
    """Run the whole job; return its figures and the final model's accuracy."""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    task = load_job_task(job)
    datasets = local_datasets(task, job)
    ids = job.ids()
    order = sorted(range(job.trainers), key=lambda i: ids[i].lower())
    state = initial_state(task, job)
    round_seconds: list[float] = []
    started = time.perf_counter()
    for round_ in range(job.rounds):
        round_started = time.perf_counter()
        models = [
            train_plain(
                task, state, datasets[i], job=job, seed=derive_seed(job.job_id, round_, ids[i])
            )
            for i in order
        ]
        state = fedavg_plain(models, [len(datasets[i]) for i in order])
        round_seconds.append(time.perf_counter() - round_started)
    final_model_at = time.time()
    compute_s = time.perf_counter() - started
    metrics = evaluate_state(task, state)
    return {
        "column": "pytorch",
        "job": job.model_dump(),
        "final_model_at": final_model_at,
        "compute_s": compute_s,
        "round_s": round_seconds,
        "accuracy": metrics["accuracy"],
        "loss": metrics["loss"],
        "update_bytes": state_bytes(state),
        "bytes_sent_per_trainer_round": 0,
        "peak_rss_bytes": peak_rss_bytes(),
        "final_state_sha256": state_digest(state),
    }


if __name__ == "__main__":
    job_settings, out_path = parse_job_args(sys.argv[1:])
    emit(run_plain_fedavg(job_settings), out_path)
