"""Describe the machine a benchmark ran on, so each JSON result says where its figures came from."""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
from pathlib import Path
from typing import Any

_CPUINFO = Path("/proc/cpuinfo")
_MEMINFO = Path("/proc/meminfo")


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, or what ``platform`` knows elsewhere."""
    if _CPUINFO.is_file():
        for line in _CPUINFO.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask), not the host's total."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def ram_bytes() -> int | None:
    """Total memory in bytes from /proc/meminfo, or None when unknown."""
    if _MEMINFO.is_file():
        for line in _MEMINFO.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return None


def describe_machine() -> dict[str, Any]:
    """CPU model, cores, RAM, OS, Python and torch versions, the UTC date and time, and the
    load average when it was taken (other work on the machine slows every figure)."""
    try:
        import torch

        torch_version: str | None = torch.__version__
        torch_threads: int | None = torch.get_num_threads()
    except ImportError:
        torch_version, torch_threads = None, None
    return {
        "cpu_model": cpu_model(),
        "cores": usable_cores(),
        "ram_bytes": ram_bytes(),
        "os": f"{platform.system()} {platform.release()}",
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch_version,
        "torch_threads": torch_threads,
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def one_line(machine: dict[str, Any]) -> str:
    """A short human summary: ``2 cores of <CPU>, 23.4 GiB, Linux 6.x, Python 3.11, torch 2.13``."""
    ram = machine.get("ram_bytes")
    ram_text = f"{ram / 2**30:.1f} GiB" if ram else "unknown RAM"
    return (
        f"{machine['cores']} cores of {machine['cpu_model']}, {ram_text}, {machine['os']}, "
        f"Python {machine['python']}, torch {machine['torch']} ({machine['date_utc']}, "
        f"load {_load(machine)})"
    )


def _load(machine: dict[str, Any]) -> str:
    load = machine.get("load_average")
    return " ".join(f"{value:.1f}" for value in load) if load else "unknown"


if __name__ == "__main__":
    import json

    print(json.dumps(describe_machine(), indent=2))
