"""Table 2: final accuracy with 20 trainers of which 4 attack, for every aggregation rule.

In-process simulation with Allmende's real parts: every trainer runs
:func:`allmende.learn.train.train_local` under its Allmende seed, and the round's model is
:func:`allmende.learn.aggregate.aggregate` with the rule under test: the very code an Allmende
aggregator runs. Only the transport is left out, which does not change what is aggregated.

Rows: partition (IID, Dirichlet alpha 0.3) x attack (none, sign flip, label flip, ALIE, IPM).
Columns: the aggregation rules, with parameters set for ``f = 4`` attackers of ``n = 20``.
Trainers ``trainer-00`` .. ``trainer-03`` are the attackers (address order puts them first,
which no rule favours). In the "none" row all 20 train honestly.

Run alone: ``python benchmarks/robustness.py [--rounds N] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from allmende.learn.aggregate import aggregate
from allmende.learn.rules import RULES
from allmende.learn.task import LocalData, Task
from allmende.learn.train import derive_seed, train_local
from attacks import ATTACKS, craft, flip_labels, get_attack
from fedavg_job import (
    DEFAULT_DIRICHLET_ALPHA,
    FedAvgJob,
    evaluate_state,
    initial_state,
    load_job_task,
    local_datasets,
)

ROBUST_TRAINERS = 20
ROBUST_ATTACKERS = 4
CENTERED_CLIP_TAU = 0.1
"""About the median honest update norm of this job in round 0 (0.07 IID, 0.15 non-IID)."""
RULE_PARAMS: dict[str, dict[str, object]] = {
    "fedavg": {},
    "trimmed_mean": {"beta": ROBUST_ATTACKERS / ROBUST_TRAINERS},
    "median": {},
    "krum": {"f": ROBUST_ATTACKERS},
    "multi_krum": {"f": ROBUST_ATTACKERS, "m": ROBUST_TRAINERS - ROBUST_ATTACKERS},
    "centered_clip": {"tau": CENTERED_CLIP_TAU, "iters": 3},
}
PARTITIONS = ("iid", "dirichlet")
ROWS_ATTACKS = ("none", *ATTACKS)


def robustness_job(partition: str, *, rounds: int) -> FedAvgJob:
    """The benchmark job with 20 trainers on the given partition."""
    return FedAvgJob(
        trainers=ROBUST_TRAINERS,
        rounds=rounds,
        partition=partition,  # type: ignore[arg-type]
        alpha=DEFAULT_DIRICHLET_ALPHA,
        trainer_ids=[f"trainer-{i:02d}" for i in range(ROBUST_TRAINERS)],
    )


def _train(task: Task, state: dict, data: LocalData, job: FedAvgJob, round_: int, who: str) -> dict:
    new_state, _, _ = train_local(
        task, state, data, epochs=job.epochs, batch_size=job.batch_size, lr=job.lr,
        seed=derive_seed(job.job_id, round_, who),
    )
    return new_state


def run_cell(job: FedAvgJob, *, attack: str, rule: str, num_classes: int) -> dict[str, float]:
    """Train ``job`` with ``ROBUST_ATTACKERS`` running ``attack`` (or none) under ``rule``."""
    task = load_job_task(job)
    datasets = local_datasets(task, job)
    ids = job.ids()
    behaviour = get_attack(attack) if attack != "none" else None
    attackers = list(range(ROBUST_ATTACKERS)) if behaviour is not None else []
    state = initial_state(task, job)
    for round_ in range(job.rounds):
        honest = [i for i in range(job.trainers) if i not in attackers]
        honest_states = {i: _train(task, state, datasets[i], job, round_, ids[i]) for i in honest}
        submitted = dict(honest_states)
        for i in attackers if behaviour is not None else []:
            trained = None
            if behaviour.trains:
                data = datasets[i]
                if behaviour.flips_labels:
                    data = flip_labels(data, num_classes=num_classes)
                trained = _train(task, state, data, job, round_, ids[i])
            submitted[i] = craft(
                behaviour, state, trained=trained, honest=list(honest_states.values()),
                n=job.trainers, f=ROBUST_ATTACKERS,
            )
        updates = [(ids[i], submitted[i], len(datasets[i])) for i in range(job.trainers)]
        state = aggregate(rule, state, updates, RULE_PARAMS[rule])
    return evaluate_state(task, state)


def run_table(*, rounds: int, progress: Callable[[str], object] = print) -> dict[str, Any]:
    """Every (partition, attack, rule) cell; the result JSON ``run_all.py`` prints and writes."""
    num_classes = _num_classes(load_job_task(FedAvgJob()))
    rows = []
    started = time.perf_counter()
    for partition in PARTITIONS:
        job = robustness_job(partition, rounds=rounds)
        for attack in ROWS_ATTACKS:
            accuracy = {}
            for rule in RULES:
                accuracy[rule] = run_cell(job, attack=attack, rule=rule,
                                          num_classes=num_classes)["accuracy"]
            progress(f"  {partition:9} {attack:10} "
                     + "  ".join(f"{rule} {value:.3f}" for rule, value in accuracy.items()))
            rows.append({"partition": partition, "attack": attack, "accuracy": accuracy})
    return {
        "title": (f"Final accuracy, {ROBUST_TRAINERS} trainers of which {ROBUST_ATTACKERS} attack, "
                  f"{rounds} rounds (non-IID: Dirichlet alpha {DEFAULT_DIRICHLET_ALPHA})"),
        "trainers": ROBUST_TRAINERS,
        "attackers": ROBUST_ATTACKERS,
        "rounds": rounds,
        "rules": list(RULES),
        "rule_params": RULE_PARAMS,
        "rows": rows,
        "seconds": time.perf_counter() - started,
    }


def _num_classes(task: Task) -> int:
    return int(task.test_data().targets.max()) + 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Robustness table (see module docstring).")
    parser.add_argument("--rounds", type=int, default=FedAvgJob().rounds)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    table = run_table(rounds=args.rounds)
    text = json.dumps(table, indent=2, sort_keys=True)
    if args.out:
        args.out.write_text(text + "\n")
    else:
        print(text)
