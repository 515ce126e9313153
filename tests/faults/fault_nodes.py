"""Real ``allmende`` processes for the fault tests: the CLI as a subprocess, node processes.

:class:`NodeProcess` is one node home and the process serving it, started through the real
``allmende`` command in its own process group, so a test can SIGKILL it like a crash.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from allmende.chain import Deployment
from allmende.net.endpoints import LOOPBACK_RANGES
from allmende.net.health import HealthProbe
from allmende.node.config import parse_config
from allmende.node.home import create_home, open_store
from allmende.store.blobs import BlobStore

# The `allmende` command of the interpreter running the tests.
ALLMENDE = str(Path(sys.executable).with_name("allmende"))
# A node imports torch and the web3 stack before it serves; on a loaded 2-core machine that takes
# tens of seconds.
STARTUP_SECONDS = 180.0
STOP_SECONDS = 20.0
PROBE = HealthProbe()  # one kept-alive client for every node's /healthz


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300.0
) -> subprocess.CompletedProcess[str]:
    """Run ``allmende *args`` as a subprocess; its exit code, stdout and stderr."""
    return subprocess.run(
        [ALLMENDE, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


@dataclass
class NodeProcess:
    """A node home and, while it runs, the ``allmende node run`` process serving it."""

    home: Path
    port: int
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    runs: int = 0

    @property
    def url(self) -> str:
        """The node's base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        """Where the current run's output goes (one file per run)."""
        return self.home / f"run-{self.runs}.log"

    @property
    def pid(self) -> int:
        """The pid of the running node process."""
        assert self.proc is not None, "the node is not running"
        return self.proc.pid

    def start(self, *, wait: bool = True) -> NodeProcess:
        """Start ``allmende node run`` in its own process group; wait until it answers."""
        assert self.proc is None or self.proc.poll() is not None, "the node is running already"
        self.runs += 1
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [ALLMENDE, "node", "run", str(self.home)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **self.env},
            )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = STARTUP_SECONDS) -> None:
        """Block until ``GET /healthz`` answers; fail with the node's log if it exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"node exited with {self.proc.returncode}:\n{self.log_tail()}")
            if PROBE.serving(self.url):
                return
            time.sleep(0.3)
        pytest.fail(f"node did not answer within {timeout} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL the node's whole process group (a crash: nothing is flushed or closed)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=STOP_SECONDS)

    def stop(self) -> int | None:
        """SIGTERM and wait (SIGKILL after STOP_SECONDS); the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def alive(self) -> bool:
        """Whether the node process is still running."""
        return self.proc is not None and self.proc.poll() is None

    def rss_bytes(self) -> int:
        """Resident memory of the node process, from ``/proc/<pid>/status``."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS line")

    def log_tail(self, lines: int = 40) -> str:
        """The end of the current run's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    @property
    def store(self) -> BlobStore:
        """The node's blob store, opened directly (as ``allmende node put`` does)."""
        return open_store(self.home)

    def put(self, path: Path) -> str:
        """Copy a file into the node's store; its digest."""
        return self.store.put_file(path)


def init_node(
    home: Path,
    *,
    offline: bool = False,
    deployment: Path | None = None,
    key: str | None = None,
    roles: str = "trainer,aggregator",
    extra: tuple[str, ...] = (),
    allow_tasks: tuple[str, ...] = ("digits-mlp",),
) -> NodeProcess:
    """``allmende node init`` a home on a free port (plaintext key: devnet chain ids only).

    ``key`` imports that private key (a funded devnet account) instead of making a new one.
    ``allow_tasks``: the tasks its trainer may train for (a trainer allows none by default).
    """
    port = free_port()
    env = {"ALLMENDE_FAULTS_KEY": key} if key else {}
    args = ["node", "init", str(home), "--port", str(port), "--roles", roles]
    args += ["--insecure-plaintext-key", *extra]
    for task in allow_tasks:
        args += ["--allow-task", task]
    args += ["--offline"] if offline else ["--deployment", str(deployment)]
    if key:
        args += ["--import-key-env", "ALLMENDE_FAULTS_KEY"]
    done = run_cli(*args, env=env)
    assert done.returncode == 0, done.stderr
    return NodeProcess(home=home, port=port, env=env)


def write_home(
    home: Path,
    *,
    deployment: Path,
    key: str,
    roles: tuple[str, ...],
    stake_wei: int = 0,
    sections: dict[str, dict[str, object]] | None = None,
    allow_tasks: tuple[str, ...] = ("digits-mlp",),
) -> Path:
    """A node home written in-process, as ``allmende node init --allow-task ...`` writes it,
    plus ``sections``.

    For networks of many nodes: it skips the command's start-up (torch and web3 imports), which
    on a 2-core machine costs seconds a node. The CLI itself is tested by ``init_node`` users.
    """
    raw: dict[str, dict[str, object]] = {
        "node": {"port": free_port(), "roles": list(roles)},
        "chain": {"deployment": str(deployment.resolve())},
        "stake": {"amount_wei": stake_wei},
        "net": {"allow_endpoint_ranges": list(LOOPBACK_RANGES)},  # as init writes on a devnet
        "trainer": {"allowed_tasks": list(allow_tasks)},
    }
    for name, values in (sections or {}).items():
        raw[name] = {**raw.get(name, {}), **values}
    if home.exists():
        raise FileExistsError(f"{home} exists already; each test node needs a new home.")
    chain_id = Deployment.load(deployment).chain_id
    create_home(home, parse_config(raw), chain_id=chain_id, password=None, plaintext=True,
                private_key=key)  # fmt: skip
    return home


def network_homes(
    root: Path,
    devnet: Any,
    *,
    aggregators: dict[str, dict[str, object]],
    trainers: int,
    trainer_section: dict[str, object],
    partition: dict[str, object],
    stake_wei: int,
) -> dict[str, Path]:
    """The homes of a small network on ``devnet``, each with a fresh funded key and staking
    ``stake_wei``: an aggregator home per name of ``aggregators`` (the value is its
    ``[aggregator]`` section), then ``trainer0`` ... with ``trainer_section`` and part i of
    ``partition`` as their dataset."""
    deployment = devnet.devnet.deployment_path
    homes = {
        name: write_home(
            root / name, deployment=deployment, key=devnet.new_key(), roles=("aggregator",),
            stake_wei=stake_wei, sections={"aggregator": section},
        )
        for name, section in aggregators.items()
    }  # fmt: skip
    for i in range(trainers):
        dataset = {**partition, "part": i}
        homes[f"trainer{i}"] = write_home(
            root / f"trainer{i}", deployment=deployment, key=devnet.new_key(),
            roles=("trainer",), stake_wei=stake_wei,
            sections={"trainer": {**trainer_section, "dataset": dataset}},
        )  # fmt: skip
    return homes
