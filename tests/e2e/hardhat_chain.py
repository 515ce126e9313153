"""A Hardhat network node for the tests: the second EVM chain, installed by ``make setup-dev``.

``hardhat node`` runs from ``.tools/hardhat/`` (its config, copied there from
``chains/hardhat/hardhat.config.js``, must sit beside its ``node_modules``). It listens on
127.0.0.1 at the port given, in its own process group, which :meth:`HardhatNode.stop` kills.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from allmende.chain.rpc import JsonRpcTransport, RpcBadAnswer, RpcUnreachable

ROOT = Path(__file__).resolve().parents[2]
HARDHAT_DIR = ROOT / ".tools" / "hardhat"
HARDHAT = HARDHAT_DIR / "node_modules" / ".bin" / "hardhat"
CHAIN_ID = 1337  # chains/hardhat/hardhat.config.js
START_TIMEOUT = 120.0  # it answers within seconds; a loaded machine takes longer
STOP_TIMEOUT = 10.0
QUIET_ENV = {"HARDHAT_DISABLE_TELEMETRY_PROMPT": "true"}  # never ask (there is no terminal)


@dataclass
class HardhatNode:
    """A running ``hardhat node``: its RPC URL and process."""

    rpc_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        """SIGKILL the whole process group (the chain lives in memory: nothing to save)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(STOP_TIMEOUT)


def start_hardhat(port: int, log_path: Path) -> HardhatNode:
    """Start ``hardhat node`` on ``127.0.0.1:port`` and wait until it answers ``eth_chainId``."""
    if not (HARDHAT.is_file() and (HARDHAT_DIR / "hardhat.config.js").is_file()):
        raise RuntimeError(f"Hardhat is not installed in {HARDHAT_DIR}; run `make setup-dev`.")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(HARDHAT), "node", "--hostname", "127.0.0.1", "--port", str(port)],
            cwd=HARDHAT_DIR,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **QUIET_ENV},
        )
    node = HardhatNode(rpc_url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)
    deadline = time.monotonic() + START_TIMEOUT
    transport = JsonRpcTransport(node.rpc_url, timeout=1.0)
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"hardhat node exited with {process.returncode}: "
                                   f"{log_path.read_text(errors='replace')[-2000:]}")  # fmt: skip
            with contextlib.suppress(RpcUnreachable, RpcBadAnswer):
                if "result" in transport.call("eth_chainId", []):
                    return node
            time.sleep(0.2)
    except BaseException:
        node.stop()
        raise
    finally:
        transport.close()
    node.stop()
    raise RuntimeError(f"hardhat node did not answer on {node.rpc_url} in {START_TIMEOUT:.0f} s")
