"""A throw-away Allmende network for benchmarks: a real Anvil and real node processes.

:class:`BenchNetwork` starts a devnet with enough funded accounts, creates one node home per
participant (the job owner's node, which also aggregates, and one trainer node per partition
part) with :func:`allmende.node.home.create_home`, the call ``allmende node init`` makes, in this
process rather than in nine command processes that would each spend most of their time importing
the same modules; it starts them all with one ``allmende node run HOME ...`` (one OS
process per node, forked after the node libraries are imported once; each logs to its
``HOME/node.log``), submits a job with ``allmende job submit``, and follows it on chain.
Everything it started is stopped by :meth:`BenchNetwork.close`, whatever happened.

The nodes follow new blocks through Anvil's websocket, as every node does by default; their
chain poll interval, the fallback while there is no websocket, is lowered to
:data:`BENCH_POLL_SECONDS` (an operator setting in ``node.toml``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from allmende.chain import Contracts, Deployment, Devnet, DevnetConfig, JobStatus, dev_keys
from allmende.net.endpoints import LOOPBACK_RANGES
from allmende.net.health import HealthProbe
from allmende.node.config import parse_config
from allmende.node.home import create_home
from fedavg_job import FedAvgJob

BENCH_POLL_SECONDS = 0.05
STAKE_WEI = 10**18
REWARD_PER_ROUND = "0.001 ether"
ROUND_DEADLINE_S = 300
NORM_BOUND = 1000.0
START_TIMEOUT_S = 600.0  # 33 nodes importing torch on 2 busy cores take minutes
JOB_TIMEOUT_S = 1800.0
STOP_TIMEOUT_S = 15.0
FOLLOW_INTERVAL_S = 0.2  # the rounds' times come from the node logs; a fast poll costs them CPU


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def allmende_cli() -> list[str]:
    """The ``allmende`` script beside this interpreter, else the module."""
    script = Path(sys.executable).parent / "allmende"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "allmende.cli.main"]


class NetworkFailed(Exception):
    """The benchmark network could not do its part; the message says where to look."""


@dataclass
class Node:
    """One node home; its process is found through the pid the node writes to its lock file."""

    name: str
    home: Path
    address: str
    port: int

    @property
    def pid(self) -> int | None:
        """The node's process id once it has started (``HOME/node.lock``), else None."""
        try:
            text = (self.home / "node.lock").read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def running(self) -> bool:
        pid = self.pid
        return pid is not None and Path(f"/proc/{pid}").exists()


@dataclass
class JobTrace:
    """What following a job on chain saw."""

    job_id: int
    submitted_at: float  # time.time() just before `allmende job submit`
    round_ends: list[float] = field(default_factory=list)  # time.time() when round r was final
    final_model_at: float = 0.0
    final_model_hash: str = ""
    first_block: int = 0
    last_block: int = 0


def job_spec_toml(job: FedAvgJob, aggregator: str | None = None) -> str:
    """The job spec of ``job`` for ``allmende job submit``: all trainers, one aggregator (the
    owner's node, named as the committee when its address is given). Trainers declare their
    number of examples, as the PyTorch and Flower loops weigh them."""
    committee = [f'committee = {{ members = ["{aggregator}"] }}'] if aggregator else []
    return "\n".join([
        f'task = "{job.task}"',
        f"rounds = {job.rounds}",
        f"local_epochs = {job.epochs}",
        f"batch_size = {job.batch_size}",
        f"min_trainers = {job.trainers}",
        f"max_trainers = {job.trainers}",
        "quorum = 1",
        f'reward_per_round = "{REWARD_PER_ROUND}"',
        f"round_deadline = {ROUND_DEADLINE_S}",
        f"norm_bound = {NORM_BOUND}",
        f"seed = {job.model_seed}",
        'weighting = "declared"',
        f"max_weight = {MAX_WEIGHT}",
        *committee,
        "",
        "[optimizer]",
        'name = "sgd"',
        f"lr = {job.lr}",
        "",
        "[aggregation]",
        'rule = "fedavg"',
        "params = {}",
        "",
    ])


MAX_WEIGHT = 1_000_000  # above any part's number of examples: weights are the example counts


class BenchNetwork:
    """Devnet plus ``job.trainers`` trainer nodes and one owner/aggregator node under ``root``."""

    def __init__(self, root: Path, job: FedAvgJob) -> None:
        self.root = root
        self.job = job
        self.cli = allmende_cli()
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.devnet = Devnet(DevnetConfig(state_dir=root / "devnet", port=_free_port(),
                                          accounts=job.trainers + 2))
        self.deployment: Deployment | None = None
        self.owner: Node | None = None
        self.trainers: list[Node] = []
        self.launcher: subprocess.Popen[bytes] | None = None  # `allmende node run HOME ...`

    # ---- start -------------------------------------------------------------------------------

    def start(self) -> None:
        """Devnet up, node homes created, every node running and healthy."""
        self.set_up()
        self.start_nodes()

    def set_up(self) -> None:
        """What an operator does once: the chain with its contracts, and the node homes."""
        self.deployment = self.devnet.up()
        keys = dev_keys(self.job.trainers + 2)[1:]  # key 0 deployed the contracts
        self.owner = self._init_node("owner", keys[0], "aggregator", {})
        self.trainers = [
            self._init_node(f"trainer{part:02d}", keys[1 + part], "trainer",
                            {"dataset": self.job.dataset(part).model_dump(),
                             "allowed_tasks": [self.job.task]})
            for part in range(self.job.trainers)
        ]  # fmt: skip

    def nodes(self) -> list[Node]:
        return ([self.owner] if self.owner else []) + self.trainers

    def run_cli(self, *args: str, env: dict[str, str] | None = None) -> str:
        """Run an ``allmende`` command; its stdout. A failure raises :class:`NetworkFailed`."""
        result = subprocess.run([*self.cli, *args], env=env or self.env, capture_output=True,
                                text=True, check=False)
        if result.returncode != 0:
            raise NetworkFailed(f"`allmende {' '.join(args)}` failed: {result.stderr.strip()}")
        return result.stdout

    def _init_node(self, name: str, key: str, role: str, settings: dict[str, object]) -> Node:
        """The node home ``name``: what ``allmende node init --deployment ... --port ...
        --roles ROLE --stake-wei ... --insecure-plaintext-key`` writes, with the role's
        ``settings`` and the benchmark's poll interval in ``node.toml``."""
        assert self.deployment is not None
        home, port = self.root / name, _free_port()
        config = parse_config({
            "node": {"port": port, "roles": [role]},
            "chain": {"deployment": str(self.devnet.deployment_path.resolve())},
            "stake": {"amount_wei": STAKE_WEI},
            "net": {"allow_endpoint_ranges": list(LOOPBACK_RANGES)},
            role: {**settings, "poll_seconds": BENCH_POLL_SECONDS},
        }, source=f"The settings of node {name}")  # fmt: skip
        address = create_home(home, config, chain_id=self.deployment.chain_id, password=None,
                              plaintext=True, private_key=key)  # fmt: skip
        return Node(name=name, home=home, address=address, port=port)

    def start_nodes(self) -> None:
        """``allmende node run`` with every home, until every node is healthy."""
        homes = [str(node.home) for node in self.nodes()]
        with (self.root / "nodes.log").open("wb") as log:
            self.launcher = subprocess.Popen(
                [*self.cli, "node", "run", *homes], stdout=log, stderr=subprocess.STDOUT,
                env=self.env, start_new_session=True,
            )
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        waiting = {node.name: node for node in self.nodes()}
        with HealthProbe() as probe:
            while waiting:
                assert self.launcher is not None
                if self.launcher.poll() is not None:
                    raise NetworkFailed(f"`allmende node run` exited; see {self.root}/nodes.log")
                for name, node in list(waiting.items()):
                    if node.pid is not None and not node.running():
                        raise NetworkFailed(
                            f"node {name} exited at start-up; see {node.home}/node.log"
                        )
                    if probe.ready(f"http://127.0.0.1:{node.port}"):
                        del waiting[name]  # serving, and its roles have loaded their tasks
                if time.monotonic() > deadline:
                    raise NetworkFailed(
                        f"nodes {sorted(waiting)} not healthy in {START_TIMEOUT_S} s"
                    )
                time.sleep(0.1)

    # ---- the job -----------------------------------------------------------------------------

    def contracts(self) -> Contracts:
        assert self.deployment is not None
        return Contracts.connect(self.deployment)

    def run_job(self) -> JobTrace:
        """Submit the job from the owner's node and follow it until it is finished."""
        assert self.owner is not None
        spec = self.root / "job.toml"
        spec.write_text(job_spec_toml(self.job, self.owner.address))
        contracts = self.contracts()
        first_block = contracts.client.block_number()
        submitted_at = time.time()
        job_id = int(self.run_cli("job", "submit", str(spec), "--home", str(self.owner.home)))
        trace = JobTrace(job_id=job_id, submitted_at=submitted_at, first_block=first_block)
        self._follow(contracts, trace)
        trace.last_block = contracts.client.block_number()
        return trace

    def _follow(self, contracts: Contracts, trace: JobTrace) -> None:
        deadline = time.monotonic() + JOB_TIMEOUT_S
        seen_round = 0
        while time.monotonic() < deadline:
            job = contracts.jobs.job(trace.job_id)
            now = time.time()
            while seen_round < job.current_round or (
                job.status == JobStatus.FINISHED and seen_round < job.rounds
            ):
                trace.round_ends.append(now)
                seen_round += 1
            if job.status == JobStatus.FINISHED:
                trace.final_model_at = now
                trace.final_model_hash = "0x" + job.final_model_hash.hex()
                return
            if job.status != JobStatus.OPEN:
                raise NetworkFailed(f"job {trace.job_id} ended with status {job.status}")
            time.sleep(FOLLOW_INTERVAL_S)
        raise NetworkFailed(f"job {trace.job_id} did not finish within {JOB_TIMEOUT_S} s; "
                            f"see the node logs under {self.root}")

    # ---- stop --------------------------------------------------------------------------------

    def close(self) -> None:
        """SIGTERM the nodes (SIGKILL after a grace period), then stop the devnet."""
        launcher = self.launcher
        if launcher is not None and launcher.poll() is None:
            launcher.send_signal(signal.SIGTERM)  # it stops every node it started
            try:
                launcher.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(launcher.pid, signal.SIGKILL)  # the nodes are in its process group
                launcher.wait()
        self.devnet.down()
