"""Turn benchmark results into figures and printed tables.

A column's raw result is the JSON its script wrote (see ``fedavg_pytorch.py``) plus what
``run_all.py`` measured around it (``wall_s``, ``memory``). A column that did not run carries
``{"not_run": reason}`` and prints as "not run" with that reason; no figure is ever invented.
"""

from __future__ import annotations

import statistics
from typing import Any

from rich.console import Console
from rich.table import Table

GOAL_WALL_RATIO = 0.5
"""Allmende end to end must take at most this fraction of Flower's wall time."""
GOAL_OVERHEAD_MS = 150.0
"""Allmende's per-round overhead over the plain PyTorch loop must stay at or under this."""

NOT_APPLICABLE = "n/a"
FEDAVG_HEADERS = (
    "column", "wall s", "job s", "1st round s", "round ms", "overhead ms", "accuracy",
    "same bits", "bytes/trainer/round", "peak RSS/node", "peak RSS total", "gas/round",
)
SCALE_HEADERS = (
    "trainers", "pytorch round ms", "allmende round ms", "overhead ms", "overhead x",
    "peak RSS/node", "RSS all nodes", "RSS all x", "network up s", "job s", "accuracy",
    "same bits",
)


def steady_round_s(result: dict[str, Any]) -> float | None:
    """Mean round time without the first round (which carries start-up: actors, processes)."""
    rounds = result.get("round_s") or []
    steady = rounds[1:] if len(rounds) > 1 else rounds
    return statistics.fmean(steady) if steady else None


def overhead_ms(result: dict[str, Any], reference: dict[str, Any]) -> float | None:
    """Steady per-round time of ``result`` minus the plain PyTorch loop's, in milliseconds."""
    mine, base = steady_round_s(result), steady_round_s(reference)
    if mine is None or base is None:
        return None
    return (mine - base) * 1000.0


def _mib(value: Any) -> str:
    return f"{value / 2**20:.0f} MiB" if isinstance(value, int | float) else NOT_APPLICABLE


def _number(value: Any, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, int | float) else NOT_APPLICABLE


def fedavg_rows(columns: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row of derived figures per column, in the table's order."""
    reference = columns.get("pytorch", {})
    rows = []
    for name, result in columns.items():
        if "not_run" in result:
            rows.append({"column": name, "not_run": result["not_run"]})
            continue
        identical = result.get("final_state_sha256") == result.get("reference_sha256")
        rows.append(
            {
                "column": name,
                "wall_s": result.get("wall_s"),
                "job_wall_s": result.get("job_wall_s"),
                "from_node_run_s": result.get("from_node_run_s"),
                "first_round_s": (result.get("round_s") or [None])[0],
                "steady_round_ms": _scaled(steady_round_s(result), 1000.0),
                "overhead_ms": None if name == "pytorch" else overhead_ms(result, reference),
                "accuracy": result.get("accuracy"),
                "identical_to_pytorch": identical if "reference_sha256" in result else None,
                "bytes_sent_per_trainer_round": result.get("bytes_sent_per_trainer_round"),
                "peak_rss_per_node_bytes": result.get("peak_rss_per_node_bytes"),
                "peak_total_rss_bytes": (result.get("memory") or {}).get("peak_total_rss_bytes"),
                "gas_per_round": result.get("gas_per_round"),
                "round_phases_s": result.get("round_phases_s"),
                "run_walls_s": [run["wall_s"] for run in result.get("runs", [])],
            }
        )
    return rows


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def goals(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's three goals for the Allmende column, each met, missed or pending."""
    by_name = {row["column"]: row for row in rows}
    allmende, flower = by_name.get("allmende", {}), by_name.get("flower", {})
    if "wall_s" not in allmende:
        return ["Allmende goals: pending, the Allmende column did not run"]
    lines = []
    if isinstance(flower.get("wall_s"), float):
        ratio = allmende["wall_s"] / flower["wall_s"]
        verdict = "met" if ratio <= GOAL_WALL_RATIO else "MISSED"
        lines.append(f"wall time {ratio:.2f} x Flower's (goal <= {GOAL_WALL_RATIO}): {verdict}")
        if isinstance(allmende.get("from_node_run_s"), float):
            lines.append(f"  (from `allmende node run`, the contracts and node homes set up "
                         f"beforehand: {allmende['from_node_run_s'] / flower['wall_s']:.2f} x)")
        if isinstance(allmende.get("job_wall_s"), float):
            lines.append(f"  (the job alone, from `allmende job submit` with the nodes already "
                         f"running: {allmende['job_wall_s'] / flower['wall_s']:.2f} x)")
    else:
        lines.append("wall time vs Flower: Flower did not run, cannot compare")
    overhead = allmende.get("overhead_ms")
    if overhead is not None:
        verdict = "met" if overhead <= GOAL_OVERHEAD_MS else "MISSED"
        lines.append(f"per-round overhead {overhead:.0f} ms (goal <= {GOAL_OVERHEAD_MS:.0f}): "
                     f"{verdict}")
    identical = allmende.get("identical_to_pytorch")
    lines.append(
        "final model bit-identical to the PyTorch loop: "
        + {True: "met", False: "MISSED", None: "not checked"}[identical]
    )
    return lines


def print_fedavg(
    rows: list[dict[str, Any]], *, console: Console, title: str, repeats: int = 1
) -> None:
    """Table 1: the same FedAvg job three ways (each column's median run of ``repeats``)."""
    table = Table(title=title)
    for header in FEDAVG_HEADERS:
        table.add_column(header, justify="left" if header == "column" else "right")
    for row in rows:
        if "not_run" in row:
            table.add_row(row["column"], "not run", *["-"] * 10)
            continue
        same = row["identical_to_pytorch"]
        table.add_row(
            row["column"],
            _number(row["wall_s"], ".1f"),
            _number(row["job_wall_s"], ".1f"),
            _number(row["first_round_s"], ".2f"),
            _number(row["steady_round_ms"], ".0f"),
            _number(row["overhead_ms"], "+.0f"),
            _number(row["accuracy"], ".4f"),
            "ref" if row["column"] == "pytorch" else {True: "yes", False: "no", None: "?"}[same],
            _number(row["bytes_sent_per_trainer_round"], ",.0f"),
            _mib(row["peak_rss_per_node_bytes"]),
            _mib(row["peak_total_rss_bytes"]),
            _number(row["gas_per_round"], ",.0f"),
        )
    console.print(table)
    if repeats > 1:
        walls = "; ".join(
            f"{row['column']} " + " / ".join(f"{wall:.1f}" for wall in row["run_walls_s"])
            for row in rows
            if row.get("run_walls_s")
        )
        console.print(f"  each column ran {repeats} times in turn; shown: its median run by wall "
                      f"time (walls in s: {walls})")
    for row in rows:
        if "not_run" in row:
            console.print(f"  {row['column']}: not run: {row['not_run']}")
    for row in rows:
        if row.get("round_phases_s"):
            parts = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in row["round_phases_s"].items())
            console.print(f"  {row['column']} round phases (mean of rounds 2..N): {parts}")
    for line in goals(rows):
        console.print("  " + line)


def print_robustness(result: dict[str, Any], *, console: Console) -> None:
    """Table 2: final accuracy per partition and attack (rows) and aggregation rule (columns),
    then the clean and honest-only FedAvg references and which rules meet the goal."""
    rules = result["rules"]
    table = Table(title=result["title"])
    table.add_column("partition")
    table.add_column("attack")
    for rule in rules:
        header = f"{rule} (default)" if rule == result.get("default_rule") else rule
        table.add_column(header, justify="right")
    cells = {(row["partition"], row["attack"], row["rule"]): row["accuracy"]
             for row in result["rows"]}
    for partition, attack in dict.fromkeys((row["partition"], row["attack"])
                                           for row in result["rows"]):
        table.add_row(partition, attack,
                      *(f"{cells[(partition, attack, rule)]:.3f}" for rule in rules))
    console.print(table)
    for line in robustness_summary(result):
        console.print("  " + line)


def robustness_summary(result: dict[str, Any]) -> list[str]:
    """The lines printed under the robustness table: references and the goal per partition."""
    lines = []
    goal = result.get("goal", {})
    points = goal.get("points", 0.02) * 100
    default = result.get("default_rule")
    for partition, clean in result.get("clean_fedavg", {}).items():
        honest = result.get("honest_only_fedavg", {}).get(partition)
        line = f"{partition}: clean FedAvg {clean:.3f}"
        if honest is not None:
            line += f", FedAvg of the honest trainers alone {honest:.3f}"
        verdict = goal.get(partition, {})
        holding = verdict.get("holding", [])
        line += (f"; within {points:.0f} points of clean FedAvg under every attack: "
                 + (", ".join(holding) if holding else "no rule"))
        if default in verdict.get("worst_gap", {}):
            gap = verdict["worst_gap"][default] * 100
            line += f" (default {default}: worst gap {gap:.1f} points)"
        lines.append(line)
    return lines


def print_not_run(title: str, reason: str, *, console: Console) -> None:
    """A table that could not be produced, with the reason."""
    console.print(f"[bold]{title}[/bold]: not run: {reason}")


def print_scale(result: dict[str, Any], *, console: Console) -> None:
    """Table 3: per-round overhead and memory per node against the number of trainers."""
    table = Table(title="Allmende with more trainer processes on one machine")
    for header in SCALE_HEADERS:
        table.add_column(header, justify="right")
    for row in result["rows"]:
        if "not_run" in row:
            table.add_row(str(row["trainers"]), "not run", *["-"] * (len(SCALE_HEADERS) - 2))
            continue
        table.add_row(
            str(row["trainers"]),
            _number(row["pytorch_round_ms"], ".0f"),
            _number(row["allmende_round_ms"], ".0f"),
            _number(row["overhead_ms"], "+.0f"),
            _number(row["overhead_ms_growth"], ".2f"),
            _mib(row["peak_rss_per_node_bytes"]),
            _mib(row["peak_rss_all_nodes_bytes"]),
            _number(row["peak_rss_all_nodes_bytes_growth"], ".2f"),
            _number(row["network_ready_s"], ".0f"),
            _number(row["job_wall_s"], ".1f"),
            _number(row["accuracy"], ".4f"),
            {True: "yes", False: "no"}[row["identical_to_pytorch"]],
        )
    console.print(table)
    for row in result["rows"]:
        if "not_run" in row:
            console.print(f"  {row['trainers']} trainers: not run: {row['not_run']}")
