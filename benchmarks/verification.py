"""Table 6: how often the verifier catches a cheating provider, and what checking costs.

Compute mode's check (:mod:`allmende.verify`) run for real, in process: a ``digits-mlp``
provider trains ``SEGMENTS`` segments of ``K`` SGD steps (batch ``BATCH``) on the shards the job
seed assigns it, committing a checkpoint per segment; a verifier samples ``SAMPLES`` segments
from a beacon and re-executes them. For every attack of :mod:`allmende.verify.attacks` and every
fake fraction ``f`` (the share of segments the provider faked, ``max(1, round(f * SEGMENTS))``
of them, drawn at random), ``--traces`` providers each commit a trace with their own faked
segments, and each trace is checked under ``--beacons`` beacons: a trial is one (trace, beacon)
pair, detected when any of its sampled segments fails. Each segment of a trace is re-executed
once and its outcome reused by every beacon that samples it (re-executing it again gives the same
bytes), so the figures are measured outcomes of real re-execution, not the formula; the formula
``1 - C(n - b, s) / C(n, s)`` is printed beside them.

``verifier_overhead`` is measured: the median wall time of a whole :func:`verify_trace` (root,
ends, ``SAMPLES`` fetches, decodes and re-executions) over honest traces, divided by the median
wall time the provider took to train and store its trace. ``drift`` is the relative L2 distance
``|a - b| / |a - start|`` between one segment trained with 1 and with 2 intra-op threads, for
``digits-mlp`` and a small ``byte-gpt`` on standard-library shards; ``attack_distance`` is the
smallest distance of a faked segment from its honest re-execution, per attack: a cross-platform
threshold must sit between the two.

Run alone: ``python benchmarks/verification.py [--traces N] [--beacons N] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from allmende.learn.digits import DigitsMLP
from allmende.learn.task import Task, load_task, seeded_state
from allmende.store.blobs import BlobStore
from allmende.store.codec import decode_state
from allmende.verify.attacks import ATTACKS, faked_segments, run_provider
from allmende.verify.check import (
    check_segment,
    escape_probability,
    relative_l2,
    sample_segments,
    verify_trace,
)
from allmende.verify.plan import (
    assign_shards,
    batch_plan,
    digits_shards,
    join_shards,
    n_items,
    plan_seed,
    stdlib_shards,
)
from allmende.verify.trace import ComputeRound, State, Stepper, checkpoint_hash, deterministic

SEGMENTS = 480
K = 2
BATCH = 16
LR = 0.1
SAMPLES = 36
"""``1 - 0.9**36 = 97.7%``: at least that detection at a 10% fake fraction, at 36/480 = 7.5% of
the provider's steps."""
FRACTIONS = (0.01, 0.05, 0.1, 0.25, 0.5)
DEFAULT_TRACES = 4
DEFAULT_BEACONS = 100
PROVIDER = "0x" + "5e" * 20
JOB_SEED = 2026
GOAL_DETECTION = 0.95
GOAL_FRACTION = 0.1
GOAL_OVERHEAD = 0.1
RESULT = Path(__file__).resolve().parent / "results" / "verification.json"


def digits_round(provider: str = PROVIDER, round_: int = 0) -> ComputeRound:
    shards = digits_shards(8)
    chosen = assign_shards(JOB_SEED, round_, provider, num_shards=8, count=2)
    data = join_shards([shards[i] for i in chosen])
    seed = plan_seed(JOB_SEED, round_, provider)
    plan = batch_plan(seed, items=n_items(data), steps=SEGMENTS * K, batch_size=BATCH)
    return ComputeRound(task=DigitsMLP(), data=data, plan=plan, k=K, lr=LR)


def gpt_round() -> ComputeRound:
    task = load_task("byte-gpt", data={"n_layer": 2, "n_head": 4, "n_embd": 64, "context": 32})
    shards = stdlib_shards(16, context=32, limit_bytes=200_000)
    chosen = assign_shards(JOB_SEED, 0, PROVIDER, num_shards=16, count=2)
    data = join_shards([shards[i] for i in chosen])
    plan = batch_plan(plan_seed(JOB_SEED, 0, PROVIDER), items=n_items(data), steps=4 * 8,
                      batch_size=8)  # fmt: skip
    return ComputeRound(task=task, data=data, plan=plan, k=8, lr=LR)


def _trace_seed(attack: str, fraction: float, trace: int) -> int:
    digest = hashlib.sha256(f"verification/{attack}/{fraction}/{trace}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def _beacon(trace_seed: int, draw: int) -> bytes:
    return f"block-{trace_seed}-{draw}".encode()


def detection_cell(
    job: ComputeRound, start: State, attack: str, fraction: float, *, traces: int, beacons: int,
    workdir: Path,
) -> dict[str, Any]:  # fmt: skip
    """The measured detection of ``attack`` at ``fraction`` over ``traces * beacons`` trials,
    and the smallest distance of a faked segment from its honest re-execution."""
    stepper = Stepper(job)
    detected = 0
    distances: list[float] = []
    for t in range(traces):
        seed = _trace_seed(attack, fraction, t)
        faked = faked_segments(job.segments, fraction, seed=seed)
        store = BlobStore(workdir / f"{attack}-{fraction}-{t}")
        run = run_provider(job, start, store, attack=attack, faked=faked, seed=seed)
        outcome: dict[int, bool] = {}
        with deterministic():
            for draw in range(beacons):
                chosen = sample_segments(_beacon(t, draw), PROVIDER, segments=job.segments,
                                         count=SAMPLES)  # fmt: skip
                for i in chosen:
                    if i not in outcome:
                        outcome[i] = check_segment(job, run.trace, i, run.fetch,
                                                   stepper=stepper).ok  # fmt: skip
                detected += not all(outcome[i] for i in chosen)
            for i in sorted(faked)[:3]:
                begin = decode_state(store.read_bytes(run.trace.leaves[i].params.hex()))
                theirs = decode_state(store.read_bytes(run.trace.leaves[i + 1].params.hex()))
                ours = stepper.run(begin, job.batches(i))
                distances.append(relative_l2(ours, theirs, begin))
        _clear(store)
    faked_count = len(faked_segments(job.segments, fraction, seed=0))
    return {
        "attack": attack,
        "fake_fraction": fraction,
        "detection": detected / (traces * beacons),
        "trials": traces * beacons,
        "faked_segments": faked_count,
        "formula": 1 - escape_probability(job.segments, faked_count, SAMPLES),
        "min_distance": min(distances) if distances else None,
    }


def _clear(store: BlobStore) -> None:
    for path in store.root.rglob("*"):
        if path.is_file():
            path.unlink()


def overhead(job: ComputeRound, start: State, *, repeats: int, workdir: Path) -> dict[str, Any]:
    """Median provider time (train and store a trace) and verifier time (a whole check)."""
    provider_s: list[float] = []
    verifier_s: list[float] = []
    for r in range(repeats):
        store = BlobStore(workdir / f"overhead-{r}")
        began = time.perf_counter()
        run = run_provider(job, start, store)
        provider_s.append(time.perf_counter() - began)
        began = time.perf_counter()
        verdict = verify_trace(
            job, run.trace, root=run.trace.root, start_hash=checkpoint_hash(start),
            update_hash=checkpoint_hash(run.update), beacon=_beacon(-1, r), provider=PROVIDER,
            samples=SAMPLES, fetch=run.fetch,
        )  # fmt: skip
        verifier_s.append(time.perf_counter() - began)
        if not verdict.ok:
            raise RuntimeError(f"an honest trace failed verification: {verdict.reason}")
        _clear(store)
    provider, verifier = statistics.median(provider_s), statistics.median(verifier_s)
    return {"provider_seconds": provider, "verifier_seconds": verifier,
            "ratio": verifier / provider, "step_ratio": SAMPLES / SEGMENTS}  # fmt: skip


def drift(task_round: ComputeRound, start: State, *, segments: int) -> dict[str, Any]:
    """1 vs 2 intra-op threads on ``segments`` segments: the largest relative L2 distance, and
    whether the same thread count replays exactly."""
    stepper = Stepper(task_round)
    worst = 0.0
    identical = 0
    exact = True
    state = start
    for i in range(segments):
        with deterministic(1):
            one = stepper.run(state, task_round.batches(i))
            again = stepper.run(state, task_round.batches(i))
        with deterministic(2):
            two = stepper.run(state, task_round.batches(i))
        exact = exact and checkpoint_hash(one) == checkpoint_hash(again)
        identical += checkpoint_hash(one) == checkpoint_hash(two)
        worst = max(worst, relative_l2(one, two, state))
        state = one
    return {"task": task_round.task.name, "segments": segments, "k": task_round.k,
            "max_relative_l2": worst, "bit_identical_1_vs_2_threads": identical,
            "same_threads_exact": exact}  # fmt: skip


def run_table(
    *, traces: int = DEFAULT_TRACES, beacons: int = DEFAULT_BEACONS,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:  # fmt: skip
    started = time.perf_counter()
    job = digits_round()
    task: Task = job.task
    start = seeded_state(task, seed=JOB_SEED)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="allmende-verification-") as tmp:
        workdir = Path(tmp)
        cost = overhead(job, start, repeats=5, workdir=workdir)
        progress(f"  provider {cost['provider_seconds']:.3f} s, verifier "
                 f"{cost['verifier_seconds']:.3f} s: overhead {cost['ratio']:.3f}")  # fmt: skip
        honest = detection_cell(job, start, "honest", 0.0, traces=traces, beacons=beacons,
                                workdir=workdir)  # fmt: skip
        rows.append(honest)
        progress(f"  honest: flagged {honest['detection']:.3f} of {honest['trials']} trials")
        for attack in ATTACKS:
            for fraction in FRACTIONS:
                row = detection_cell(job, start, attack, fraction, traces=traces,
                                     beacons=beacons, workdir=workdir)  # fmt: skip
                rows.append(row)
                progress(f"  {attack:11} f={fraction:<5} detection {row['detection']:.3f} "
                         f"(formula {row['formula']:.3f})")  # fmt: skip
    drifts = [drift(job, start, segments=20)]
    gpt = gpt_round()
    drifts.append(drift(gpt, seeded_state(gpt.task, seed=JOB_SEED), segments=4))
    for entry in drifts:
        progress(f"  drift {entry['task']}: 1 vs 2 threads max relative L2 "
                 f"{entry['max_relative_l2']:.2e}")  # fmt: skip
    at_goal = [r for r in rows if r["attack"] != "honest" and r["fake_fraction"] >= GOAL_FRACTION]
    return {
        "title": (
            f"Detection of a cheating digits-mlp provider: {SEGMENTS} segments of {K} "
            f"steps, {SAMPLES} sampled"
        ),
        "segments": SEGMENTS,
        "k": K,
        "samples": SAMPLES,
        "batch_size": BATCH,
        "traces_per_cell": traces,
        "beacons_per_trace": beacons,
        "verifier_overhead": cost["ratio"],
        "overhead": cost,
        "rows": rows,
        "drift": drifts,
        "attack_distance": {
            attack: min(r["min_distance"] for r in rows if r["attack"] == attack)
            for attack in ATTACKS
            if attack != "checkpoint"
        },
        "goal": {
            "detection": GOAL_DETECTION,
            "fake_fraction": GOAL_FRACTION,
            "overhead": GOAL_OVERHEAD,
            "met": cost["ratio"] <= GOAL_OVERHEAD
            and all(r["detection"] >= GOAL_DETECTION for r in at_goal)
            and honest["detection"] == 0.0,
        },
        "seconds": time.perf_counter() - started,
    }


def print_table(result: dict[str, Any], *, console: Any) -> None:
    from rich.table import Table

    table = Table(title=result["title"])
    table.add_column("attack")
    for fraction in FRACTIONS:
        table.add_column(f"f = {fraction:.0%}", justify="right")
    for attack in ATTACKS:
        cells = {r["fake_fraction"]: r for r in result["rows"] if r["attack"] == attack}
        table.add_row(attack, *(f"{cells[f]['detection']:.3f}" for f in FRACTIONS))
    formula = {r["fake_fraction"]: r["formula"] for r in result["rows"] if r["attack"] == "skip"}
    table.add_row("formula", *(f"{formula[f]:.3f}" for f in FRACTIONS))
    console.print(table)
    honest = next(r for r in result["rows"] if r["attack"] == "honest")
    console.print(f"  honest providers flagged: {honest['detection']:.3f} of {honest['trials']}"
                  f" trials; verifier overhead {result['verifier_overhead']:.3f} of training "
                  f"({result['samples']}/{result['segments']} segments)")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    from machine import describe_machine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=DEFAULT_TRACES)
    parser.add_argument("--beacons", type=int, default=DEFAULT_BEACONS)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    if args.traces < 1 or args.beacons < 1:
        parser.error("--traces and --beacons must be at least 1")
    console = Console(width=max(Console().width, 120))
    result = run_table(traces=args.traces, beacons=args.beacons, progress=console.print)
    print_table(result, console=console)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": describe_machine(), **result}, indent=2,
                                   sort_keys=True) + "\n")  # fmt: skip
    console.print(f"  written: {args.out}")
    return 0 if result["goal"]["met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
