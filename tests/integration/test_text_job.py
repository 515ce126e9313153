"""A ``byte-gpt`` job on real node processes: two trainers, each on its own standard-library shard.

Three ``allmende node run`` processes on a real devnet: the job owner's node (the aggregator)
and two trainers whose corpora are shards 0 and 1 of the standard library, written into their
homes by ``write_shard`` (what ``allmende node stdlib-shard`` does). A tiny model, two rounds.

Proven: the job finishes; its final model is the bytes an in-process FedAvg over the same shards
gives; that model's bits per byte on a held-out split is finite and below the initial model's;
``allmende job show`` verifies the lineage; ``allmende model sample --job`` fetches the final
model from the network and continues a prompt.
"""

from __future__ import annotations

import hashlib
import math
import sys
from pathlib import Path

import torch
from nodes import NodeFactory, allmende, wait_ready
from test_own_data_job import plain_fedavg, wait_for

from allmende.chain import JobStatus
from allmende.learn.dataset import TextSource
from allmende.learn.stdlib_text import write_shard
from allmende.learn.task import load_task, seeded_state
from allmende.node.jobspec import parse_jobspec
from allmende.node.submit import submit_job
from allmende.store.codec import decode_state

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "faults"))
from fault_nodes import write_home

STAKE = 10**18
PARTS = 8  # small shards: each trainer reads an eighth of the standard library
OPTIONS = {"n_layer": 1, "n_head": 2, "n_embd": 32, "context": 32, "windows": 64}
SPEC = {
    "task": "byte-gpt",
    "rounds": 2,
    "local_epochs": 1,
    "batch_size": 16,
    "min_trainers": 2,
    "max_trainers": 2,
    "quorum": 1,
    "reward_per_round": 10**15,
    "round_deadline": 300,
    "seed": 4,
    "optimizer": {"name": "adam", "lr": 0.01, "momentum": 0.9},
    "aggregation": {"rule": "fedavg", "params": {}},
    "data": OPTIONS,
}


def test_a_byte_gpt_job_trains_on_two_stdlib_shards(devnet, tmp_path: Path) -> None:
    deployment = devnet.devnet.deployment_path
    factory = NodeFactory(tmp_path / "nodes")
    factory.root.mkdir()
    sources: dict[str, TextSource] = {}
    homes: dict[str, Path] = {}
    for name, roles, allow in (("owner", ("aggregator",), ()),
                               ("t0", ("trainer",), ("byte-gpt",)),
                               ("t1", ("trainer",), ("byte-gpt",))):  # fmt: skip
        sections = {}
        if roles == ("trainer",):
            corpus = tmp_path / f"corpus-{name}"
            write_shard(corpus, part=int(name[1]), num_parts=PARTS)
            sources[name] = TextSource(kind="text", path=corpus)
            sections = {"trainer": {"dataset": {"kind": "text", "path": str(corpus)}}}
        homes[name] = write_home(
            factory.root / name, deployment=deployment, key=devnet.new_key(), roles=roles,
            stake_wei=STAKE, allow_tasks=allow, sections=sections,
        )  # fmt: skip
    try:
        running = {name: factory.start(home, wait=False) for name, home in homes.items()}
        for node in running.values():
            wait_ready(node)
        owner = running["owner"]
        spec = parse_jobspec({**SPEC, "committee": {"members": [owner.address]}})
        job_id = submit_job(owner.home, spec).job_id
        reader = devnet.contracts()
        wait_for(lambda: reader.jobs.job(job_id).status != JobStatus.OPEN, "the job to end")
        job = reader.jobs.job(job_id)
        assert job.status == JobStatus.FINISHED
        final = job.final_model_hash.hex()
        trainers = {running[name].address: sources[name] for name in ("t0", "t1")}
        assert set(reader.jobs.trainers(job_id)) == set(trainers)
        with torch.random.fork_rng(devices=[]):
            assert final == plain_fedavg(spec, job_id, dict(sorted(trainers.items())))

        task = load_task("byte-gpt", data=OPTIONS)
        heldout = task.heldout_data(sources["t0"])
        model = task.model()
        model.load_state_dict(seeded_state(task, seed=spec.seed))
        initial = task.evaluate(model, heldout)["bits_per_byte"]
        blob = owner.store.read_bytes(final)
        assert hashlib.sha256(blob).hexdigest() == final
        model.load_state_dict(decode_state(blob))
        trained = task.evaluate(model, heldout)["bits_per_byte"]
        assert math.isfinite(trained) and 0 < trained < initial

        args = ("--deployment", str(deployment))
        shown = allmende("job", "show", str(job_id), *args)
        assert shown.returncode == 0, shown.stderr
        assert "lineage check: all" in shown.stdout and "checks passed" in shown.stdout
        sampled = allmende("model", "sample", "--job", str(job_id), "--prompt", "import ",
                           "--bytes", "30", *args)  # fmt: skip
        assert sampled.returncode == 0, sampled.stderr
        assert sampled.stdout.startswith("import ") and len(sampled.stdout) > len("import ")
    finally:
        factory.close()
