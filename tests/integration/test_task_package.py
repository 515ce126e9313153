"""A third-party task package, installed with pip, runs through the ``allmende.tasks`` entry point.

``examples/task-package`` is copied and ``pip install --no-deps --target``-ed into a temporary
folder (the project's environment is left as it was); a fresh Python process with that folder on
its path finds the task by name, configures it from a job's ``[data]`` table, reads a CSV and
trains it with Allmende's deterministic local training.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from datafiles import digits_rows, write_csv

PACKAGE = Path(__file__).resolve().parents[2] / "examples" / "task-package"
SCRIPT = """
import json, sys
from allmende.learn.dataset import TableSource
from allmende.learn.task import installed_tasks, load_task, seeded_state
from allmende.learn.train import train_local

data = {"features": [f"p{i}" for i in range(64)], "label": "label",
        "classes": [str(c) for c in range(10)], "scale": 16.0}
task = load_task("table-logreg", data=data)
local = task.load_data(TableSource(kind="table", path=sys.argv[1]))
state = seeded_state(task, seed=0)
before = task.evaluate(_m := task.model(), local)
new, n, metrics = train_local(task, state, local, epochs=3, batch_size=16, lr=0.5, seed=1)
_m.load_state_dict(new)
print(json.dumps({"installed": installed_tasks(), "examples": n, "code_hash": task.code_hash(),
                  "after": task.evaluate(_m, local)["accuracy"], "file": sys.modules[
                  type(task).__module__].__file__}))
"""


def test_an_installed_task_package_is_found_and_trains(tmp_path: Path) -> None:
    source = shutil.copytree(PACKAGE, tmp_path / "src", ignore=shutil.ignore_patterns("build"))
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--no-build-isolation", "--target", str(target), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    pixels, labels = digits_rows(0, 3)
    table = write_csv(tmp_path / "own.csv", pixels, labels)
    path = os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(table)], env={**os.environ, "PYTHONPATH": path},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["installed"]["table-logreg"] == "allmende_example_task:TableLogReg"
    assert result["file"].startswith(str(target))  # the installed copy, not the example's
    assert result["examples"] == len(labels) and result["after"] > 0.8
    assert len(result["code_hash"]) == 64
    # Without the package on the path the same name is not installed.
    load = "from allmende.learn.task import load_task; load_task('table-logreg')"
    missing = subprocess.run(
        [sys.executable, "-c", load],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert missing.returncode != 0 and "Task 'table-logreg' is not installed" in missing.stderr
