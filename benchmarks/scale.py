"""Table 3: the FedAvg job on Allmende with 8, 16 and 32 trainer processes on one machine.

For each size the Allmende column runs (a real Anvil, one OS process per node), then the plain
PyTorch loop with the same trainers (the nodes' addresses as identities), which is both the
compute limit for the overhead and the reference for "same bits". Figures per size: steady
per-round time of both and the overhead, memory per trainer node and of all nodes together, the
time to bring the network up, and how overhead and memory grow relative to the smallest size.

On a 2-core machine with 32 nodes, each node's Python and torch take several hundred MiB; the
table shows exactly how much.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fedavg_job import FedAvgJob
from report import overhead_ms, steady_round_s

SCALE_TRAINERS = (8, 16, 32)

ColumnRunner = Callable[..., dict[str, Any]]
"""``run_column(name, job, tag=...)`` of ``run_all.py``: one watched column run."""


def scale_row(trainers: int, allmende: dict[str, Any], pytorch: dict[str, Any]) -> dict[str, Any]:
    """The figures of one size from its two column results."""
    node_rss = allmende.get("peak_rss_by_node") or {}
    steady_allmende, steady_pytorch = steady_round_s(allmende), steady_round_s(pytorch)
    return {
        "trainers": trainers,
        "pytorch_round_ms": None if steady_pytorch is None else steady_pytorch * 1000,
        "allmende_round_ms": None if steady_allmende is None else steady_allmende * 1000,
        "overhead_ms": overhead_ms(allmende, pytorch),
        "peak_rss_per_node_bytes": allmende.get("peak_rss_per_node_bytes"),
        "peak_rss_all_nodes_bytes": sum(v for v in node_rss.values() if v) or None,
        "network_ready_s": allmende.get("network_ready_s"),
        "job_wall_s": allmende.get("job_wall_s"),
        "accuracy": allmende.get("accuracy"),
        "identical_to_pytorch": allmende.get("final_state_sha256")
        == pytorch.get("final_state_sha256"),
        "gas_per_round": allmende.get("gas_per_round"),
    }


def add_growth(rows: list[dict[str, Any]]) -> None:
    """Each row's overhead and memory per node as a multiple of the first row's."""
    base = rows[0] if rows else {}
    for row in rows:
        for key in ("overhead_ms", "peak_rss_per_node_bytes", "peak_rss_all_nodes_bytes"):
            mine, first = row.get(key), base.get(key)
            ok = isinstance(mine, int | float) and isinstance(first, int | float) and first > 0
            row[f"{key}_growth"] = mine / first if ok else None


def run_table(
    job: FedAvgJob,
    *,
    run_column: ColumnRunner,
    progress: Callable[[str], object] = print,
    sizes: tuple[int, ...] = SCALE_TRAINERS,
) -> dict[str, Any]:
    """Every size in ``sizes``; a size that fails is recorded with its reason, not skipped."""
    rows: list[dict[str, Any]] = []
    for trainers in sizes:
        sized = job.model_copy(update={"trainers": trainers, "trainer_ids": []})
        progress(f"  {trainers} trainers")
        try:
            allmende = run_column("allmende", sized, tag=f"-scale{trainers}")
            same_ids = sized.model_copy(update={"trainer_ids": allmende["job"]["trainer_ids"]})
            pytorch = run_column("pytorch", same_ids, tag=f"-scale{trainers}")
        except Exception as error:  # one size failing must not hide the others
            rows.append({"trainers": trainers, "not_run": str(error)})
            continue
        rows.append(scale_row(trainers, allmende, pytorch))
    add_growth([row for row in rows if "not_run" not in row])
    return {"job": job.model_dump(), "sizes": list(sizes), "rows": rows}
