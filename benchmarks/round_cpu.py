"""CPU time per round of every process of the FedAvg network: each node and Anvil.

Starts the same network as the Allmende column of the FedAvg benchmark (``allmende_net.py``),
runs a longer job (``--rounds``, default 40), and reads each process's user+system CPU time from
``/proc/<pid>/stat`` when round 5 starts and when round ``rounds - 2`` starts. Printed per
process in milliseconds per round, with the wall time per round and the round phases from the
node logs. A diagnostic (not part of ``make bench``): it shows where a round's CPU goes.

    python benchmarks/round_cpu.py [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from allmende.chain import JobStatus
from allmende_net import BenchNetwork, JobTrace
from fedavg_job import FedAvgJob
from node_logs import phase_summary

FIRST_ROUND = 5  # after start-up effects
POLL_S = 0.05  # a faster poll from this process would itself take CPU from the rounds
ENDED = (JobStatus.FINISHED, JobStatus.CANCELLED)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds so far of process ``pid`` and its running descendants (the
    devnet's pid is the npm package's launcher, whose child is the Anvil binary)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_seconds(child) for child in _children(pid))


def _children(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(child) for child in (task / "children").read_text().split()]
    return children


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40, help="rounds of the job (>= 10)")
    rounds = max(10, parser.parse_args().rounds)
    root = Path(tempfile.mkdtemp(prefix="allmende-round-cpu-"))
    network = BenchNetwork(root, FedAvgJob(rounds=rounds))
    try:
        started = time.perf_counter()
        network.start()
        print(f"network up in {time.perf_counter() - started:.1f} s", flush=True)
        pids = {node.name: node.pid for node in network.nodes() if node.pid}
        anvil = network.devnet.pid()  # this network's own Anvil, not another one on the machine
        if anvil is None:
            raise SystemExit("The benchmark network's Anvil is not running.")
        pids["anvil"] = anvil
        traces: list[JobTrace] = []
        runner = threading.Thread(target=lambda: traces.append(network.run_job()))
        runner.start()
        contracts = network.contracts()

        def reached(round_: int) -> int:
            while True:  # before the job exists its record reads as round 0
                job = contracts.jobs.job(1)
                if job.current_round >= round_ or job.status in ENDED:
                    return job.current_round
                time.sleep(POLL_S)

        first = reached(FIRST_ROUND)
        t0, before = time.perf_counter(), {name: cpu_seconds(pid) for name, pid in pids.items()}
        last = reached(rounds - 2)
        t1, after = time.perf_counter(), {name: cpu_seconds(pid) for name, pid in pids.items()}
        runner.join()
        count = last - first
        print(f"rounds {first}..{last}: {1000 * (t1 - t0) / count:.0f} ms a round (wall)")
        total = 0.0
        for name in pids:
            per_round = 1000 * (after[name] - before[name]) / count
            total += per_round
            print(f"  {name:10s} {per_round:6.1f} ms CPU a round")
        print(f"  {'all':10s} {total:6.1f} ms CPU a round")
        logs = [node.home / "node.log" for node in network.nodes()]
        phases = phase_summary(logs, job_id=traces[0].job_id)
        print("phases:", ", ".join(f"{k} {1000 * v:.0f} ms" for k, v in phases.items()))
    finally:
        network.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
