"""Start and stop real ``allmende node run`` processes for integration and end-to-end tests.

Use the :func:`node_factory` fixture (import it into a test module: ``from nodes import
node_factory``); every node it starts is killed when the test ends, however it ends::

    def test_x(devnet, node_factory):
        a = node_factory.start(node_factory.init("a", deployment=devnet.deployment_path,
                                                 key=devnet.new_key()))
        a.info()            # GET /v1/info
        a.store.put_bytes(b"...")
        a.stop()            # SIGTERM, returns the exit code

Node processes log to ``<home>/node.log``; a failing start raises with the log's tail.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_utils import to_checksum_address

from allmende.net.health import HealthProbe
from allmende.node.config import load_config
from allmende.node.home import open_state, open_store
from allmende.store.blobs import BlobStore
from allmende.store.state import StateDB

# The CLI imports torch and web3; on a loaded machine a node needs a while to come up.
START_TIMEOUT = 180.0
STOP_TIMEOUT = 30.0
LOG_TIMEOUT = 60.0  # how long a line logged after a mined transaction may lag the chain
KEY_ENV = "ALLMENDE_TEST_NODE_KEY"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def allmende(*args: str, env: dict[str, str] | None = None, timeout: float = 120.0) -> Any:
    """Run the ``allmende`` CLI in a subprocess; returns the CompletedProcess (never raises)."""
    return subprocess.run(
        [sys.executable, "-m", "allmende.cli.main", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@dataclass
class NodeProcess:
    """A running ``allmende node run`` child process."""

    home: Path
    url: str
    address: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def store(self) -> BlobStore:
        """The node's blob store (the same directory the process uses)."""
        return open_store(self.home)

    def state(self) -> StateDB:
        """A connection to the node's state database (close it after use)."""
        return open_state(self.home)

    def info(self) -> dict[str, Any]:
        """``GET /v1/info``."""
        return dict(httpx.get(f"{self.url}/v1/info", timeout=60).json())

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, *, timeout: float = STOP_TIMEOUT) -> int:
        """Send ``sig`` and wait for the exit code (SIGKILL after ``timeout``)."""
        if self.alive():
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL, no clean-up (a crash)."""
        if self.alive():
            self.process.kill()
        self.process.wait(STOP_TIMEOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_once(self, *lines: str, timeout: float = LOG_TIMEOUT) -> str:
        """The log, once any of ``lines`` is in it or ``timeout`` has passed.

        A node logs a step after its transaction is mined, so the chain can show the step
        (even the job's end) a moment before the line reaches the log.
        """
        deadline = time.monotonic() + timeout
        text = self.log()
        while not any(line in text for line in lines) and time.monotonic() < deadline:
            time.sleep(0.2)
            text = self.log()
        return text


@dataclass
class NodeFactory:
    """Creates node homes under ``root`` and starts node processes; :meth:`close` kills them."""

    root: Path
    started: list[NodeProcess] = field(default_factory=list)

    def init(
        self,
        name: str,
        *,
        deployment: Path | None = None,
        key: str | None = None,
        port: int | None = None,
        roles: Sequence[str] = ("trainer", "aggregator"),
        stake_wei: int = 0,
        trust: Sequence[str] = (),
        allow_tasks: Sequence[str] = ("digits-mlp",),
        extra_config: str = "",
    ) -> Path:
        """``allmende node init`` a home with a plaintext key (devnet) and a free port.

        ``deployment`` None makes an offline node that trusts ``trust``. ``key`` imports that
        private key (use ``devnet.new_key()`` for a funded one). ``extra_config`` is TOML
        appended to ``node.toml`` (e.g. role sections). ``allow_tasks``: the tasks its trainer
        may train for (``--allow-task``; a trainer allows none by default).
        """
        home = self.root / name
        args = ["node", "init", str(home), "--insecure-plaintext-key"]
        args += ["--port", str(port or free_port()), "--roles", ",".join(roles)]
        args += ["--stake-wei", str(stake_wei)]
        args += ["--deployment", str(deployment)] if deployment else ["--offline"]
        for address in trust:
            args += ["--trust", address]
        for task in allow_tasks:
            args += ["--allow-task", task]
        env = {}
        if key is not None:
            args += ["--import-key-env", KEY_ENV]
            env[KEY_ENV] = key
        result = allmende(*args, env=env)
        if result.returncode != 0:
            raise RuntimeError(f"node init failed ({result.returncode}): {result.stderr}")
        if extra_config:
            with open(home / "node.toml", "a") as f:
                f.write("\n" + extra_config)
        return home

    def start(
        self,
        home: Path,
        *,
        wait: bool = True,
        timeout: float = START_TIMEOUT,
        env: dict[str, str] | None = None,
    ) -> NodeProcess:
        """Start ``allmende node run HOME``; with ``wait``, return once ``/healthz`` answers.
        ``env``: variables added to the node's environment (a hostile node's patch)."""
        config = load_config(home)
        log_path = home / "node.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "allmende.cli.main", "node", "run", str(home)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, **env} if env else None,
            )
        node = NodeProcess(
            home=home,
            url=config.node.endpoint,
            address=_address(home),
            process=process,
            log_path=log_path,
        )
        self.started.append(node)
        if wait:
            wait_ready(node, timeout=timeout)
        return node

    def close(self) -> None:
        """Kill every node started (the whole process group), however the test ended."""
        for node in self.started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(node.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.process.wait(STOP_TIMEOUT)


def wait_ready(node: NodeProcess, *, timeout: float = START_TIMEOUT) -> None:
    """Wait until ``GET /healthz`` answers; raise with the node's log if it exits or hangs."""
    deadline = time.monotonic() + timeout
    with HealthProbe() as probe:
        while time.monotonic() < deadline:
            if not node.alive():
                code = node.process.returncode
                log = node.log()[-3000:]
                raise RuntimeError(f"node {node.home.name} exited with {code}:\n{log}")
            if probe.serving(node.url):
                return
            time.sleep(0.2)
    raise RuntimeError(f"node {node.home.name} not ready in {timeout:.0f} s:\n{node.log()[-3000:]}")


def _address(home: Path) -> str:
    document = json.loads((home / load_config(home).node.key_file).read_text())
    return str(to_checksum_address(document["address"]))


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[NodeFactory]:
    """A :class:`NodeFactory` in a temp dir; kills every node it started afterwards."""
    factory = NodeFactory(tmp_path / "nodes")
    factory.root.mkdir()
    try:
        yield factory
    finally:
        factory.close()
