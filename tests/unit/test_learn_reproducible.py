"""Two processes with different torch thread counts get the same bytes: train and aggregate."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import torch

from allmende.learn.aggregate import aggregate
from allmende.learn.digits import DigitsMLP
from allmende.learn.rules import RULES
from allmende.learn.task import DatasetDecl, seeded_model
from allmende.learn.train import derive_seed, train_local

PARAMS = {
    "fedavg": {},
    "trimmed_mean": {"beta": 0.2},
    "median": {},
    "krum": {"f": 1},
    "multi_krum": {"f": 1, "m": 3},
    "centered_clip": {"tau": 0.5, "iters": 2},
    "clipped_mean": {"scale": 1.0, "iters": 3},
}


def digests(threads: int) -> dict[str, str]:
    """Train 5 trainers one round on digits, aggregate with every rule, hash each result."""
    torch.set_num_threads(threads)
    task = DigitsMLP()
    state = seeded_model(task, seed=3).state_dict()
    updates = []
    for part in range(5):
        address = f"0x{part + 1:040x}"
        data = task.load_data(DatasetDecl(partition="dirichlet", num_parts=5, part=part))
        new, examples, _ = train_local(
            task,
            state,
            data,
            epochs=1,
            batch_size=16,
            lr=0.1,
            momentum=0.9,
            seed=derive_seed(7, 0, address),
        )
        updates.append((address, new, examples))
    out = {}
    for rule in RULES:
        result = aggregate(rule, state, updates, PARAMS[rule])
        blob = b"".join(result[key].numpy().tobytes() for key in sorted(result))
        out[rule] = hashlib.sha256(blob).hexdigest()
    trained = b"".join(updates[0][1][key].numpy().tobytes() for key in sorted(updates[0][1]))
    out["train"] = hashlib.sha256(trained).hexdigest()
    return out


def test_results_do_not_depend_on_the_process_or_thread_count():
    script = (
        "import json, sys\n"
        f"sys.path.insert(0, {os.path.dirname(__file__)!r})\n"
        "from test_learn_reproducible import digests\n"
        "print(json.dumps(digests(1)))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=300,
    )
    threads = torch.get_num_threads()
    try:
        here = digests(max(2, threads))
    finally:
        torch.set_num_threads(threads)
    assert json.loads(child.stdout.strip().splitlines()[-1]) == here
    assert len({here[rule] for rule in RULES}) == len(RULES)  # every rule gives its own model
