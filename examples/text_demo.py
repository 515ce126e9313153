"""`make text-demo`: a byte-gpt job over four trainers, each on its own shard of Python's stdlib.

What it does, the way a user would, with the `allmende` command:

1. `allmende devnet up` starts Anvil and deploys the contracts (in a temporary directory);
2. `allmende node init` creates five node homes: the job owner's node (the aggregator) and four
   trainers that allow the `byte-gpt` task; `allmende node stdlib-shard HOME --part i
   --num-parts 4` writes trainer i's shard of the standard library's `.py` files into its home
   and declares it as its corpus (the shards are split by file-path hash: no file is on two
   nodes); `allmende node run` starts every node as its own process;
3. `allmende job submit examples/jobs/byte-gpt.toml` publishes the job; the trainers join;
4. after every round the demo reads the round's model from the owner's store (by the hash the
   chain names) and prints its bits per byte on the held-out tenth of every file of all four
   shards (text no trainer trained on);
5. `allmende job show` checks the lineage; `allmende model sample --job` fetches the final model
   from the network and continues a prompt;
6. every process is shut down. Exit code 0 only if the job finished, the lineage verifies and
   the bits per byte fell from the first round to the last.

Run: ``python examples/text_demo.py`` (after ``make setup``); ``--keep`` keeps the files.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from allmende.chain import Contracts, JobStatus, dev_keys
from allmende.learn.dataset import TextSource
from allmende.learn.task import load_task
from allmende.learn.text import ByteGPTTask, as_windows, split_corpus
from allmende.node.home import open_store
from allmende.node.jobspec import load_jobspec
from allmende.store.codec import decode_state
from federated_demo import Demo, DemoFailed, console, say

HERE = Path(__file__).resolve().parent
SPEC = HERE / "jobs" / "byte-gpt.toml"
N_TRAINERS = 4
JOB_TIMEOUT = 900.0
PROMPT = "def "
SAMPLE_BYTES = 300


def set_up_nodes(demo: Demo) -> None:
    keys = dev_keys(2 + N_TRAINERS)[1:]  # key 0 deployed the contracts
    plans: dict[str, tuple[str, str, dict[str, object]]] = {"owner": (keys[0], "aggregator", {})}
    for i in range(N_TRAINERS):
        plans[f"trainer{i + 1}"] = (keys[1 + i], "trainer", {})
    demo.allow_task = "byte-gpt"
    demo.init_nodes(plans)
    for i in range(N_TRAINERS):
        home = demo.nodes[f"trainer{i + 1}"]
        demo.run("node", "stdlib-shard", str(home), "--part", str(i),
                 "--num-parts", str(N_TRAINERS))  # fmt: skip
    say(f"{N_TRAINERS} trainers each hold one shard of the standard library's .py files")


def heldout_of_all_shards(demo: Demo, task: ByteGPTTask) -> object:
    """The held-out part of every trainer's corpus, end to end, as the task evaluates it."""
    o = task.text
    stream = b"".join(
        split_corpus(TextSource(kind="text", path=demo.nodes[f"trainer{i + 1}"] / "corpus"),
                     holdout=o.holdout).heldout
        for i in range(N_TRAINERS)
    )  # fmt: skip
    return as_windows(stream, context=o.context, windows=o.eval_windows, what="the held-out text")


def bits_per_byte(task: ByteGPTTask, blob: bytes, heldout: object) -> float:
    model = task.model()
    model.load_state_dict(decode_state(blob))
    return task.evaluate(model, heldout)["bits_per_byte"]  # type: ignore[arg-type]


def follow_rounds(demo: Demo, contracts: Contracts, job_id: int, task: ByteGPTTask) -> list[float]:
    """Print every round's bits per byte as the chain finalizes it; the list of them."""
    heldout = heldout_of_all_shards(demo, task)
    store = open_store(demo.nodes["owner"])
    job = contracts.jobs.job(job_id)
    first = bits_per_byte(task, store.read_bytes(job.model_hash.hex()), heldout)
    say(f"initial model: {first:.3f} bits per byte on the held-out text")
    figures: list[float] = []
    deadline = time.monotonic() + JOB_TIMEOUT
    seen = 0
    while True:
        job = contracts.jobs.job(job_id)
        finished = job.status == JobStatus.FINISHED
        done = job.rounds if finished else job.current_round  # rounds finalized so far
        if done > seen:  # the newest model counts (rounds may pass faster than this looks)
            seen = done
            digest = (job.final_model_hash if finished else job.model_hash).hex()
            figures.append(bits_per_byte(task, store.read_bytes(digest), heldout))
            say(f"round {done - 1}: {figures[-1]:.3f} bits per byte")
        if job.status != JobStatus.OPEN:
            if job.status != JobStatus.FINISHED:
                raise DemoFailed(f"job {job_id} was cancelled; see the node logs")
            return figures
        if time.monotonic() > deadline:
            raise DemoFailed(f"job {job_id} did not finish within {JOB_TIMEOUT} s")
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the demo's files")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="allmende-text-demo-"))
    demo = Demo(root)
    started = time.monotonic()
    spec = load_jobspec(SPEC)
    task = load_task(spec.task, data=spec.data)
    assert isinstance(task, ByteGPTTask)
    try:
        deployment = demo.devnet_up()
        set_up_nodes(demo)
        demo.start_nodes()
        job_id = int(demo.run("job", "submit", str(SPEC), "--home", str(demo.nodes["owner"])))
        say(f"job {job_id} submitted from {SPEC.name}: {spec.rounds} rounds")
        figures = follow_rounds(demo, Contracts.connect(deployment), job_id, task)
        deployment_arg = ("--deployment", str(demo.devnet_dir / "deployment.json"))
        say("job finished; checking its lineage")
        lineage_ok = demo.show("job", "show", str(job_id), *deployment_arg) == 0
        sample = demo.run("model", "sample", "--job", str(job_id), "--prompt", PROMPT,
                          "--bytes", str(SAMPLE_BYTES), "--seed", "1", *deployment_arg)  # fmt: skip
    except DemoFailed as exc:
        console.print(f"[bold red]demo failed:[/] {exc}")
        return 1
    finally:
        demo.stop_nodes()
        demo.devnet_down()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    elapsed = time.monotonic() - started
    console.print("bits per byte by round: " + ", ".join(f"{f:.3f}" for f in figures))
    console.print(f"a sample of the final model (prompt {PROMPT!r}, temperature 0.8):")
    console.print(sample.rstrip("\n"), markup=False, highlight=False)
    fell = len(figures) >= 2 and figures[-1] < figures[0]
    console.print(
        f"lineage check {'passed' if lineage_ok else 'FAILED'}; bits per byte "
        f"{'fell' if fell else 'did NOT fall'}; wall time {elapsed:.0f} s"
    )
    return 0 if lineage_ok and fell else 1


if __name__ == "__main__":
    sys.exit(main())
