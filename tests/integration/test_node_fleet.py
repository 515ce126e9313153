"""``allmende node run HOME HOME ...``: one real node process per home, forked from one command.

Offline nodes (no chain) keep these tests quick; what they prove is the process side: each home
gets its own process, port, key, log and lock; a bad home stops everything before any node
starts; a node that fails leaves the others serving; SIGTERM stops them all.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from nodes import START_TIMEOUT, STOP_TIMEOUT, NodeFactory, allmende

from allmende.net.health import HealthProbe
from allmende.node.config import load_config

PROBE = HealthProbe()  # one kept-alive client for every node's /healthz


@pytest.fixture
def factory(tmp_path: Path) -> NodeFactory:
    root = tmp_path / "nodes"
    root.mkdir()
    return NodeFactory(root)


@pytest.fixture
def launched() -> Iterator[list[subprocess.Popen[str]]]:
    """Launchers a test started; their whole process groups are killed afterwards."""
    started: list[subprocess.Popen[str]] = []
    try:
        yield started
    finally:
        for process in started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(STOP_TIMEOUT)
            if process.stdout is not None:
                process.stdout.close()


def launch(homes: list[Path], started: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "allmende.cli.main", "node", "run", *map(str, homes)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    started.append(process)
    return process


def url(home: Path) -> str:
    return load_config(home).node.endpoint


def healthy(home: Path) -> bool:
    return PROBE.serving(url(home))


def wait_until(check, what: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if check():
            return
        if process.poll() is not None:
            raise AssertionError(f"the launcher exited ({process.returncode}) before {what}")
        time.sleep(0.2)
    raise AssertionError(f"not {what} within {START_TIMEOUT} s")


def lock_pid(home: Path) -> int:
    return int((home / "node.lock").read_text().strip())


def ended(home: Path) -> bool:
    """The node of ``home`` started (its pid is in the lock file) and is gone."""
    with contextlib.suppress(OSError, ValueError):
        return not Path(f"/proc/{lock_pid(home)}").exists()
    return False


def parent_pid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def test_each_home_runs_in_its_own_process_and_sigterm_stops_all(factory, launched) -> None:
    homes = [factory.init(name) for name in ("a", "b", "c")]
    launcher = launch(homes, launched)
    wait_until(lambda: all(healthy(home) for home in homes), "every node healthy", launcher)

    pids = [lock_pid(home) for home in homes]
    assert len(set(pids)) == 3 and launcher.pid not in pids
    assert all(parent_pid(pid) == launcher.pid for pid in pids)  # forked by the launcher
    addresses = {httpx.get(f"{url(home)}/v1/info", timeout=10).json()["address"] for home in homes}
    assert len(addresses) == 3  # each node serves its own key
    for home in homes:
        log = (home / "node.log").read_text()
        assert f"serving on {url(home)}" in log, log  # each node logs to its own home

    launcher.send_signal(signal.SIGTERM)
    output, _ = launcher.communicate(timeout=STOP_TIMEOUT)
    assert launcher.returncode == 0, output
    assert output.count("ended with exit code 0") == 3, output
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
    assert not any(healthy(home) for home in homes)


def test_a_bad_home_starts_no_node(factory, tmp_path: Path) -> None:
    good = factory.init("good")
    missing = tmp_path / "missing"
    result = allmende("node", "run", str(good), str(missing))
    assert result.returncode != 0
    assert f"No node home at {missing}" in result.stderr
    assert not (good / "node.lock").exists() and not (good / "node.log").exists()

    result = allmende("node", "run", str(good), str(good))
    assert result.returncode != 0
    assert "named twice" in result.stderr


def test_a_failing_node_leaves_the_others_serving(factory, launched) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy_port = taken.getsockname()[1]
        ok, clash = factory.init("ok"), factory.init("clash", port=busy_port)
        launcher = launch([ok, clash], launched)
        wait_until(lambda: healthy(ok), "the good node healthy", launcher)
        wait_until(lambda: ended(clash), "the clashing node stopped", launcher)
    assert healthy(ok)  # still serving after its sibling failed
    assert str(busy_port) in (clash / "node.log").read_text()

    launcher.send_signal(signal.SIGTERM)
    output, _ = launcher.communicate(timeout=STOP_TIMEOUT)
    assert launcher.returncode == 1, output  # not every node ended cleanly
    assert f"node {clash} ended with exit code 1" in output, output
    assert f"node {ok} ended with exit code 0" in output, output


def test_the_nodes_stop_when_the_launcher_is_killed(factory, launched) -> None:
    homes = [factory.init(name) for name in ("a", "b")]
    launcher = launch(homes, launched)
    wait_until(lambda: all(healthy(home) for home in homes), "every node healthy", launcher)
    pids = [lock_pid(home) for home in homes]

    os.kill(launcher.pid, signal.SIGKILL)  # no chance to stop its nodes itself
    launcher.wait(STOP_TIMEOUT)

    deadline = time.monotonic() + STOP_TIMEOUT
    while any(Path(f"/proc/{pid}").exists() and not zombie(pid) for pid in pids):
        assert time.monotonic() < deadline, "a node outlived its launcher"
        time.sleep(0.2)
    assert not any(healthy(home) for home in homes)
    for home in homes:
        assert "stopped" in (home / "node.log").read_text()  # a graceful stop, not a kill


def zombie(pid: int) -> bool:
    """Ended but not yet reaped (its parent is gone; init reaps it shortly)."""
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    return False
