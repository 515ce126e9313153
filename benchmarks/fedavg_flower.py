"""The benchmark's FedAvg job on Flower 1.41 (``run_simulation``, Ray backend).

Runs inside ``benchmarks/.venv-flower`` (see ``flower_env.py``), never in the project venv.
Same task code, initial model, partition and per-trainer seeds as the other columns: each
``ClientApp`` trains with :func:`allmende.learn.train.train_local`; Flower's own ``FedAvg``
strategy (``flwr.serverapp.strategy``) averages, weighted by ``num-examples``. Federated
evaluation is off (``fraction_evaluate=0``) because no other column does it; the server evaluates
the global model after every round on the shared held-out split, which also timestamps rounds.

Figures a client reports each round: the serialized size of its reply (what it would send over
gRPC in a deployment; the simulation itself passes messages in memory) and the peak RSS of its
Ray actor process.

Run: ``benchmarks/.venv-flower/bin/python benchmarks/fedavg_flower.py [--job JSON] [--out PATH]``.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.serde import recorddict_to_proto
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation

from allmende.learn.train import derive_seed, train_local
from fedavg_job import (
    FedAvgJob,
    emit,
    evaluate_state,
    initial_state,
    load_job_task,
    parse_job_args,
    peak_rss_bytes,
    state_digest,
)

CPUS_PER_CLIENT = 1.0
"""Ray resources per ClientApp actor: on 2 cores, two trainers run at once."""


def make_client_app(job: FedAvgJob) -> ClientApp:
    """A ClientApp whose node *i* (``partition-id``) is trainer *i* of ``job``."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        part = int(context.node_config["partition-id"])
        server_round = int(msg.content["config"]["server-round"])  # 1-based
        task = load_job_task(job)
        data = task.load_data(job.dataset(part))
        state = msg.content["arrays"].to_torch_state_dict()
        seed = derive_seed(job.job_id, server_round - 1, job.ids()[part])
        new_state, examples, _ = train_local(
            task, state, data, epochs=job.epochs, batch_size=job.batch_size, lr=job.lr, seed=seed
        )
        arrays = ArrayRecord(new_state)
        sized = RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": examples})})
        payload = len(recorddict_to_proto(sized).SerializeToString())
        metrics = MetricRecord(
            {"num-examples": examples, "payload-bytes": payload, "peak-rss": peak_rss_bytes()}
        )
        return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)

    return app


def make_server_app(job: FedAvgJob, figures: dict[str, object]) -> ServerApp:
    """A ServerApp running FedAvg for ``job.rounds``; it fills ``figures`` as it goes."""
    app = ServerApp()
    round_ends: list[float] = []
    client_reports: list[dict[str, float]] = []

    def collect(records: list[RecordDict], weight_key: str) -> MetricRecord:
        for record in records:
            client_reports.append(dict(record["metrics"]))
        return MetricRecord({})

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        task = load_job_task(job)
        strategy = FedAvg(
            fraction_train=1.0,
            fraction_evaluate=0.0,
            min_train_nodes=job.trainers,
            min_available_nodes=job.trainers,
            train_metrics_aggr_fn=collect,
        )

        def timestamp_round(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            round_ends.append(time.perf_counter())
            return MetricRecord({})

        started = time.perf_counter()
        result = strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(initial_state(task, job)),
            num_rounds=job.rounds,
            train_config=ConfigRecord({}),
            evaluate_fn=timestamp_round,
        )
        figures["final_model_at"] = time.time()
        figures["compute_s"] = time.perf_counter() - started
        state = result.arrays.to_torch_state_dict()
        metrics = evaluate_state(task, state)
        figures.update(
            accuracy=metrics["accuracy"],
            loss=metrics["loss"],
            round_s=[b - a for a, b in itertools.pairwise(round_ends)],
            bytes_sent_per_trainer_round=max(r["payload-bytes"] for r in client_reports),
            peak_rss_per_node_bytes=max(r["peak-rss"] for r in client_reports),
            client_replies=len(client_reports),
            final_state_sha256=state_digest(state),
        )

    return app


def run_flower_fedavg(job: FedAvgJob) -> dict[str, object]:
    """Run the job on Flower's simulation runtime and return its figures."""
    import flwr

    # Ray workers import fedavg_job by reference; they inherit the driver's environment.
    bench_dir = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (bench_dir, os.environ.get("PYTHONPATH", "")) if p
    )
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    figures: dict[str, object] = {"column": "flower", "job": job.model_dump()}
    run_simulation(
        server_app=make_server_app(job, figures),
        client_app=make_client_app(job),
        num_supernodes=job.trainers,
        backend_name="ray",
        backend_config={"client_resources": {"num_cpus": CPUS_PER_CLIENT, "num_gpus": 0.0}},
    )
    if "final_model_at" not in figures:
        raise RuntimeError("Flower's simulation ended without a final model; read its log above.")
    figures["flower"] = getattr(flwr, "__version__", "1.41.0")
    figures["driver_peak_rss_bytes"] = peak_rss_bytes()
    return figures


if __name__ == "__main__":
    job_settings, out_path = parse_job_args(sys.argv[1:])
    emit(run_flower_fedavg(job_settings), out_path)
