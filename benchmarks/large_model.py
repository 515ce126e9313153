"""A 50M-parameter FedAvg round through real node processes: memory per node, transfer speed.

Starts ``--trainers`` trainer nodes and one aggregator node (``allmende node run``, offline: the
data plane alone, no chain) on loopback. Each trainer's update, a ~200 MB float32 model, is made
in a child process and stored in its node's blob store with the codec's streamed writer
(:func:`~allmende.store.codec.write_state`), exactly as a node stores a model. An aggregator
process then runs the aggregator role's round on the code the role calls: it fetches every
update from its trainer's node with the peer client into the aggregator node's store (streamed,
hashed while received), decodes and checks it (:func:`~allmende.node.jobdata.fetch_tensors`:
the tensors are copy-on-write maps of the blob files), aggregates with
:func:`~allmende.learn.aggregate.aggregate` (``fedavg``) and stores the new model streamed.

Printed and written to ``benchmarks/results/large_model.json``:

- peak RSS of every process (``VmHWM``), and of the aggregator also its peak private memory
  (``RssAnon``, sampled every 5 ms): the copies of the model a node really holds, apart from
  pages of blob files it maps (page cache, shared, never copied);
- each fetch's MB/s against ``hashlib.sha256`` over the same bytes in memory, measured just
  before it (goal >= 40 %);
- whether the aggregated model is byte-identical to a plain single-process PyTorch FedAvg over
  the same updates.

    .venv/bin/python benchmarks/large_model.py [--params 50000000] [--trainers 3] [--out PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

from blobs import hashlib_rate, offline_node
from machine import describe_machine, one_line

MB = 1024 * 1024
GOAL_RATIO = 0.40
RESULT = Path(__file__).resolve().parent / "results" / "large_model.json"
JOB, ROUND = 1, 0
WIDTH = 2048


def trainer_address(index: int) -> str:
    return f"0x{index + 1:040x}"


def shapes(params: int) -> dict[str, tuple[int, ...]]:
    """A transformer-like stack of ``(4 * WIDTH, WIDTH)`` matrices and biases near ``params``."""
    rows = 4 * WIDTH
    layers = max(1, round(params / (rows * WIDTH + rows)))
    out: dict[str, tuple[int, ...]] = {}
    for layer in range(layers):
        out[f"layer{layer}.weight"] = (rows, WIDTH)
        out[f"layer{layer}.bias"] = (rows,)
    return out


def global_model(params: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {name: torch.randn(shape, generator=generator) for name, shape in shapes(params).items()}


def make_update(params: int, index: int) -> dict[str, torch.Tensor]:
    """Trainer ``index``'s model: the global model plus its own small noise, in place."""
    state = global_model(params)
    generator = torch.Generator().manual_seed(1000 + index)
    for tensor in state.values():
        tensor.add_(torch.randn(tensor.shape, generator=generator), alpha=0.01)
    return state


def weight(index: int) -> int:
    return 100 * (index + 1)


def vm(pid: int | str, field: str) -> int:
    """A ``/proc/<pid>/status`` memory field in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


# -- child processes ------------------------------------------------------------------------------


def child_trainer(params: int, index: int, *, blobs: Path) -> dict[str, Any]:
    """Make trainer ``index``'s update and store it as its node would; its digest and memory."""
    from allmende.node.jobdata import update_metadata
    from allmende.store.blobs import BlobStore
    from allmende.store.codec import write_state

    base = vm("self", "VmRSS")
    update = make_update(params, index)
    metadata = update_metadata(JOB, ROUND, trainer_address(index))
    digest = write_state(BlobStore(blobs), update, metadata=metadata)
    return {"digest": digest, "baseline_rss": base, "peak_rss": vm("self", "VmHWM")}


class AnonPeak:
    """Samples this process's private memory (``RssAnon``) every 5 ms in a thread."""

    def __init__(self) -> None:
        self.peak = vm("self", "RssAnon")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, vm("self", "RssAnon"))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, vm("self", "RssAnon"))


def child_aggregator(
    params: int, model: str, updates: list[str], urls: list[str], *, blobs: Path
) -> dict[str, Any]:
    """The aggregator role's round on its own code: fetch, decode and check, FedAvg, store."""
    from allmende.learn.aggregate import aggregate
    from allmende.net.client import PeerClient
    from allmende.net.endpoints import LOOPBACK_RANGES, EndpointPolicy
    from allmende.node.jobdata import fetch_tensors, update_metadata
    from allmende.store.blobs import BlobStore
    from allmende.store.codec import write_state

    store = BlobStore(blobs)
    # shapes and dtypes only: what a node's reference model tells the checks
    reference = {name: torch.empty(shape, device="meta") for name, shape in shapes(params).items()}
    base_rss, base_anon = vm("self", "VmRSS"), vm("self", "RssAnon")
    anon = AnonPeak()

    async def round_() -> tuple[list[float], str]:
        async with PeerClient(store, policy=EndpointPolicy.allowing(LOOPBACK_RANGES)) as peers:
            global_state = (await fetch_tensors(peers, store, model, [], reference=reference)).state
            fetch_s, blobs_in = [], []
            for index, (digest, url) in enumerate(zip(updates, urls, strict=True)):
                metadata = update_metadata(JOB, ROUND, trainer_address(index))
                start = time.perf_counter()
                await peers.fetch_blob(digest, [url])  # timed alone: the transfer
                fetch_s.append(time.perf_counter() - start)
                blob = await fetch_tensors(  # from the store now: decode and check
                    peers, store, digest, [url], reference=reference, metadata=metadata
                )
                blobs_in.append((trainer_address(index), blob.state, weight(index)))
            new = aggregate("fedavg", global_state, blobs_in, {})
            return fetch_s, write_state(store, new)

    fetch_s, digest = asyncio.run(round_())
    return {
        "digest": digest,
        "fetch_s": fetch_s,
        "sizes": [store.size(d) for d in updates],
        "baseline_rss": base_rss,
        "baseline_anon": base_anon,
        "peak_rss": vm("self", "VmHWM"),
        "peak_anon": anon.stop(),
    }


def run_child(kind: str, *args: Any) -> dict[str, Any]:
    """Run ``child_<kind>(*args)`` in a fresh Python process; its JSON result."""
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import large_model as m; "
        f"print(json.dumps(m.child_{kind}(*json.loads(sys.argv[2]), "
        "**{k: m.Path(v) for k, v in json.loads(sys.argv[3]).items()})))"
    )
    paths = {k: str(v) for k, v in args[-1].items()}
    plain = [str(a) if isinstance(a, Path) else a for a in args[:-1]]
    out = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent), json.dumps(plain),
         json.dumps(paths)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# -- the network ----------------------------------------------------------------------------------


def plain_fedavg_digest(params: int, trainers: int) -> tuple[str, bytes]:
    """A plain PyTorch FedAvg over the same updates (in memory, address order) and the first
    update's blob (for the hashlib figure)."""
    from allmende.node.jobdata import update_metadata
    from allmende.store.codec import encode_state, state_hash

    updates = [make_update(params, i) for i in range(trainers)]
    total = sum(weight(i) for i in range(trainers))
    new = {}
    for name in updates[0]:
        acc = torch.zeros_like(updates[0][name])
        for i, update in enumerate(updates):
            acc = acc + weight(i) * update[name]
        new[name] = acc / total
    first = encode_state(updates[0], metadata=update_metadata(JOB, ROUND, trainer_address(0)))
    return state_hash(new), first


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=int, default=50_000_000, help="model parameters")
    parser.add_argument("--trainers", type=int, default=3, help="trainer nodes")
    parser.add_argument("--out", type=Path, default=RESULT, help="where the figures are written")
    args = parser.parse_args(argv)
    machine = describe_machine()
    print(f"Machine: {one_line(machine)}")
    n_params = sum(torch.Size(s).numel() for s in shapes(args.params).values())
    from allmende.store.codec import write_state

    with tempfile.TemporaryDirectory(prefix="allmende-bench-large-") as tmp:
        root = Path(tmp)
        with contextlib.ExitStack() as stack:
            trainers = [
                stack.enter_context(offline_node(root / f"t{i}")) for i in range(args.trainers)
            ]
            _, agg = stack.enter_context(offline_node(root / "agg"))
            idle_rss = {
                f"trainer node {i}": vm(p.pid, "VmRSS") for i, (_, p) in enumerate(trainers)
            }
            idle_rss["aggregator node"] = vm(agg.pid, "VmRSS")
            made = []
            for i in range(args.trainers):
                made.append(
                    run_child("trainer", args.params, i, {"blobs": root / f"t{i}" / "blobs"})
                )
            from allmende.store.blobs import BlobStore

            model = write_state(BlobStore(root / "agg" / "blobs"), global_model(args.params))
            hashing_before = hashlib_rate(os.urandom(256 * MB))
            agg_run = run_child(
                "aggregator", args.params, model, [m["digest"] for m in made],
                [url for url, _ in trainers], {"blobs": root / "agg" / "blobs"},
            )  # fmt: skip
            nodes = {f"trainer node {i}": vm(p.pid, "VmHWM") for i, (_, p) in enumerate(trainers)}
            nodes["aggregator node"] = vm(agg.pid, "VmHWM")
        expected, first_blob = plain_fedavg_digest(args.params, args.trainers)
        hashing = hashlib_rate(first_blob)
        del first_blob
    model_bytes = agg_run["sizes"][0]
    rates = [size / MB / s for size, s in zip(agg_run["sizes"], agg_run["fetch_s"], strict=True)]
    hashlib_mb_s = statistics.median([hashing_before, hashing])
    ratio = statistics.median(rates) / hashlib_mb_s
    same = agg_run["digest"] == expected

    def copies(nbytes: int) -> float:
        return nbytes / model_bytes

    print(
        f"model                {n_params:,} parameters, {model_bytes / MB:.0f} MiB a blob, "
        f"{args.trainers} trainers"
    )
    print(f"{'process':36} {'peak RSS':>9} {'above base':>11} {'models':>7}")
    rows: dict[str, dict[str, int]] = {}
    for i, m in enumerate(made):
        rows[f"trainer {i}: make and store update"] = {
            "peak": m["peak_rss"], "base": m["baseline_rss"]}  # fmt: skip
    for name, peak in nodes.items():
        rows[f"{name}: serve (HTTP server)"] = {"peak": peak, "base": idle_rss[name]}
    rows["aggregator: round, all RSS"] = {
        "peak": agg_run["peak_rss"], "base": agg_run["baseline_rss"]}  # fmt: skip
    rows["aggregator: round, private (anon)"] = {
        "peak": agg_run["peak_anon"], "base": agg_run["baseline_anon"]}  # fmt: skip
    for name, row in rows.items():
        above = row["peak"] - row["base"]
        print(f"{name:36} {row['peak'] / MB:5.0f} MiB {above / MB:7.0f} MiB {copies(above):7.2f}")
    print("  base: the process's RSS after its imports (nodes: once healthy, before any blob); "
          "'all RSS' counts the pages of blob files the aggregator maps (page cache, not copies)")
    print(
        f"hashlib.sha256       {hashlib_mb_s:8.0f} MB/s in memory (before {hashing_before:.0f}, "
        f"after {hashing:.0f})"
    )
    print("fetch                " + ", ".join(f"{r:.0f}" for r in rates) + " MB/s")
    print(f"ratio                {ratio:8.1%} of hashlib (median fetch; goal >= {GOAL_RATIO:.0%})")
    print(f"FedAvg vs plain PyTorch: {'same bytes' if same else 'DIFFERENT'} ({expected[:16]})")
    result = {
        "machine": machine, "params": n_params, "trainers": args.trainers,
        "model_bytes": model_bytes, "hashlib_mb_s": round(hashlib_mb_s, 1),
        "fetch_mb_s": [round(r, 1) for r in rates], "ratio": round(ratio, 4),
        "goal_ratio": GOAL_RATIO, "peak_bytes": rows, "node_idle_rss": idle_rss,
        "bit_identical": same, "digest": agg_run["digest"],
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"written to {args.out}")
    return 0 if same else 1


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    sys.exit(main())
