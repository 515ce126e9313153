"""``byte-gpt`` on Allmende against a plain single-process PyTorch FedAvg loop: same shards, seeds.

Four trainer nodes, each holding one shard of the Python standard library's ``.py`` files (split
by file-path hash, as ``allmende node stdlib-shard`` writes it), and the job owner's node, which
aggregates, run the job of ``examples/jobs/byte-gpt.toml`` (the default 0.4 M-parameter model,
1,024 windows of 65 bytes per trainer and round, Adam) on a real Anvil, one OS process per node
(:mod:`allmende_net`). Then the same job runs as a plain PyTorch loop in this process, written
out independently of ``allmende.learn``: bytes read from the shard files, the last tenth of each
file held out, window starts from ``torch.randint`` with ``derive_seed(job, round, address)``,
``torch.optim.Adam``, the mean of the trainers' models in address order.

Figures (``benchmarks/results/text.json``):

- ``final_bpb``: bits per byte of the final model on the held-out tenth of every file of all
  shards; the two columns must be the same number (their final models the same bytes);
- ``tokens_per_s``: every trainer's trained tokens over the wall time of the rounds. For
  Allmende, rounds 1 .. R-1 (from round 0's finalization to the last one's, from the nodes'
  logs), so joining the job is left out; ``tokens_per_s_with_join`` counts from the submission.
  For PyTorch, all rounds. ``throughput_ratio`` is Allmende's over PyTorch's (goal >= 0.9);
- ``round_overhead_ms``: Allmende's mean round time minus the time the plain loop spends on a
  round's arithmetic divided by the parallelism the nodes have (trainers train at once, one
  thread each, on ``min(trainers, cores)`` cores): what moving, checking and agreeing costs;
- ``bytes_per_trainer_round``: blob bytes each trainer served per round (its ``/metrics``);
- ``peak_rss_mib``: the largest peak RSS (``VmHWM``) of a trainer node; of every node too.

Run: ``python benchmarks/text.py [--rounds N] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from allmende.learn.dataset import TextSource
from allmende.learn.gpt import ByteGPT
from allmende.learn.stdlib_text import write_shard
from allmende.learn.task import load_task
from allmende.learn.text import ByteGPTTask, as_windows, split_corpus
from allmende.learn.train import derive_seed
from allmende.node.jobspec import load_jobspec
from allmende.store.codec import decode_state
from allmende_net import BenchNetwork, JobTrace
from fedavg_allmende import bytes_served, node_peak_rss, round_ends
from fedavg_job import FedAvgJob, state_bytes, state_digest
from machine import describe_machine
from node_logs import finalized_at

BENCH_DIR = Path(__file__).resolve().parent
SPEC = BENCH_DIR.parent / "examples" / "jobs" / "byte-gpt.toml"
RESULT = BENCH_DIR / "results" / "text.json"
TRAINERS = 4
DEFAULT_ROUNDS = 8
MIB = 2**20


class TextNetwork(BenchNetwork):
    """The benchmark network with text trainers: trainer *i* declares shard *i* as its corpus."""

    def __init__(self, root: Path, job: FedAvgJob, spec_text: str, shards: list[Path]) -> None:
        super().__init__(root, job)
        self.spec_text = spec_text
        self.shards = shards

    def set_up(self) -> None:
        from allmende.chain import dev_keys

        self.deployment = self.devnet.up()
        keys = dev_keys(self.job.trainers + 2)[1:]
        self.owner = self._init_node("owner", keys[0], "aggregator", {})
        self.trainers = [
            self._init_node(f"trainer{i:02d}", keys[1 + i], "trainer",
                            {"dataset": {"kind": "text", "path": str(shard)},
                             "allowed_tasks": ["byte-gpt"], "device": "cpu"})
            for i, shard in enumerate(self.shards)
        ]  # fmt: skip

    def run_job(self) -> JobTrace:
        assert self.owner is not None
        spec = self.root / "job.toml"
        spec.write_text(self.spec_text + f'\n[committee]\nmembers = ["{self.owner.address}"]\n')
        contracts = self.contracts()
        first_block = contracts.client.block_number()
        submitted_at = time.time()
        job_id = int(self.run_cli("job", "submit", str(spec), "--home", str(self.owner.home)))
        trace = JobTrace(job_id=job_id, submitted_at=submitted_at, first_block=first_block)
        self._follow(contracts, trace)
        trace.last_block = contracts.client.block_number()
        return trace


def spec_for(rounds: int) -> str:
    """``examples/jobs/byte-gpt.toml`` with ``rounds`` rounds and without its open committee."""
    lines, skipping = [], False
    for line in SPEC.read_text().splitlines():
        if line.startswith("["):
            skipping = line.strip() == "[committee]"
        if skipping:
            continue
        lines.append(f"rounds = {rounds}" if line.startswith("rounds =") else line)
    return "\n".join(lines) + "\n"


def heldout(task: ByteGPTTask, shards: list[Path]) -> Any:
    """The held-out part of every shard, end to end, as the task evaluates it."""
    o = task.text
    stream = b"".join(
        split_corpus(TextSource(kind="text", path=shard), holdout=o.holdout).heldout
        for shard in shards
    )
    return as_windows(stream, context=o.context, windows=o.eval_windows, what="held-out text")


def bits_per_byte(task: ByteGPTTask, state: dict[str, torch.Tensor], data: Any) -> float:
    model = task.model()
    model.load_state_dict(state, strict=True)
    return task.evaluate(model, data)["bits_per_byte"]


def run_allmende(spec_text: str, job: FedAvgJob, shards: list[Path]) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="allmende-text-bench-"))
    network = TextNetwork(root, job, spec_text, shards)
    try:
        network.set_up()
        network.start_nodes()
        trace = network.run_job()
        rss = {node.name: node_peak_rss(node) for node in network.nodes()}
        served = {node.name: bytes_served(node) for node in network.trainers}
        assert network.owner is not None
        final = decode_state(_owner_blob(network, trace.final_model_hash))
        logs = [node.home / "node.log" for node in network.nodes()]
        ends = round_ends(trace, finalized_at(logs, job_id=trace.job_id))
        addresses = [node.address for node in network.trainers]
    finally:
        network.close()
        shutil.rmtree(root, ignore_errors=True)
    trainer_rss = [v for name, v in rss.items() if name != "owner" and v]
    return {
        "addresses": addresses,
        "job_id": trace.job_id,
        "state": final,
        "round_ends": ends,
        "submitted_at": trace.submitted_at,
        "bytes_per_trainer_round": max(served.values()) / job.rounds,
        "peak_rss_mib": max(trainer_rss) / MIB if trainer_rss else None,
        "peak_rss_mib_by_node": {k: (v / MIB if v else None) for k, v in rss.items()},
    }


def _owner_blob(network: TextNetwork, digest: str) -> bytes:
    from allmende.node.home import open_store

    assert network.owner is not None
    return open_store(network.owner.home).read_bytes(digest.removeprefix("0x"))


def run_plain(spec, addresses: list[str], shards: list[Path], job_id: int) -> dict[str, Any]:
    """The job as a plain PyTorch loop; the final state and the rounds' wall time."""
    o = spec.data
    context, windows, holdout = o["context"], o["windows"], o["holdout"]
    config = load_task("byte-gpt", data=o).text.gpt  # the sizes only; the model is built below
    streams = []
    for shard in shards:
        kept = b""
        for name in sorted(p.relative_to(shard).as_posix() for p in shard.rglob("*.py")):
            data = (shard / name).read_bytes()
            if data:
                kept += data[: len(data) - max(1, math.floor(len(data) * holdout))]
        streams.append(torch.tensor(list(kept), dtype=torch.long))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(spec.seed)
    state = {k: v.detach().clone() for k, v in ByteGPT(config).state_dict().items()}
    order = sorted(range(len(addresses)), key=lambda i: addresses[i].lower())
    started = time.perf_counter()
    for round_ in range(spec.rounds):
        trained = []
        for i in order:
            stream, seed = streams[i], derive_seed(job_id, round_, addresses[i])
            torch.manual_seed(seed)
            model = ByteGPT(config)
            model.load_state_dict(state)
            betas = (spec.optimizer.momentum, 0.999)
            adam = torch.optim.Adam(model.parameters(), lr=spec.optimizer.lr, betas=betas,
                                    foreach=False)  # fmt: skip
            starts = torch.randint(0, len(stream) - context, (windows,),
                                   generator=torch.Generator().manual_seed(seed))  # fmt: skip
            for first in range(0, windows, spec.batch_size):
                offsets = starts[first : first + spec.batch_size, None] + torch.arange(context)
                logits = model(stream[offsets])  # (b, t, 256)
                loss = F.cross_entropy(logits.view(-1, 256), stream[offsets + 1].view(-1))
                adam.zero_grad()
                loss.backward()
                adam.step()
            trained.append(model.state_dict())
        for key in state:  # equal weights (the spec's weighting): weight 1 each
            acc = torch.zeros_like(state[key])
            for trained_state in trained:
                acc = acc + 1 * trained_state[key]
            state[key] = acc / len(trained)
    wall = time.perf_counter() - started
    torch.set_num_threads(threads)
    return {"state": state, "wall_s": wall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    spec_text = spec_for(args.rounds)
    spec_path = Path(tempfile.mkdtemp(prefix="allmende-text-spec-")) / "job.toml"
    spec_path.write_text(spec_text)
    spec = load_jobspec(spec_path)
    task = load_task("byte-gpt", data=spec.data)
    assert isinstance(task, ByteGPTTask)
    corpus = Path(tempfile.mkdtemp(prefix="allmende-text-shards-"))
    try:
        shards = []
        for i in range(TRAINERS):
            write_shard(corpus / f"shard{i}", part=i, num_parts=TRAINERS)
            shards.append(corpus / f"shard{i}")
        job = FedAvgJob(task="byte-gpt", trainers=TRAINERS, rounds=spec.rounds)
        print(f"byte-gpt over {TRAINERS} trainer nodes, {spec.rounds} rounds ...", flush=True)
        ours = run_allmende(spec_text, job, shards)
        print("plain PyTorch loop ...", flush=True)
        plain = run_plain(spec, ours["addresses"], shards, job_id=ours["job_id"])
        data = heldout(task, shards)
        plain_bpb = bits_per_byte(task, plain["state"], data)
        our_bpb = bits_per_byte(task, ours["state"], data)
    finally:
        shutil.rmtree(corpus, ignore_errors=True)
        shutil.rmtree(spec_path.parent, ignore_errors=True)
    o = spec.data
    tokens_per_round = TRAINERS * o["windows"] * o["context"]  # every target byte of a round
    ends = ours["round_ends"]
    steady_s = ends[-1] - ends[0]
    round_s = steady_s / (spec.rounds - 1)
    plain_tps = tokens_per_round * spec.rounds / plain["wall_s"]
    ours_tps = tokens_per_round * (spec.rounds - 1) / steady_s
    parallel = min(TRAINERS, os.cpu_count() or 1)
    compute_round_s = plain["wall_s"] / spec.rounds / parallel
    same = state_digest(plain["state"]) == state_digest(ours["state"])
    result = {
        "machine": describe_machine(),
        "date": time.strftime("%Y-%m-%d"),
        "job": {
            "trainers": TRAINERS,
            "rounds": spec.rounds,
            "batch_size": spec.batch_size,
            "optimizer": spec.optimizer.model_dump(),
            "data": o,
            "parameters": sum(v.numel() for v in plain["state"].values()),
        },
        "pytorch": {
            "tokens_per_s": plain_tps,
            "final_bpb": plain_bpb,
            "wall_s": plain["wall_s"],
            "round_s": plain["wall_s"] / spec.rounds,
        },
        "allmende": {
            "tokens_per_s": ours_tps,
            "tokens_per_s_with_join": tokens_per_round
            * spec.rounds
            / (ends[-1] - ours["submitted_at"]),
            "final_bpb": our_bpb,
            "round_s": round_s,
            "round_overhead_ms": 1000 * (round_s - compute_round_s),
            "bytes_per_trainer_round": ours["bytes_per_trainer_round"],
            "update_bytes": state_bytes(ours["state"]),
            "peak_rss_mib": ours["peak_rss_mib"],
            "peak_rss_mib_by_node": ours["peak_rss_mib_by_node"],
        },
        "throughput_ratio": ours_tps / plain_tps,
        "bit_identical": same,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    a, p = result["allmende"], result["pytorch"]
    print(f"final bits per byte: allmende {a['final_bpb']:.6f}, pytorch {p['final_bpb']:.6f} "
          f"({'bit-identical models' if same else 'MODELS DIFFER'})")  # fmt: skip
    print(f"tokens/s: allmende {a['tokens_per_s']:.0f} "
          f"(with join {a['tokens_per_s_with_join']:.0f}),"
          f" pytorch {p['tokens_per_s']:.0f}; ratio {result['throughput_ratio']:.2f}")  # fmt: skip
    print(f"round: {a['round_s']:.2f} s, overhead {a['round_overhead_ms']:.0f} ms; "
          f"{a['bytes_per_trainer_round'] / MIB:.2f} MiB served per trainer and round; "
          f"peak RSS per trainer node {a['peak_rss_mib']:.0f} MiB")  # fmt: skip
    print(f"written: {args.out}")
    return 0 if same and plain_bpb == our_bpb else 1


if __name__ == "__main__":
    sys.exit(main())
