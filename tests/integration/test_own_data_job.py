"""Trainers train on their operators' own files: real node processes on a real devnet.

Six ``allmende node run`` processes: the job owner's node (the only aggregator), two trainers
each with its own CSV of digits, one trainer whose CSV holds a label the job does not declare,
and two trainers each with its own folder of PNG digits. The owner runs a ``tabular-mlp`` and
an ``image-cnn`` job at once, two rounds each.

Proven: both jobs finish with exactly the trainers whose data fits; the final models are the
bytes a plain in-process FedAvg over the same files gives (so the nodes trained on those files,
read as the spec's [data] options say); every refusal is logged with its reason (the bad CSV's
line, a table offered to an image job, a task the operator did not allow); and a trainer whose
declared file is missing does not start, saying which file in one line.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import torch
from nodes import NodeFactory, wait_ready

from allmende.chain import JobStatus
from allmende.learn.aggregate import aggregate
from allmende.learn.dataset import ImageSource, TableSource
from allmende.learn.task import load_task, seeded_state
from allmende.learn.train import derive_seed, train_local
from allmende.node.jobspec import parse_jobspec
from allmende.node.submit import submit_job
from allmende.store.codec import encode_state
from datafiles import IMAGE_OPTIONS, TABLE_OPTIONS, digits_rows, write_csv, write_pngs
from waiting import wait_until

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "faults"))
from fault_nodes import write_home

ROUNDS = 2
STAKE = 10**18
JOB_TIMEOUT = 600.0
SPEC = {
    "rounds": ROUNDS,
    "local_epochs": 1,
    "batch_size": 16,
    "min_trainers": 2,
    "max_trainers": 2,  # round 0 starts once the job is full: the two trainers whose data fits
    "quorum": 1,
    "reward_per_round": 10**15,
    "round_deadline": 300,
    "seed": 9,
    "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
    "aggregation": {"rule": "fedavg", "params": {}},
}


def wait_for(condition, what: str, timeout: float = JOB_TIMEOUT) -> None:
    wait_until(condition, what, timeout, every=0.5)


def plain_fedavg(spec, job_id: int, data_of: dict[str, object]) -> str:
    """The job replayed in this process on the same files: its final model's hash."""
    task = load_task(spec.task, data=spec.data)
    state = seeded_state(task, seed=spec.seed)
    local = {address: task.load_data(source) for address, source in data_of.items()}
    for round_ in range(spec.rounds):
        updates = []
        for address, data in local.items():
            new, _, _ = train_local(
                task, state, data, **spec.training_settings(),
                seed=derive_seed(job_id, round_, address),
            )  # fmt: skip
            updates.append((address, new, 1))  # equal weights, the spec's default
        state = aggregate("fedavg", state, updates, {})
    return hashlib.sha256(encode_state(state)).hexdigest()


def test_trainers_train_on_their_own_csv_files_and_image_folders(devnet, tmp_path: Path) -> None:
    deployment = devnet.devnet.deployment_path
    factory = NodeFactory(tmp_path / "nodes")
    factory.root.mkdir()
    files = tmp_path / "operators"
    files.mkdir()

    def home(name: str, roles: tuple[str, ...], allow: tuple[str, ...], dataset=None) -> Path:
        sections = {"trainer": {"dataset": dataset}} if dataset else {}
        return write_home(
            factory.root / name, deployment=deployment, key=devnet.new_key(), roles=roles,
            stake_wei=STAKE, allow_tasks=allow, sections=sections,
        )  # fmt: skip

    tables: dict[str, TableSource] = {}
    folders: dict[str, ImageSource] = {}
    homes = {"owner": home("owner", ("aggregator",), ())}
    for i in range(2):
        pixels, labels = digits_rows(i, 4)
        path = write_csv(files / f"table{i}.csv", pixels, labels)
        tables[f"table{i}"] = TableSource(kind="table", path=path)
        homes[f"table{i}"] = home(f"table{i}", ("trainer",), ("tabular-mlp", "image-cnn"),
                                  {"kind": "table", "path": str(path)})  # fmt: skip
        pixels, labels = digits_rows(2 + i, 8)
        root = write_pngs(files / f"images{i}", pixels, labels)
        folders[f"images{i}"] = ImageSource(kind="images", path=root)
        homes[f"images{i}"] = home(f"images{i}", ("trainer",), ("image-cnn",),
                                   {"kind": "images", "path": str(root)})  # fmt: skip
    pixels, labels = digits_rows(3, 40)
    labels[6] = 11  # a digit the job does not declare, on line 8 of the file
    bad = write_csv(files / "bad.csv", pixels, labels)
    homes["bad"] = home("bad", ("trainer",), ("tabular-mlp",), {"kind": "table", "path": str(bad)})
    gone = home("gone", ("trainer",), ("tabular-mlp",),
                {"kind": "table", "path": str(files / "gone.csv")})  # fmt: skip
    try:
        running = {name: factory.start(h, wait=False) for name, h in homes.items()}
        missing = factory.start(gone, wait=False)
        for node in running.values():
            wait_ready(node)
        assert missing.process.wait(timeout=120) != 0  # it never registered
        said = [line for line in missing.log().splitlines() if "gone.csv" in line]
        assert said and "gone.csv: no such file" in said[-1], missing.log()[-2000:]

        owner = running["owner"]
        committee = {"members": [owner.address]}
        table_spec = parse_jobspec(
            {**SPEC, "task": "tabular-mlp", "data": TABLE_OPTIONS, "committee": committee}
        )
        image_spec = parse_jobspec(
            {**SPEC, "task": "image-cnn", "data": IMAGE_OPTIONS, "committee": committee}
        )
        table_job = submit_job(owner.home, table_spec).job_id
        image_job = submit_job(owner.home, image_spec).job_id
        reader = devnet.contracts()

        def ended() -> bool:
            return all(reader.jobs.job(j).status != JobStatus.OPEN for j in (table_job, image_job))

        wait_for(ended, "both jobs to end")
        for job_id in (table_job, image_job):
            assert reader.jobs.job(job_id).status == JobStatus.FINISHED
        by_address = {node.address: name for name, node in running.items()}
        table_trainers = {by_address[a] for a in reader.jobs.trainers(table_job)}
        image_trainers = {by_address[a] for a in reader.jobs.trainers(image_job)}
        assert table_trainers == {"table0", "table1"}
        assert image_trainers == {"images0", "images1"}

        table_data = {running[name].address: tables[name] for name in sorted(table_trainers)}
        image_data = {running[name].address: folders[name] for name in sorted(image_trainers)}
        with torch.random.fork_rng(devices=[]):
            expected_table = plain_fedavg(table_spec, table_job, table_data)
            expected_image = plain_fedavg(image_spec, image_job, image_data)
        assert reader.jobs.job(table_job).final_model_hash.hex() == expected_table
        assert reader.jobs.job(image_job).final_model_hash.hex() == expected_image

        refusals = {name: node.log() for name, node in running.items()}
    finally:
        factory.close()
    assert (
        f"Not joining job {table_job} as trainer: {bad}: line 8, column 'label': the label 11 is "
        "not one of the job's classes" in refusals["bad"]
    )
    assert (
        f"Not joining job {image_job} as trainer: Task 'image-cnn' trains on an image folder, "
        "but this node declares kind = 'table'" in refusals["table0"]
    )
    assert (
        f"Not joining job {table_job} as trainer: task 'tabular-mlp' is not in the consent "
        "policy's allowed_tasks (image-cnn)" in refusals["images0"]
    )
