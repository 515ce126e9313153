"""The local dev chain: start, deploy to, inspect and stop an Anvil node whose state persists.

Anvil runs detached in its own process group, so it outlives the command that started it. Its pid
file, log, chain state and the deployment file all live in one state directory (``.devnet/``
unless told otherwise); ``down`` then ``up`` brings back the same chain, balances and contracts.

The npm package's ``anvil`` is a Node launcher that starts the real binary as a child. The devnet
runs that binary itself where it can find it, and ``down`` waits for every process of the group,
so a launcher that dies first cannot leave the binary holding the port. An Anvil left running on
this state directory by an earlier launcher is found by its ``--state`` argument and adopted.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import platform
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from allmende import _paths
from allmende.chain.accounts import DEVNET_ACCOUNTS, DEVNET_BALANCE_ETH, DEVNET_MNEMONIC, dev_keys
from allmende.chain.client import ChainClient
from allmende.chain.deploy import ContractSettings, deploy_contracts, deployment_is_live
from allmende.chain.deployment import DEPLOYMENT_FILE, Deployment
from allmende.chain.registry import Registry
from allmende.chain.rpc import JsonRpcTransport, RpcBadAnswer, RpcUnreachable
from allmende.errors import ChainError, DevnetError

DEFAULT_STATE_DIR = Path(".devnet")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8545
STATE_INTERVAL = 2  # seconds between state dumps, so even a SIGKILL loses at most this much
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
KILL_WAIT = 10.0  # seconds a SIGKILLed process may take to go
ANVIL_ENV = "ALLMENDE_ANVIL"
ANVIL_VERSION = "1.7.1"
PID_FILE = "anvil.pid"
LOG_FILE = "anvil.log"
STATE_FILE = "anvil-state.json"
INSTALL_HINT = (
    "Anvil is not installed; run `make setup`, or `npm install --prefix .tools/anvil "
    f"@foundry-rs/anvil@{ANVIL_VERSION}`, or set ${ANVIL_ENV} to an anvil binary."
)


class DevnetConfig(BaseModel):
    """Where the devnet keeps its files, where it listens, and how its contracts are set up."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    state_dir: Path = DEFAULT_STATE_DIR
    host: str = DEFAULT_HOST
    port: Annotated[int, Field(gt=0, lt=65536)] = DEFAULT_PORT
    accounts: Annotated[int, Field(ge=1)] = DEVNET_ACCOUNTS
    contracts: ContractSettings = ContractSettings()


@dataclass(frozen=True)
class DevnetStatus:
    """What ``allmende devnet status`` reports."""

    running: bool
    pid: int | None
    rpc_url: str
    chain_id: int | None = None
    block_number: int | None = None
    deployment: Deployment | None = None
    node_count: int | None = None


def find_anvil() -> Path:
    """``$ALLMENDE_ANVIL``, else the project's ``.tools/anvil``, else ``anvil`` on PATH."""
    env = os.environ.get(ANVIL_ENV)
    if env:
        if Path(env).is_file() and os.access(env, os.X_OK):
            return Path(env)
        raise DevnetError(
            f"${ANVIL_ENV} points at {env}, which is not an executable. {INSTALL_HINT}"
        )
    root = _paths.project_root()
    if root is not None:
        modules = root / ".tools" / "anvil" / "node_modules"
        native = _native_binary(modules)
        if native is not None:
            return native
        local = modules / ".bin" / "anvil"
        if local.is_file():
            return local
    on_path = shutil.which("anvil")
    if on_path:
        return Path(on_path)
    raise DevnetError(INSTALL_HINT)


_NPM_OS = {"linux": "linux", "darwin": "darwin", "win32": "win32"}
_NPM_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def _native_binary(modules: Path) -> Path | None:
    """The platform package's real ``anvil`` binary under ``node_modules``, if it is there."""
    os_name = _NPM_OS.get(sys.platform)
    arch = _NPM_ARCH.get(platform.machine().lower())
    if os_name is None or arch is None:
        return None
    binary = modules / "@foundry-rs" / f"anvil-{os_name}-{arch}" / "bin" / "anvil"
    return binary if binary.is_file() and os.access(binary, os.X_OK) else None


class Devnet:
    """One Anvil devnet, identified by its state directory."""

    def __init__(self, config: DevnetConfig | None = None) -> None:
        self.config = config or DevnetConfig()
        self.state_dir = self.config.state_dir.resolve()

    @property
    def rpc_url(self) -> str:
        return f"http://{self.config.host}:{self.config.port}"

    @property
    def deployment_path(self) -> Path:
        return self.state_dir / DEPLOYMENT_FILE

    @property
    def log_path(self) -> Path:
        return self.state_dir / LOG_FILE

    def up(self) -> Deployment:
        """Start Anvil if needed, deploy the contracts if they are not live, and return them."""
        self.start()
        client = ChainClient(self.rpc_url, dev_keys(1)[0])
        if self.deployment_path.is_file():
            deployment = Deployment.load(self.deployment_path)
            if deployment_is_live(client, deployment):
                if deployment.rpc_url != self.rpc_url:  # same chain, started on another port
                    deployment = deployment.model_copy(update={"rpc_url": self.rpc_url})
                    deployment.save(self.deployment_path)
                return deployment
        deployment = deploy_contracts(client, self.config.contracts)
        deployment.save(self.deployment_path)
        return deployment

    @property
    def state_file(self) -> Path:
        return self.state_dir / STATE_FILE

    def start(self) -> int:
        """Start Anvil detached (or find it running) and wait until its RPC answers; its pid."""
        pid = self.pid()
        if pid is None:
            pid = self._adopt_orphan()
        if pid is not None:
            running_url = self.running_rpc_url()
            if running_url != self.rpc_url:
                raise DevnetError(
                    f"The devnet in {self.state_dir} already runs at {running_url}; "
                    "use that port, or run `allmende devnet down` first."
                )
            self._wait_for_rpc(pid)
            return pid
        anvil = find_anvil()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if _rpc_answers(self.rpc_url):
            raise DevnetError(
                f"Something else already listens on {self.rpc_url}; stop it or pick another "
                "port with --port."
            )
        argv = [
            str(anvil),
            "--host", self.config.host,
            "--port", str(self.config.port),
            "--mnemonic", DEVNET_MNEMONIC,
            "--accounts", str(self.config.accounts),
            "--balance", str(DEVNET_BALANCE_ETH),
            "--state", str(self.state_file),
            "--state-interval", str(STATE_INTERVAL),
        ]  # fmt: skip
        log_flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        pid = os.posix_spawn(
            argv[0],
            argv,
            dict(os.environ),
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, str(self.log_path), log_flags, 0o644),
                (os.POSIX_SPAWN_DUP2, 1, 2),
            ],
            setsid=True,  # its own session and process group: survives this command
        )
        (self.state_dir / PID_FILE).write_text(f"{pid}\n{self.rpc_url}\n")
        self._wait_for_rpc(pid)
        return pid

    def _adopt_orphan(self) -> int | None:
        """An Anvil still running on this state file whose launcher died: record and use it."""
        orphans = _anvil_pids_for(self.state_file)
        if not orphans:
            return None
        pid = orphans[0]
        url = _flag_value(pid, "--port")
        host = _flag_value(pid, "--host") or DEFAULT_HOST
        rpc_url = f"http://{host}:{url}" if url else self.rpc_url
        (self.state_dir / PID_FILE).write_text(f"{pid}\n{rpc_url}\n")
        return pid

    def pid(self) -> int | None:
        """The pid of this state directory's Anvil if it is running, else None."""
        try:
            pid = int((self.state_dir / PID_FILE).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if _is_anvil(pid) else None

    def running_rpc_url(self) -> str:
        """The RPC URL the running Anvil was started with (the configured one if unknown)."""
        try:
            return (self.state_dir / PID_FILE).read_text().split()[1]
        except (OSError, IndexError):
            return self.rpc_url

    def status(self) -> DevnetStatus:
        """Whether it runs, and what the chain and the deployment file say."""
        pid = self.pid()
        if pid is None:
            pid = self._adopt_orphan()
        deployment = (
            Deployment.load(self.deployment_path) if self.deployment_path.is_file() else None
        )
        if pid is not None:
            rpc_url = self.running_rpc_url()
        else:
            rpc_url = deployment.rpc_url if deployment else self.rpc_url
        if pid is None or not _rpc_answers(rpc_url):
            return DevnetStatus(running=False, pid=pid, rpc_url=rpc_url, deployment=deployment)
        client = ChainClient(rpc_url)
        node_count = None
        if deployment is not None and deployment_is_live(client, deployment):
            node_count = Registry(client, deployment.registry).node_count()
        return DevnetStatus(
            running=True,
            pid=pid,
            rpc_url=rpc_url,
            chain_id=client.chain_id,
            block_number=client.block_number(),
            deployment=deployment,
            node_count=node_count,
        )

    def down(self, *, timeout: float = STOP_TIMEOUT) -> bool:
        """Stop Anvil: SIGTERM (it dumps its state), SIGKILL after ``timeout``.

        Returns once no process of its group and no Anvil on this state file is left, so the
        port is free for the next ``up``.
        """
        pid = self.pid()
        if pid is None:
            pid = self._adopt_orphan()
        if pid is None:
            return False
        targets = {pid, *_anvil_pids_for(self.state_file)}

        def alive() -> bool:
            return any(_group_alive(target) for target in targets)

        for target in targets:
            _signal_group(target, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive():
            for target in targets:
                _signal_group(target, signal.SIGKILL)
            kill_deadline = time.monotonic() + KILL_WAIT
            while alive() and time.monotonic() < kill_deadline:
                time.sleep(0.05)
        (self.state_dir / PID_FILE).unlink(missing_ok=True)
        return True

    def _wait_for_rpc(self, pid: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if not _is_alive(pid):
                raise DevnetError(
                    f"Anvil exited during start-up; see {self.log_path}: {self._log_tail()}"
                )
            if _rpc_answers(self.rpc_url):
                return
            time.sleep(0.1)
        raise DevnetError(
            f"Anvil did not answer on {self.rpc_url} within {START_TIMEOUT:.0f} s; "
            f"see {self.log_path}, then run `allmende devnet down` and retry."
        )

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-3:]) or "(empty log)"


def advance_time(client: ChainClient, seconds: int) -> None:
    """Move the devnet's clock forward and mine a block (Anvil only)."""
    client.rpc("evm_increaseTime", [seconds])
    client.rpc("evm_mine", [])


def _rpc_answers(url: str) -> bool:
    """Whether a JSON-RPC endpoint answers ``eth_chainId`` at ``url`` within a second."""
    try:
        transport = JsonRpcTransport(url, timeout=1.0)
    except ValueError:
        return False
    try:
        answer = transport.call("eth_chainId", [])
    except (RpcUnreachable, RpcBadAnswer, OSError):
        return False
    finally:
        transport.close()
    return isinstance(answer, dict) and "result" in answer


def _is_alive(pid: int) -> bool:
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)  # reap it if it is our own exited child
        if reaped == pid:
            return False
    except ChildProcessError:
        pass  # not our child: started by an earlier command
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return True


def _is_anvil(pid: int) -> bool:
    """Alive and really Anvil (a stale pid file may name a recycled pid)."""
    if not _is_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc here: trust the pid file
    return b"anvil" in cmdline


def _group_alive(pid: int) -> bool:
    """Whether ``pid`` or any live (not zombie) process of the group it led is left."""
    if _is_alive(pid):
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return False
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pid) and fields[0] != "Z":
            return True
    return False


def _cmdline(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def _anvil_pids_for(state_file: Path) -> list[int]:
    """Live Anvil processes (binary or launcher) started with ``--state state_file``."""
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    wanted = os.fsencode(str(state_file))
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        argv = _cmdline(int(entry.name))
        if not any(b"anvil" in arg for arg in argv[:2]):
            continue
        pairs = itertools.pairwise(argv)
        started_here = any(flag == b"--state" and value == wanted for flag, value in pairs)
        if started_here and _is_alive(int(entry.name)):
            found.append(int(entry.name))
    return sorted(found)


def _flag_value(pid: int, flag: str) -> str | None:
    argv = _cmdline(pid)
    for name, value in itertools.pairwise(argv):
        if name == flag.encode():
            return value.decode(errors="replace")
    return None


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)  # Anvil leads its own process group (setsid)
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)  # an adopted Anvil whose launcher led the group
    except PermissionError as exc:
        raise ChainError(f"Not allowed to stop Anvil (pid {pid}); stop it as its owner.") from exc
