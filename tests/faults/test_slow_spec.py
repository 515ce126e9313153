"""A job whose owner serves its spec a byte at a time holds up no other job.

Hostile, in the test process: an account registered with the endpoint of a trickle server. It
creates a job first (the lowest job id, which a node that stepped its jobs one after another in
id order would look at first, every time) naming the honest aggregator as its committee. When
asked for the spec, the server answers 200 with a megabyte's ``Content-Length`` and then sends
one byte every half second, forever: a download that never finishes.

Honest: two ``allmende node run`` processes, an owner that aggregates and a trainer, configured
so that nothing but the independence of their jobs can save them: the minimum transfer rate is
off, and the whole-fetch deadline and the spec budget are an hour.

Proven: both honest nodes are stuck in the hostile download, yet the honest job submitted after
it runs to the end; when it ends both hostile downloads are still open (so the honest job never
waited for them); the honest nodes answer ``/healthz`` and serve a blob to a third party; the
hostile job got no trainer; the money adds up. A second hostile job that would lock more stake
than the honest nodes allow is refused from its on-chain terms: its spec is never asked for.
"""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from fault_nodes import PROBE, write_home
from nodes import NodeFactory, wait_ready

from allmende.chain import ROLE_TRAINER, JobStatus
from allmende.node.jobspec import parse_jobspec
from allmende.node.submit import submit_job
from waiting import wait_until

STAKE = 10**18
JOB_TIMEOUT = 300.0
PATIENT = {"spec_fetch_seconds": 3600, "step_budget_seconds": 3600, "max_stake_wei": STAKE}


class TrickleServer:
    """Answers every blob GET with a megabyte's Content-Length and then a byte each half second,
    until the client hangs up or the server stops; counts the downloads in flight."""

    def __init__(self) -> None:
        self.open = 0
        self.started = 0
        self.asked: set[str] = set()  # the blob names asked for
        self._lock = threading.Lock()
        self._stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server._lock:
                    server.open += 1
                    server.started += 1
                    server.asked.add(self.path.rsplit("/", 1)[-1])
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", str(1024 * 1024))
                    self.end_headers()
                    while not server._stop.wait(0.5):
                        self.wfile.write(b"{")
                        self.wfile.flush()
                except OSError:
                    pass  # the client gave up
                finally:
                    with server._lock:
                        server.open -= 1

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()


def wait_for(condition, what: str, timeout: float = JOB_TIMEOUT) -> None:
    wait_until(condition, what, timeout, every=0.2)


def honest_spec(owner: str) -> dict[str, object]:
    return {
        "task": "digits-mlp",
        "rounds": 2,
        "local_epochs": 1,
        "batch_size": 64,
        "min_trainers": 1,
        "max_trainers": 1,
        "quorum": 1,
        "reward_per_round": 10**15,
        "round_deadline": 120,
        "seed": 5,
        "optimizer": {"name": "sgd", "lr": 0.1},
        "aggregation": {"rule": "fedavg", "params": {}},
        "committee": {"members": [owner]},
    }


def test_a_spec_served_a_byte_at_a_time_does_not_hold_up_another_job(
    devnet, tmp_path: Path
) -> None:
    deployment = devnet.devnet.deployment_path
    factory = NodeFactory(tmp_path / "nodes")
    factory.root.mkdir()
    slow = TrickleServer()
    try:
        net = {"fetch_min_bytes_per_second": 0, "fetch_deadline_seconds": 3600}
        owner_home = write_home(
            factory.root / "owner", deployment=deployment, key=devnet.new_key(),
            roles=("aggregator",), stake_wei=STAKE,
            sections={"aggregator": {**PATIENT, "fetch_grace_seconds": 0}, "net": net},
        )  # fmt: skip
        trainer_home = write_home(
            factory.root / "trainer", deployment=deployment, key=devnet.new_key(),
            roles=("trainer",), stake_wei=STAKE, sections={"trainer": PATIENT, "net": net},
        )  # fmt: skip
        owner = factory.start(owner_home, wait=False)
        trainer = factory.start(trainer_home, wait=False)
        wait_ready(owner)
        wait_ready(trainer)

        hostile = devnet.contracts(devnet.new_key())
        hostile.registry.register(slow.url, ROLE_TRAINER)  # no stake: a job owner needs none
        hostile_job, _ = hostile.jobs.create_job(
            spec_hash=hashlib.sha256(b"a spec nobody will ever receive").digest(),
            model_hash=hashlib.sha256(b"a model nobody will ever receive").digest(),
            rounds=1, reward_per_round=1, min_trainers=1, max_trainers=2, quorum=1,
            round_deadline=600, committee=[owner.address], committee_size=1,
        )  # fmt: skip
        wait_for(lambda: slow.open >= 2, "both honest nodes to be stuck in the hostile spec")
        # A second hostile job whose on-chain terms the honest nodes refuse (it would lock more
        # stake than they allow): refused from the chain's data, its spec is never asked for.
        greedy_spec = hashlib.sha256(b"the greedy job's spec").digest()
        greedy_job, _ = hostile.jobs.create_job(
            spec_hash=greedy_spec, model_hash=greedy_spec, rounds=1, reward_per_round=1,
            min_trainers=1, max_trainers=2, quorum=1, round_deadline=600,
            committee=[owner.address], committee_size=1,
            trainer_stake=2 * STAKE, aggregator_stake=2 * STAKE,
        )  # fmt: skip

        job_id = submit_job(owner.home, parse_jobspec(honest_spec(owner.address))).job_id
        assert job_id > hostile_job
        reader = devnet.contracts()
        wait_for(lambda: reader.jobs.job(job_id).status != JobStatus.OPEN, "the honest job")
        assert slow.open >= 2, "a hostile download ended: the test proves nothing"

        assert reader.jobs.job(job_id).status == JobStatus.FINISHED
        assert reader.jobs.trainers(hostile_job) == []
        for node in (owner, trainer):
            refusal = f"Not joining job {greedy_job} as"
            assert "above the consent policy's max_stake_wei" in node.log_once(refusal)
        assert greedy_spec.hex() not in slow.asked
        assert slow.asked, "the slow server was never asked for anything"
        assert PROBE.serving(owner.url) and PROBE.serving(trainer.url)
        # each honest node serves a blob it holds to a third party: the owner the final model,
        # the trainer the model it trained round 1 on
        final = bytes(reader.jobs.job(job_id).final_model_hash).hex()
        round_0 = bytes(reader.jobs.round_result(job_id, 0).model_hash).hex()
        for url, digest in ((owner.url, final), (trainer.url, round_0)):
            blob = httpx.get(f"{url}/v1/blobs/{digest}", timeout=10)
            assert blob.status_code == 200 and hashlib.sha256(blob.content).hexdigest() == digest
        client = reader.client
        balance = client.balance(reader.jobs.address)
        assert balance == reader.jobs.total_escrow() + reader.jobs.total_owed()
        for node in (owner, trainer):
            assert "failed unexpectedly" not in node.log_once("")
    finally:
        slow.close()
        factory.close()
