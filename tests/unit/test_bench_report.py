"""``make bench`` plumbing: process-tree memory, machine description, derived figures, tables."""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from fedavg_job import FedAvgJob
from machine import describe_machine, one_line
from proctree import descendants, run_watched
from report import GOAL_OVERHEAD_MS, fedavg_rows, goals, overhead_ms, print_fedavg

ALLOCATE_MIB = 64
# A parent that starts a child which holds ALLOCATE_MIB of memory for a moment.
GRANDCHILD = (
    "import subprocess, sys\n"
    f"code = 'b = bytearray({ALLOCATE_MIB} * 2**20); import time; time.sleep(1.5)'\n"
    "subprocess.run([sys.executable, '-c', code], check=True)\n"
)


def test_run_watched_sees_the_memory_of_grandchildren(tmp_path: Path) -> None:
    code, started_at, memory = run_watched(
        [sys.executable, "-c", GRANDCHILD], log_path=tmp_path / "log.txt", timeout_s=60,
        interval_s=0.05,
    )
    assert code == 0
    assert started_at > 0
    assert len(memory.processes) >= 2
    assert max(p.peak_rss_bytes for p in memory.processes.values()) > ALLOCATE_MIB * 2**20
    assert memory.peak_total_rss_bytes > ALLOCATE_MIB * 2**20


def test_run_watched_kills_the_whole_group_on_timeout(tmp_path: Path) -> None:
    code, _, memory = run_watched(
        ["sh", "-c", "sleep 60 & wait"], log_path=tmp_path / "log.txt", timeout_s=2.0,
        interval_s=0.05,
    )
    assert code == -9
    assert len(memory.processes) >= 2  # the shell and its sleeping child were both seen
    deadline = time.monotonic() + 10.0  # SIGKILL is delivered at once, the exit takes a moment
    while (alive := [pid for pid in memory.processes if running(pid)]) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert alive == []


def running(pid: int) -> bool:
    """Whether ``pid`` exists and is neither a zombie nor dead."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    state = next((line for line in status.splitlines() if line.startswith("State:")), "")
    return not any(word in state for word in ("zombie", "dead"))


def test_run_watched_reports_a_failing_command(tmp_path: Path) -> None:
    code, _, _ = run_watched(
        [sys.executable, "-c", "print('boom'); raise SystemExit(3)"],
        log_path=tmp_path / "log.txt", timeout_s=60,
    )
    assert code == 3
    assert "boom" in (tmp_path / "log.txt").read_text()


def test_descendants_of_a_process_without_children_is_itself() -> None:
    assert descendants(2**22 + 12345) == [2**22 + 12345]


def test_machine_description_names_the_hardware_and_software() -> None:
    machine = describe_machine()
    assert machine["cores"] >= 1
    assert machine["ram_bytes"] is None or machine["ram_bytes"] > 0
    assert machine["python"].count(".") == 2
    assert machine["torch"]
    assert machine["cpu_model"] in one_line(machine)


def _column(round_s: list[float], *, sha: str, wall: float, reference_sha: str = "a") -> dict:
    return {"round_s": round_s, "wall_s": wall, "accuracy": 0.9, "final_state_sha256": sha,
            "reference_sha256": reference_sha, "memory": {"peak_total_rss_bytes": 2**30}}


def test_overhead_leaves_out_the_first_round() -> None:
    pytorch = _column([5.0, 0.10, 0.10], sha="a", wall=2.0)
    framework = _column([30.0, 0.20, 0.30], sha="a", wall=40.0)
    assert overhead_ms(framework, pytorch) == pytest.approx(150.0)


def test_goals_met_missed_and_pending() -> None:
    pytorch = _column([1.0, 0.1, 0.1], sha="a", wall=2.0)
    flower = _column([10.0, 0.3, 0.3], sha="b", wall=40.0)
    fast = _column([2.0, 0.15, 0.15], sha="a", wall=20.0)
    slow = _column([2.0, 0.5, 0.5], sha="c", wall=30.0)

    met = goals(fedavg_rows({"pytorch": pytorch, "flower": flower, "allmende": fast}))
    assert all(line.endswith("met") for line in met), met

    missed = goals(fedavg_rows({"pytorch": pytorch, "flower": flower, "allmende": slow}))
    assert [line.endswith("MISSED") for line in missed] == [True, True, True], missed
    assert f"goal <= {GOAL_OVERHEAD_MS:.0f}" in missed[1]

    pending = goals(fedavg_rows({"pytorch": pytorch, "allmende": {"not_run": "no devnet"}}))
    assert pending == ["Allmende goals: pending, the Allmende column did not run"]


def test_fedavg_table_prints_not_run_with_its_reason() -> None:
    rows = fedavg_rows({
        "pytorch": _column([1.0, 0.1], sha="a", wall=2.0),
        "flower": {"not_run": "creating benchmarks/.venv-flower failed"},
    })
    out = io.StringIO()
    print_fedavg(rows, console=Console(file=out, width=200), title="FedAvg")
    text = out.getvalue()
    assert "flower: not run: creating benchmarks/.venv-flower failed" in text
    assert "0.9000" in text


def test_repeated_columns_show_their_median_run_and_every_wall() -> None:
    from run_all import median_run, run_times

    runs = [_column([1.0, 0.2], sha="a", wall=wall) for wall in (31.0, 29.0, 40.0)]
    assert median_run(runs)["wall_s"] == 31.0
    assert median_run(runs[:2])["wall_s"] == 29.0  # of two, the faster
    column = {**median_run(runs), "runs": [run_times(run) for run in runs]}
    rows = fedavg_rows({"pytorch": _column([1.0, 0.1], sha="a", wall=2.0), "flower": column})
    assert rows[1]["run_walls_s"] == [31.0, 29.0, 40.0]
    out = io.StringIO()
    print_fedavg(rows, console=Console(file=out, width=200), title="FedAvg", repeats=3)
    assert "each column ran 3 times in turn" in out.getvalue()
    assert "flower 31.0 / 29.0 / 40.0" in out.getvalue()


def test_scale_rows_compute_overhead_memory_and_growth() -> None:
    from scale import run_table

    def fake_column(name: str, job, *, tag: str) -> dict:  # one module under test: scale.py
        if job.trainers == 16:
            raise RuntimeError("node trainer03 exited at start-up")
        ids = [f"0x{i:040x}" for i in range(job.trainers)]
        if name == "allmende":
            return {"job": {"trainer_ids": ids}, "round_s": [9.0, 0.1 * job.trainers / 8] * 2,
                    "peak_rss_per_node_bytes": 400 * 2**20, "final_state_sha256": "s",
                    "peak_rss_by_node": {f"t{i}": 400 * 2**20 for i in range(job.trainers)}}
        assert job.trainer_ids == ids  # the reference runs with the nodes' identities
        return {"round_s": [0.05, 0.05], "final_state_sha256": "s"}

    result = run_table(FedAvgJob(), run_column=fake_column, progress=lambda _: None)
    by_size = {row["trainers"]: row for row in result["rows"]}
    assert by_size[16] == {"trainers": 16, "not_run": "node trainer03 exited at start-up"}
    assert by_size[8]["identical_to_pytorch"] is True
    assert by_size[32]["peak_rss_all_nodes_bytes_growth"] == pytest.approx(4.0)
    small, large = by_size[8]["overhead_ms"], by_size[32]["overhead_ms"]
    assert by_size[32]["overhead_ms_growth"] == pytest.approx(large / small)
    assert large > small
