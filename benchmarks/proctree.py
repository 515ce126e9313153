"""Run a command and watch the memory of its whole process tree (Linux ``/proc``).

A benchmark column may be one process (the PyTorch loop), a driver with Ray daemons and actors
(Flower), or node processes plus Anvil (Allmende). :func:`run_watched` samples every descendant
of the child a few times a second and keeps, per process, its peak resident set (``VmHWM``, which
the kernel tracks exactly between samples) and, for the tree, the largest sum of current RSS seen
in one sample. Processes that live shorter than one interval can be missed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PROC = Path("/proc")
DEFAULT_INTERVAL_S = 0.2


@dataclass
class ProcessPeak:
    """Peak resident memory of one process of the tree."""

    pid: int
    name: str
    peak_rss_bytes: int


@dataclass
class TreeMemory:
    """What :func:`run_watched` saw: per-process peaks and the largest total at one instant."""

    processes: dict[int, ProcessPeak] = field(default_factory=dict)
    peak_total_rss_bytes: int = 0
    samples: int = 0

    def by_name(self) -> dict[str, int]:
        """Largest peak RSS per process name (``python3``, ``raylet``, ``anvil`` ...)."""
        peaks: dict[str, int] = {}
        for proc in self.processes.values():
            peaks[proc.name] = max(peaks.get(proc.name, 0), proc.peak_rss_bytes)
        return peaks

    def as_json(self) -> dict[str, object]:
        return {
            "peak_total_rss_bytes": self.peak_total_rss_bytes,
            "processes_seen": len(self.processes),
            "samples": self.samples,
            "peak_rss_by_name": self.by_name(),
        }


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def descendants(root: int) -> list[int]:
    """``root`` and every process below it, found through ``/proc/*/stat``."""
    children = _children_map()
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def _status(pid: int) -> tuple[str, int, int] | None:
    """(name, current RSS bytes, peak RSS bytes) of ``pid``, or None if it is gone."""
    try:
        lines = (PROC / str(pid) / "status").read_text().splitlines()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    if "VmRSS" not in fields:  # a zombie has no memory left
        return None
    return (
        fields["Name"].strip(),
        int(fields["VmRSS"].split()[0]) * 1024,
        int(fields["VmHWM"].split()[0]) * 1024,
    )


def sample_tree(root: int, memory: TreeMemory) -> None:
    """Add one sample of ``root``'s tree to ``memory``."""
    total = 0
    for pid in descendants(root):
        status = _status(pid)
        if status is None:
            continue
        name, rss, peak = status
        total += rss
        seen = memory.processes.get(pid)
        if seen is None or peak > seen.peak_rss_bytes:
            memory.processes[pid] = ProcessPeak(pid=pid, name=name, peak_rss_bytes=peak)
    memory.peak_total_rss_bytes = max(memory.peak_total_rss_bytes, total)
    memory.samples += 1


def run_watched(
    command: list[str],
    *,
    log_path: Path,
    timeout_s: float,
    interval_s: float = DEFAULT_INTERVAL_S,
    env: dict[str, str] | None = None,
) -> tuple[int, float, TreeMemory]:
    """Run ``command`` (output to ``log_path``), watching its tree's memory until it exits.

    Returns (exit code, ``time.time()`` just before the process was started, memory). The command
    runs in its own process group; if it is still running after ``timeout_s`` the whole group is
    killed and the exit code is -9.
    """
    memory = TreeMemory()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        started_at = time.time()
        child = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                sample_tree(child.pid, memory)
                done.wait(interval_s)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            code = child.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            code = -9
        finally:
            done.set()
            watcher.join()
    return code, started_at, memory
