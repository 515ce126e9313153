"""``make bench``: every benchmark, its printed tables, and JSON under ``benchmarks/results/``.

1. ``fedavg``: the same FedAvg job three ways: the plain PyTorch loop (the compute limit), Flower
   1.41 in its own venv, and Allmende on a devnet with real node processes and a real Anvil.
2. ``robustness``: 20 trainers of which 4 attack, IID and non-IID, every aggregation rule, run
   until clean FedAvg has converged (100 rounds at lr 0.5).
3. ``scale``: the Allmende job with 8, 16 and 32 trainer processes.
4. ``security``: issue 13's attacks against the real contracts (titanoboa, in process): what
   each attacker took and how many rounds it stalled.
5. ``text``: a ``byte-gpt`` job on 4 trainer nodes, each on a shard of the standard library,
   against a plain PyTorch FedAvg loop over the same shards (:mod:`text`).
6. ``privacy``: final accuracy against ε (1, 2, 4, 8, no DP) with 20 trainers on digits and on
   a tabular task, both noise placements, and what secure aggregation costs against plain
   aggregation at 8, 16 and 32 trainers, with and without a third dropping (:mod:`privacy`,
   in-process simulations; ``results/privacy.json``).
7. ``verification``: compute mode's check: how often sampled re-execution catches each cheating
   provider, per fraction of faked steps, and the verifier's compute as a share of training
   (:mod:`verification`, in process).
8. ``large_model``: a 50M-parameter FedAvg round through real node processes: peak memory per
   node, transfer speed against ``hashlib.sha256``, same bytes as plain PyTorch
   (:mod:`large_model`).

Each column runs as its own process, watched by :mod:`proctree` (memory of its whole process
tree); its wall time runs from just before the process is started to the moment the script says
the final model existed. Each result file holds the machine description. A piece that cannot run
here prints "not run" with the reason and is recorded as such.

The FedAvg columns run ``--repeats`` times in turn and the table shows each column's median run.

Run: ``python benchmarks/run_all.py [--only fedavg,robustness,scale,security,text,privacy,
verification,large_model] [--rounds N] [--repeats N]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from fedavg_job import FedAvgJob
from flower_env import ensure_flower_env
from machine import describe_machine, one_line
from proctree import run_watched
from report import fedavg_rows, print_fedavg, print_not_run, print_robustness, print_scale

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
LOG_DIR = RESULTS_DIR / "logs"
COLUMN_TIMEOUT_S = 1800.0
BENCHMARKS = (
    "fedavg", "robustness", "scale", "security", "text", "privacy", "verification",
    "large_model",
)
DEFAULT_REPEATS = 3  # a shared 2-core machine's speed drifts by half within minutes
MIN_CONSOLE_WIDTH = 150  # the tables are wide; piped output would otherwise wrap at 80


class NotRun(Exception):
    """A benchmark piece cannot run here; the message says why."""


def _project_python() -> str:
    return sys.executable


def _flower_python() -> str:
    try:
        return str(ensure_flower_env())
    except subprocess.CalledProcessError as error:
        raise NotRun(f"creating benchmarks/.venv-flower failed ({error})") from error


def _allmende_python() -> str:
    from allmende.chain import find_anvil
    from allmende.errors import DevnetError

    try:
        find_anvil()
    except DevnetError as error:
        raise NotRun(str(error)) from error
    return sys.executable


# column name -> (interpreter finder, script)
COLUMNS: dict[str, tuple[Callable[[], str], str]] = {
    "pytorch": (_project_python, "fedavg_pytorch.py"),
    "flower": (_flower_python, "fedavg_flower.py"),
    "allmende": (_allmende_python, "fedavg_allmende.py"),
}


def run_column(
    name: str, job: FedAvgJob, *, console: Console, tag: str = ""
) -> dict[str, Any]:
    """Run one column's script as a watched process; its result plus wall time and memory."""
    find_python, script = COLUMNS[name]
    python = find_python()
    label = f"fedavg-{name}{tag}"
    out = RESULTS_DIR / "raw" / f"{label}.json"
    out.unlink(missing_ok=True)
    log = LOG_DIR / f"{label}.log"
    console.print(f"  running {name} ... (log: {log.relative_to(BENCH_DIR.parent)})")
    command = [python, str(BENCH_DIR / script), "--job", job.model_dump_json(), "--out", str(out)]
    code, started_at, memory = run_watched(command, log_path=log, timeout_s=COLUMN_TIMEOUT_S)
    if code != 0 or not out.is_file():
        raise NotRun(f"{script} exited with code {code}; read {log.name} in {LOG_DIR.name}/")
    result: dict[str, Any] = json.loads(out.read_text())
    result["wall_s"] = result["final_model_at"] - started_at
    result["memory"] = memory.as_json()
    result.setdefault("peak_rss_per_node_bytes", result.get("peak_rss_bytes"))
    return result


def bench_fedavg(job: FedAvgJob, *, console: Console, repeats: int = 1) -> dict[str, Any]:
    """Table 1. The columns run ``repeats`` times in turn (PyTorch, Flower, Allmende, PyTorch,
    ...), so a slow spell of a shared machine falls on all of them; each column's median run by
    wall time stands for it, and every run's times are kept under ``runs``. Each non-PyTorch
    column is compared bit for bit with a PyTorch reference run that uses the same trainer
    identities (seeds depend on them)."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in COLUMNS}
    not_run: dict[str, str] = {}
    for repeat in range(repeats):
        if repeats > 1:
            console.print(f"  run {repeat + 1} of {repeats}")
        for name in COLUMNS:
            if name in not_run:
                continue
            tag = f"-{repeat + 1}" if repeats > 1 else ""
            try:
                runs[name].append(run_column(name, job, console=console, tag=tag))
            except NotRun as reason:
                console.print(f"  {name}: not run: {reason}")
                not_run[name] = str(reason)
    columns: dict[str, dict[str, Any]] = {}
    for name, results in runs.items():
        if not results:
            columns[name] = {"not_run": not_run[name]}
            continue
        columns[name] = {**median_run(results), "runs": [run_times(r) for r in results]}
    reference = columns.get("pytorch", {})
    references: dict[tuple[str, ...], str] = {}  # trainer ids -> the reference's digest
    for result in columns.values():
        if "not_run" in result or "not_run" in reference:
            continue
        ids = tuple(result.get("job", {}).get("trainer_ids") or ())
        if ids and list(ids) != reference.get("job", {}).get("trainer_ids"):
            if ids not in references:
                same_ids = job.model_copy(update={"trainer_ids": list(ids)})
                rerun = run_column("pytorch", same_ids, console=console, tag="-reference")
                references[ids] = rerun["final_state_sha256"]
            result["reference_sha256"] = references[ids]
        else:
            result["reference_sha256"] = reference["final_state_sha256"]
    return {"job": job.model_dump(), "repeats": repeats, "columns": columns,
            "rows": fedavg_rows(columns)}


def median_run(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median wall time (of an even count, the faster of the middle two)."""
    ordered = sorted(results, key=lambda result: result["wall_s"])
    return ordered[(len(ordered) - 1) // 2]


def run_times(result: dict[str, Any]) -> dict[str, Any]:
    """The times of one run of a column, kept beside the median run's full figures."""
    keys = ("wall_s", "job_wall_s", "from_node_run_s", "round_s")
    return {key: result[key] for key in keys if key in result}


def bench_robustness(
    job: FedAvgJob, *, console: Console, rounds: int | None = None
) -> dict[str, Any]:
    """Table 2, in process, with allmende.learn's own training and aggregation rules; its own
    job (20 trainers, run to convergence), ``rounds`` only when given on the command line."""
    try:
        import robustness
    except ImportError as error:
        raise NotRun(f"benchmarks/robustness.py cannot be imported ({error})") from error
    return robustness.run_table(rounds=rounds or robustness.ROBUST_ROUNDS, progress=console.print)


def bench_scale(job: FedAvgJob, *, console: Console) -> dict[str, Any]:
    """Table 3: the Allmende job with 8, 16 and 32 trainer processes."""
    import scale

    def column(name: str, sized: FedAvgJob, *, tag: str) -> dict[str, Any]:
        return run_column(name, sized, console=console, tag=tag)

    return scale.run_table(job, run_column=column, progress=console.print)


def bench_security(job: FedAvgJob, *, console: Console) -> dict[str, Any]:
    """Table 4: every attack of issue 13 on the real contracts, one row each (the FedAvg job
    is not used)."""
    try:
        import security
    except ImportError as error:
        raise NotRun(f"benchmarks/security.py cannot be imported ({error})") from error
    draws = security.DEFAULT_DRAWS
    return {"draws": draws, "attacks": security.run_all(draws, progress=console.print)}


def bench_text(job: FedAvgJob, *, console: Console, rounds: int | None) -> dict[str, Any]:
    """The byte-gpt table: ``benchmarks/text.py`` as its own watched process."""
    out = RESULTS_DIR / "raw" / "text.json"
    out.unlink(missing_ok=True)
    log = LOG_DIR / "text.log"
    console.print(f"  running text.py ... (log: {log.relative_to(BENCH_DIR.parent)})")
    command = [_project_python(), str(BENCH_DIR / "text.py"), "--out", str(out)]
    if rounds is not None:
        command += ["--rounds", str(rounds)]
    code, _, memory = run_watched(command, log_path=log, timeout_s=COLUMN_TIMEOUT_S)
    if not out.is_file():
        raise NotRun(f"text.py exited with code {code}; read {log.name} in {LOG_DIR.name}/")
    result: dict[str, Any] = json.loads(out.read_text())
    result.pop("machine", None)  # write_result adds it
    result["memory"] = memory.as_json()
    console.print(log.read_text().strip())
    return result


def bench_large_model(job: FedAvgJob, *, console: Console) -> dict[str, Any]:
    """The 50M-parameter round: ``benchmarks/large_model.py`` as its own watched process (the
    FedAvg job is not used)."""
    out = RESULTS_DIR / "raw" / "large_model.json"
    out.unlink(missing_ok=True)
    log = LOG_DIR / "large_model.log"
    console.print(f"  running large_model.py ... (log: {log.relative_to(BENCH_DIR.parent)})")
    command = [_project_python(), str(BENCH_DIR / "large_model.py"), "--out", str(out)]
    code, _, memory = run_watched(command, log_path=log, timeout_s=COLUMN_TIMEOUT_S)
    if not out.is_file():
        raise NotRun(f"large_model.py exited with code {code}; read {log.name} in {LOG_DIR.name}/")
    result: dict[str, Any] = json.loads(out.read_text())
    result.pop("machine", None)  # write_result adds it
    result["memory"] = memory.as_json()
    console.print(log.read_text().strip())
    return result


def bench_privacy(job: FedAvgJob, *, console: Console) -> dict[str, Any]:
    """The privacy figures: ``benchmarks/privacy.py`` (both parts, the accuracy against ε and
    secure aggregation's cost) as its own watched process (the FedAvg job is not used)."""
    out = RESULTS_DIR / "raw" / "privacy.json"
    out.unlink(missing_ok=True)
    log = LOG_DIR / "privacy.log"
    console.print(f"  running privacy.py ... (log: {log.relative_to(BENCH_DIR.parent)})")
    command = [_project_python(), str(BENCH_DIR / "privacy.py"), "--out", str(out)]
    code, _, memory = run_watched(command, log_path=log, timeout_s=COLUMN_TIMEOUT_S)
    if code != 0 or not out.is_file():
        raise NotRun(f"privacy.py exited with code {code}; read {log.name} in {LOG_DIR.name}/")
    result: dict[str, Any] = json.loads(out.read_text())
    result.pop("machine", None)  # write_result adds it
    result["memory"] = memory.as_json()
    console.print(log.read_text().strip())
    return result


def bench_verification(job: FedAvgJob, *, console: Console) -> dict[str, Any]:
    """Table 7: detection of cheating compute providers (the FedAvg job is not used)."""
    try:
        import verification
    except ImportError as error:
        raise NotRun(f"benchmarks/verification.py cannot be imported ({error})") from error
    return verification.run_table(progress=console.print)


def write_result(name: str, result: dict[str, Any], machine: dict[str, Any]) -> Path:
    """``benchmarks/results/<name>.json`` with the machine description."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps({"machine": machine, **result}, indent=2, sort_keys=True) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(BENCHMARKS),
                        help="comma-separated subset of: " + ", ".join(BENCHMARKS))
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds of every job (default: 20; the robustness table's job "
                             "runs to convergence, 100)")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS,
                        help="runs of each FedAvg column, taken in turn; the table shows each "
                             f"column's median run (default {DEFAULT_REPEATS})")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")

    console = Console()
    console = Console(width=max(console.width, MIN_CONSOLE_WIDTH))
    machine = describe_machine()
    console.print(f"Machine: {one_line(machine)}")
    if machine["load_average"] and machine["load_average"][0] > machine["cores"]:
        console.print("  [yellow]the machine is busy with other work (load above its core count);"
                      " every time below is slower than on an idle machine[/yellow]")
    job = FedAvgJob(rounds=args.rounds or FedAvgJob().rounds)
    runners: dict[str, Callable[..., dict[str, Any]]] = {
        "fedavg": functools.partial(bench_fedavg, repeats=args.repeats),
        "robustness": functools.partial(bench_robustness, rounds=args.rounds),
        "scale": bench_scale,
        "security": bench_security,
        "text": functools.partial(bench_text, rounds=args.rounds),
        "privacy": bench_privacy,
        "verification": bench_verification,
        "large_model": bench_large_model,
    }
    failures: list[str] = []
    for name in chosen:
        console.rule(name)
        try:
            result = runners[name](job, console=console)
        except NotRun as reason:
            print_not_run(name, str(reason), console=console)
            result = {"not_run": str(reason)}
        path = write_result(name, result, machine)
        if name == "fedavg":
            print_fedavg(result["rows"], console=console, title=_fedavg_title(job),
                         repeats=result.get("repeats", 1))
        elif name == "robustness" and "not_run" not in result:
            print_robustness(result, console=console)
        elif name == "scale" and "not_run" not in result:
            print_scale(result, console=console)
        elif name == "security" and "not_run" not in result:
            import security

            security.print_table(result["attacks"], console=console)
            broken = security.failed_attacks(result["attacks"])
            if broken:
                failures.append(f"security: attacks that took wei or stalled: {', '.join(broken)}")
        elif name == "text" and "not_run" not in result and not result["bit_identical"]:
            failures.append("text: the byte-gpt models of Allmende and PyTorch differ")
        elif name == "verification" and "not_run" not in result:
            import verification

            verification.print_table(result, console=console)
            if not result["goal"]["met"]:
                failures.append("verification: the detection or overhead goal is not met")
        elif name == "large_model" and "not_run" not in result and not result["bit_identical"]:
            failures.append("large_model: the aggregated model differs from plain PyTorch's")
        console.print(f"  written: {path.relative_to(BENCH_DIR.parent)}")
    for failure in failures:
        console.print(f"[red]{failure}[/red]")
    return 1 if failures else 0


def _fedavg_title(job: FedAvgJob) -> str:
    return (f"FedAvg {job.task}, {job.trainers} trainers, {job.partition.upper()}, "
            f"{job.rounds} rounds, {job.epochs} epoch, SGD lr {job.lr}, batch {job.batch_size}")


if __name__ == "__main__":
    sys.exit(main())
