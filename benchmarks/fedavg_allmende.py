"""The benchmark's FedAvg job on Allmende: a real Anvil and one OS process per node.

``job.trainers`` trainer nodes, each declaring partition part *i*, and the job owner's node,
which also aggregates (quorum 1), are started as a user would (see :mod:`allmende_net`). The job
is submitted with ``allmende job submit`` and followed on chain; the final model is fetched with
``allmende model get`` and evaluated on the shared held-out split.

Figures: when each round became final (the finalizing node's log stamp, see :func:`round_ends`), so
the final model's time; its digest (compared by ``run_all.py`` with the PyTorch loop run with the
nodes' addresses as trainer identities), blob bytes each trainer served per round (its
``/metrics``), the peak RSS of each node process (``VmHWM``), the mean time of a round's phases from
the nodes' logs (:mod:`node_logs`), and the gas of the job's round transactions from their
receipts: ``commit_update``, the vote's ``commit_vote`` and ``reveal`` (the reveal that completes
the quorum finalizes the round in the same transaction), and the ``claim`` and ``claim_vote`` of
each share (and any ``challenge``).

Run: ``python benchmarks/fedavg_allmende.py [--job JSON] [--out PATH]``.
"""

from __future__ import annotations

import itertools
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from allmende_net import BenchNetwork, JobTrace, Node
from fedavg_job import (
    FedAvgJob,
    emit,
    evaluate_state,
    load_job_task,
    parse_job_args,
    state_bytes,
    state_digest,
)
from node_logs import finalized_at, phase_summary

ROUND_FUNCTIONS = ("commit_update", "commit_vote", "reveal", "claim", "claim_vote", "challenge")
BYTES_SERVED_METRIC = "allmende_blob_bytes_served_total"


def node_peak_rss(node: Node) -> int | None:
    """Peak resident memory (``VmHWM``) of the node's process while it is still running."""
    if node.pid is None:
        return None
    try:
        status = Path(f"/proc/{node.pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


def bytes_served(node: Node) -> float:
    """Blob bytes the node has sent to peers, from its Prometheus metrics."""
    text = httpx.get(f"http://127.0.0.1:{node.port}/metrics", timeout=5.0).text
    for line in text.splitlines():
        if line.startswith(BYTES_SERVED_METRIC + " "):
            return float(line.split()[1])
    return 0.0


def round_gas(network: BenchNetwork, trace: JobTrace) -> dict[str, int]:
    """Gas of the job's per-round transactions, by function, from their receipts."""
    contracts = network.contracts()
    w3 = contracts.client.w3
    assert network.deployment is not None
    jobs = contracts.client.contract(network.deployment.jobs)
    totals = dict.fromkeys(ROUND_FUNCTIONS, 0)
    for number in range(trace.first_block + 1, trace.last_block + 1):
        block = w3.eth.get_block(number, full_transactions=True)
        for tx in block["transactions"]:
            if (tx.get("to") or "").lower() != jobs.address.lower():
                continue
            function, args = jobs.decode_function_input(tx["input"])
            if function.fn_name in totals and args.get("job_id") == trace.job_id:
                totals[function.fn_name] += w3.eth.get_transaction_receipt(tx["hash"])["gasUsed"]
    return totals


def final_state(network: BenchNetwork, trace: JobTrace) -> dict:
    """The final model, fetched and hash-checked by ``allmende model get``."""
    from allmende.store.codec import decode_state  # torch: not needed before the job has ended

    assert network.owner is not None
    path = network.root / "final.safetensors"
    network.run_cli("model", "get", trace.final_model_hash.removeprefix("0x"), "-o", str(path),
                 "--job", str(trace.job_id), "--home", str(network.owner.home))
    return decode_state(path.read_bytes())


def round_ends(trace: JobTrace, finals: list[float]) -> list[float]:
    """When each round became final. From the nodes' logs (:func:`finalized_at`): the stamp is
    written as the finalizing transaction returns, so the final model is on chain by then. The
    follower polls the chain only every few hundred milliseconds (a fast poll would take CPU
    from the rounds on a small machine), so its times are the fallback when a log lacks lines."""
    return finals if len(finals) == len(trace.round_ends) else trace.round_ends


def run_allmende_fedavg(job: FedAvgJob, *, keep: Path | None = None) -> dict[str, Any]:
    """Start the network, run the job, measure, stop everything; the column's figures."""
    root = keep or Path(tempfile.mkdtemp(prefix="allmende-bench-"))
    network = BenchNetwork(root, job)
    started = time.perf_counter()
    try:
        network.set_up()
        set_up_at = time.perf_counter()
        nodes_started_at = time.time()
        network.start_nodes()
        ready_at = time.perf_counter()
        trace = network.run_job()
        rss = {node.name: node_peak_rss(node) for node in network.nodes()}
        served = {node.name: bytes_served(node) for node in network.trainers}
        gas = round_gas(network, trace)
        state = final_state(network, trace)
        logs = [node.home / "node.log" for node in network.nodes()]
        phases = phase_summary(logs, job_id=trace.job_id)
        ends = round_ends(trace, finalized_at(logs, job_id=trace.job_id))
    finally:
        network.close()
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
    task = load_job_task(job)
    metrics = evaluate_state(task, state)
    ids = [node.address for node in network.trainers]  # trainer i holds part i
    trainer_rss = [value for name, value in rss.items() if name != "owner" and value]
    return {
        "column": "allmende",
        "job": job.model_copy(update={"trainer_ids": ids}).model_dump(),
        "job_id": trace.job_id,
        "network_ready_s": ready_at - started,
        "set_up_s": set_up_at - started,
        "nodes_start_s": ready_at - set_up_at,
        "from_node_run_s": ends[-1] - nodes_started_at,
        "job_wall_s": ends[-1] - trace.submitted_at,
        "final_model_at": ends[-1],
        "round_s": [b - a for a, b in itertools.pairwise([trace.submitted_at, *ends])],
        "accuracy": metrics["accuracy"],
        "loss": metrics["loss"],
        "update_bytes": state_bytes(state),
        "bytes_sent_per_trainer_round": max(served.values()) / job.rounds,
        "peak_rss_per_node_bytes": max(trainer_rss) if trainer_rss else None,
        "peak_rss_by_node": rss,
        "gas_by_function": gas,
        "round_phases_s": phases,
        "gas_per_round": sum(gas.values()) / job.rounds,
        "final_model_hash": trace.final_model_hash,
        "final_state_sha256": state_digest(state),
    }


if __name__ == "__main__":
    job_settings, out_path = parse_job_args(sys.argv[1:])
    emit(run_allmende_fedavg(job_settings), out_path)
