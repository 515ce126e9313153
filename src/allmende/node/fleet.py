"""Several nodes from one command: ``allmende node run HOME HOME ...``.

Each node home still gets its own OS process, with its own key, store, state, port, chain
connection and roles, exactly as ``allmende node run HOME`` would run it. What the nodes share is
the start-up: this process imports the node's libraries (the web stack, the chain bindings, torch
and the installed tasks) once and then forks one child per home, so *n* nodes on one machine
start in about the time of one instead of *n* times the imports, and the children share the
imported code's memory until they write to it.

Each child writes its log to ``HOME/node.log`` (appending) and its pid to ``HOME/node.lock``.
The nodes share the machine's cores: each trains with ``cores // nodes`` torch threads (at least
one) unless ``OMP_NUM_THREADS`` says otherwise; several nodes each spinning up a thread per core
would only fight over the cores.

SIGINT or SIGTERM to this process stops every node gracefully; a node that exits on its own is
reported here and the others keep running. If this process dies without stopping them (SIGKILL),
every node gets SIGTERM from the kernel and stops too (Linux), so no node is left orphaned. The
command ends when every node has ended; its exit code is 0 only if every node ended cleanly.

Key passwords cannot be prompted for several nodes at once: each node reads its password from the
environment variable its ``[node] password_env`` names, or has a devnet plaintext key.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from allmende.errors import AllmendeError, NodeError
from allmende.node.config import CONFIG_FILE, load_config

log = logging.getLogger(__name__)

NODE_LOG_FILE = "node.log"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Exit code of a child whose node stopped with an error (the reason is in its node.log).
EXIT_NODE_FAILED = 1
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies


def check_homes(homes: Sequence[Path]) -> list[Path]:
    """The homes as absolute paths, each a distinct node home with a valid ``node.toml``;
    :class:`NodeError` or :class:`~allmende.errors.ConfigError` naming the first bad one."""
    resolved = [Path(home).resolve() for home in homes]
    seen: set[Path] = set()
    for home in resolved:
        if home in seen:
            raise NodeError(f"The node home {home} is named twice; give each node its own home.")
        seen.add(home)
        if not (home / CONFIG_FILE).is_file():
            raise NodeError(
                f"No node home at {home} (no {CONFIG_FILE}); create it with "
                f"`allmende node init {home}`."
            )
        load_config(home)  # a bad config fails here, before any node starts
    return resolved


# Imported by a node only once it serves or fetches (the HTTP protocol and client pieces,
# FastAPI's pydantic compatibility layer, numpy's random generators for data partitions).
SERVING_MODULES = (
    "anyio._backends._asyncio",
    "h11",
    "httpcore._async.connection_pool",
    "httpcore._backends.anyio",
    "httptools",
    "numpy.random",
    "pydantic.v1",
    "uvicorn.lifespan.off",
    "uvicorn.lifespan.on",
    "uvicorn.protocols.http.httptools_impl",
    "uvicorn.protocols.websockets.auto",
    "allmende.node.remote",
    "allmende.node.submit",
)


def preload() -> None:
    """Import what every node needs, so the forked children do not each import it again.

    Only imports, task classes and the TLS settings: no tensor is made here, so no torch thread
    pool exists yet when the children are forked (each child makes its own).
    """
    import torch  # noqa: F401 - training never imports torch._dynamo (see allmende.learn.optim)

    import allmende.node.process
    import allmende.node.roles.aggregator
    import allmende.node.roles.trainer  # noqa: F401 - imported for the children
    from allmende.learn.task import installed_tasks, load_task
    from allmende.net.client import tls_context

    with contextlib.suppress(ImportError):  # each node's event loop, where it is installed
        import uvloop  # noqa: F401
    for name in SERVING_MODULES:
        with contextlib.suppress(ImportError):  # an optional speed-up that is not installed
            importlib.import_module(name)
    tls_context()
    for name in installed_tasks():
        try:
            load_task(name)
        except AllmendeError as exc:  # the node that needs it reports it in its own log
            log.debug("Task %s not preloaded: %s", name, exc)


def torch_threads(nodes: int) -> int:
    """Torch threads for each of ``nodes`` nodes sharing this machine's cores."""
    return max(1, len(os.sched_getaffinity(0)) // nodes)


def _stop_with_parent(parent: int) -> None:
    """Ask the kernel for SIGTERM when the launcher dies (Linux ``PR_SET_PDEATHSIG``)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the launcher's SIGTERM is all there is
        return
    if os.getppid() != parent:  # it died before the request: nobody would send the signal
        os.kill(os.getpid(), signal.SIGTERM)


def _child(home: Path, run: Callable[[Path], None], threads: int) -> int:
    """Body of a forked child: log to ``home/node.log``, run the node; the exit code."""
    with (home / NODE_LOG_FILE).open("ab", buffering=0) as out:
        os.dup2(out.fileno(), sys.stdout.fileno())
        os.dup2(out.fileno(), sys.stderr.fileno())
    if "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr, force=True)
    try:
        run(home)
    except AllmendeError as exc:
        log.error("The node stopped: %s", exc)
        return EXIT_NODE_FAILED
    except BaseException:  # a child must never return into the parent's code
        log.exception("The node failed.")
        return EXIT_NODE_FAILED
    return 0


def _run_one(home: Path) -> None:
    from allmende.node.process import run_node

    run_node(home, prompt=None)


def run_fleet(
    homes: Sequence[Path],
    *,
    run: Callable[[Path], None] = _run_one,
    say: Callable[[str], None] = print,
) -> int:
    """Run one node process per home until all have ended; 0 if every node ended cleanly.

    ``run`` is what a child does with its home (``run_node`` by default); ``say`` reports
    starts and exits.
    """
    checked = check_homes(homes)
    threads = torch_threads(len(checked))
    preload()
    gc.freeze()  # the preloaded objects: never scanned by the children's collections, so shared
    sys.stdout.flush()
    sys.stderr.flush()
    children: dict[int, Path] = {}
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in STOP_SIGNALS}
    try:
        for home in checked:
            if stopping:
                break
            # Signals wait until the child has dropped this process's handlers.
            signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            parent = os.getpid()
            pid = os.fork()
            if pid == 0:  # the child: never returns
                for sig in STOP_SIGNALS:  # the node installs its own handlers
                    signal.signal(sig, signal.SIG_DFL)
                _stop_with_parent(parent)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
                os._exit(_child(home, run, threads))
            children[pid] = home
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
            say(f"node {home} started (pid {pid}); its log is {home / NODE_LOG_FILE}")
        failed = 0
        while children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            if pid not in children:
                continue
            home = children.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            if code != 0:
                failed += 1
            say(f"node {home} ended with exit code {code}; see {home / NODE_LOG_FILE}")
        return 0 if failed == 0 else EXIT_NODE_FAILED
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
