"""The devnet's processes: the real Anvil binary, a launcher that dies alone, a free port.

The npm package's ``anvil`` is a Node launcher that spawns the real binary. If only the launcher is
killed, the binary keeps the port; ``devnet up`` must then adopt it rather than refuse the port,
and ``devnet down`` must stop it.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from nodes import free_port

from allmende.chain import devnet as devnet_module
from allmende.chain.devnet import Devnet, DevnetConfig, find_anvil


def wait_until(condition, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def launcher() -> Path:
    native = find_anvil()
    modules = native.parents[3] if native.parent.name == "bin" else native.parents[1]
    path = modules / ".bin" / "anvil"
    if not path.is_file():
        pytest.skip("the npm launcher is not installed here")
    return path


def test_the_project_copy_runs_the_native_binary(tmp_path: Path) -> None:
    net = Devnet(DevnetConfig(state_dir=tmp_path / "chain", port=free_port()))
    try:
        pid = net.start()
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        assert b"node" not in Path(os.fsdecode(argv0)).name.encode()
        assert devnet_module._anvil_pids_for(net.state_file) == [pid]
    finally:
        net.down(timeout=0.0)
    assert not devnet_module._rpc_answers(net.rpc_url)


def test_up_adopts_the_binary_when_only_the_launcher_died(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALLMENDE_ANVIL", str(launcher()))
    net = Devnet(DevnetConfig(state_dir=tmp_path / "chain", port=free_port()))
    try:
        first = net.up()
        launcher_pid = net.pid()
        assert launcher_pid is not None

        def binary_pids() -> list[int]:
            return [p for p in devnet_module._anvil_pids_for(net.state_file) if p != launcher_pid]

        wait_until(lambda: len(binary_pids()) == 1, "the launcher's child binary")
        (binary,) = binary_pids()
        os.kill(launcher_pid, signal.SIGKILL)  # the launcher only, as a crash or `kill` would
        wait_until(lambda: not devnet_module._is_alive(launcher_pid), "the launcher to die")
        assert devnet_module._rpc_answers(net.rpc_url)  # the orphan still holds the port
        assert net.pid() is None

        again = net.up()  # adopts the orphan instead of refusing the port
        assert again.jobs == first.jobs and again.registry == first.registry
        assert net.pid() == binary
        assert net.status().running

        assert net.down()
        assert not devnet_module._rpc_answers(net.rpc_url)
        assert devnet_module._anvil_pids_for(net.state_file) == []
        assert not (net.state_dir / "anvil.pid").exists()
    finally:
        net.down(timeout=0.0)


def test_down_leaves_no_process_of_the_launcher_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALLMENDE_ANVIL", str(launcher()))
    net = Devnet(DevnetConfig(state_dir=tmp_path / "chain", port=free_port()))
    try:
        pid = net.start()
        wait_until(lambda: len(devnet_module._anvil_pids_for(net.state_file)) == 2, "two processes")
        assert net.down()
        assert not devnet_module._group_alive(pid)
        assert devnet_module._anvil_pids_for(net.state_file) == []
        net.start()  # the same port at once: nothing is left holding it
        assert devnet_module._rpc_answers(net.rpc_url)
    finally:
        net.down(timeout=0.0)
