"""The ``allmende node run`` process: start, register, serve, run the roles, shut down.

:func:`run_node` takes an OS lock on the node home (a second process on the same home refuses to
start), opens the store, state and key, connects to the chain, registers or updates the node's
endpoint and roles on the Registry, tops up its stake, and serves the API with uvicorn until
SIGINT or SIGTERM. Alongside the server it runs the *role services*
(:class:`~allmende.node.context.RoleService`): objects with ``name`` and ``async run(ctx)`` that
get the :class:`~allmende.node.context.NodeContext` (store, state, peer client, message router,
chain bindings) and should return when ``ctx.stopping`` is set; they are cancelled on shutdown.
:func:`role_services` is where the roles are chosen from the config.

Offline mode (``[chain] offline = true``) skips the chain entirely: no registration, and messages
are accepted only from ``[chain] trusted_signers``. It exists for benchmarks and data-plane tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from allmende.chain import ChainClient, Deployment, Jobs, Registry
from allmende.chain.contracts import require_code
from allmende.chain.heads import HeadWatcher, LogFilter, websocket_url
from allmende.errors import AllmendeError, ConfigError, NodeError
from allmende.net.api import (
    ApiSettings,
    MessageRouter,
    NodeIdentity,
    create_app,
    direct_blob_gets,
)
from allmende.net.client import FetchPace, PeerClient
from allmende.net.fairshare import PeerLimits, fair_protocol
from allmende.net.messages import MessageDomain
from allmende.net.metrics import NodeMetrics
from allmende.net.signers import RegistrySigners, SignerCheck, StaticSigners
from allmende.node.config import NodeConfig, load_config, resolve
from allmende.node.context import NodeChain, NodeContext, RoleService
from allmende.node.control import CONTROL_SOCKET, bind_control_socket, control_app
from allmende.node.home import home_lock, open_state, open_store
from allmende.node.keystore import PasswordPrompt, load_key
from allmende.node.roles import role_services_for

log = logging.getLogger(__name__)

# How often expired message nonces are dropped from the state database.
NONCE_SWEEP_SECONDS = 60.0
# How long role services get to finish after shutdown starts, before they are cancelled.
ROLE_STOP_SECONDS = 10.0
# A peer that does not accept a connection within this is skipped.
CONNECT_TIMEOUT_SECONDS = 5.0


def wake_filter(deployment: Deployment, services: Sequence[RoleService]) -> LogFilter | None:
    """The logs that wake this node's roles: those any role follows. None (wake for every new
    block) when there is no role, or one that does not say what it follows (no ``log_filter``).
    """
    filters = []
    for service in services:
        make = getattr(service, "log_filter", None)
        if make is None:
            return None
        filters.append(make(deployment))
    if not filters:
        return None
    addresses = tuple(sorted({address for f in filters for address in f.addresses}))
    if any(f.topics is None for f in filters):  # a role follows every event of its contracts
        return LogFilter(addresses=addresses)
    topics = sorted({topic for f in filters for topic in f.topics or ()})
    return LogFilter(addresses=addresses, topics=tuple(topics))


def role_services(config: NodeConfig) -> list[RoleService]:
    """The role services this node runs, from its config. The seam where roles plug in."""
    return role_services_for(config)


def open_node(home: Path, *, prompt: PasswordPrompt | None = None) -> NodeContext:
    """Load config and key, open store and state, connect to the chain (unless offline)."""
    home = Path(home).resolve()
    config = load_config(home)
    chain_cfg = config.chain
    deployment = None
    if not chain_cfg.offline:
        assert chain_cfg.deployment is not None  # the config validator guarantees it
        deployment = Deployment.load(resolve(home, chain_cfg.deployment))
    chain_id = deployment.chain_id if deployment else chain_cfg.chain_id
    account = load_key(
        resolve(home, config.node.key_file),
        chain_id=chain_id,
        password_env=config.node.password_env,
        prompt=prompt,
    )
    chain = None
    if deployment is not None:
        rpc_url = chain_cfg.rpc_url or deployment.rpc_url
        client = ChainClient(rpc_url, "0x" + bytes(account.key).hex())
        if client.chain_id != deployment.chain_id:
            raise NodeError(
                f"The RPC endpoint {client.rpc_url} serves chain {client.chain_id}, but the "
                f"deployment file names chain {deployment.chain_id}; fix [chain] in node.toml."
            )
        require_code(client, deployment)
        ws_url = chain_cfg.ws_url if chain_cfg.ws_url is not None else websocket_url(rpc_url)
        chain = NodeChain(
            client,
            deployment,
            Registry(client, deployment.registry),
            Jobs(client, deployment.jobs),
            HeadWatcher(ws_url or None),
        )
    registry_address = deployment.registry.address if deployment else chain_cfg.registry
    return NodeContext(
        home=home,
        config=config,
        account=account,
        store=open_store(home, config),
        state=open_state(home, config),
        metrics=NodeMetrics(),
        domain=MessageDomain(chain_id=chain_id, registry=registry_address),
        router=MessageRouter(),
        chain=chain,
    )


def check_dataset(config: NodeConfig) -> None:
    """A trainer reads its declared data once before it registers: a missing file, an
    unreadable row or an empty folder stops the node with one line naming it (DataError)."""
    if "trainer" not in config.node.roles:
        return
    from allmende.learn.sources import summarize

    summary = summarize(config.trainer.dataset)
    if summary.kind != "partition":
        log.info(
            "Local data: %s %s, %d examples, %d bytes.",
            summary.kind, summary.location, summary.examples, summary.nbytes,
        )  # fmt: skip


def register_node(ctx: NodeContext) -> None:
    """Register or update this node's endpoint and roles, then top up its stake (blocking)."""
    if ctx.chain is None:
        return
    registry = ctx.chain.registry
    node_cfg = ctx.config.node
    problem = ctx.config.net.endpoint_policy.url_problem(node_cfg.endpoint)
    if problem is not None:
        raise ConfigError(
            f"This node's endpoint {node_cfg.endpoint!r} would be refused by peers like it: "
            f"{problem}. Set [node] public_url to an address peers can reach, or list its range "
            "in [net] allow_endpoint_ranges of every node of this network."
        )
    if ctx.chain.client.balance(ctx.address) == 0:
        raise NodeError(
            f"The node account {ctx.address} holds no ether to pay for gas; send it some "
            "(on a devnet, from one of the funded dev accounts) and start again."
        )
    record = registry.node(ctx.address)
    if (
        not record.registered
        or record.endpoint != node_cfg.endpoint
        or record.roles != node_cfg.role_bits
    ):
        registry.register(node_cfg.endpoint, node_cfg.role_bits)
        log.info("Registered %s at %s (roles %s).", ctx.address, node_cfg.endpoint, node_cfg.roles)
    missing = ctx.config.stake.amount_wei - record.stake
    if missing > 0:
        registry.stake(missing)
        log.info("Staked %d wei (total %d).", missing, ctx.config.stake.amount_wei)


def _signer_check(ctx: NodeContext) -> SignerCheck:
    if ctx.chain is None:
        return StaticSigners(ctx.config.chain.trusted_signers)
    registry = ctx.chain.registry
    return RegistrySigners(
        lambda address: registry.node(address).registered,
        cache_seconds=ctx.config.chain.signer_cache_seconds,
    )


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise NodeError(
            f"Cannot listen on {host}:{port}: {exc.strerror}; pick another [node] port."
        ) from None
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling (the node installs its own)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(ctx: NodeContext, services: Sequence[RoleService]) -> None:
    """Serve the API and run ``services`` until SIGINT/SIGTERM or ``ctx.stopping``."""
    loop = asyncio.get_running_loop()
    net = ctx.config.net
    ctx.peers = PeerClient(
        ctx.store,
        state=ctx.state,
        metrics=ctx.metrics,
        account=ctx.account,
        domain=ctx.domain,
        timeout=httpx.Timeout(net.fetch_timeout_seconds, connect=CONNECT_TIMEOUT_SECONDS),
        pace=FetchPace(
            deadline_seconds=net.fetch_deadline_seconds,
            min_bytes_per_second=net.fetch_min_bytes_per_second,
            window_seconds=net.fetch_rate_window_seconds,
        ),
        policy=net.endpoint_policy,
    )
    app = create_app(
        identity=NodeIdentity(
            address=ctx.address, roles=list(ctx.config.node.roles), domain=ctx.domain
        ),
        store=ctx.store,
        state=ctx.state,
        signers=_signer_check(ctx),
        router=ctx.router,
        metrics=ctx.metrics,
        settings=ApiSettings(
            max_message_bytes=net.max_message_bytes,
            max_message_ttl_seconds=net.max_message_ttl_seconds,
        ),
        ready=lambda: all(getattr(service, "ready", True) for service in services),
    )
    sock = _bind(ctx.config.node.host, ctx.config.node.port)
    server = _Server(
        uvicorn.Config(
            direct_blob_gets(app, store=ctx.store, metrics=ctx.metrics),
            log_config=None,
            access_log=False,
            lifespan="off",
            limit_concurrency=net.max_connections,
            http=fair_protocol(
                PeerLimits(
                    max_connections_per_peer=net.max_connections_per_peer,
                    max_requests_per_peer=net.max_requests_per_peer,
                    send_timeout_seconds=net.send_timeout_seconds,
                ),
                metrics=ctx.metrics,
            ),
        )
    )

    control = _control_server(ctx)

    def stop() -> None:
        ctx.stopping.set()
        server.should_exit = True
        if control is not None:
            control[0].should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    tasks = [_start(service, ctx) for service in services]
    tasks.append(asyncio.create_task(_sweep_nonces(ctx), name="nonce-sweep"))
    if ctx.chain is not None:
        ctx.chain.heads.watch_logs(wake_filter(ctx.chain.deployment, services))
        tasks.append(asyncio.create_task(ctx.chain.heads.run(ctx.stopping), name="new-blocks"))
    if control is not None:
        control_server, control_sock = control
        tasks.append(asyncio.create_task(control_server.serve(sockets=[control_sock])))
    watcher = asyncio.create_task(_stop_when(ctx.stopping, stop))
    log.info("Node %s serving on %s.", ctx.address, ctx.config.node.endpoint)
    try:
        await server.serve(sockets=[sock])
    finally:
        stop()
        await _finish(tasks)
        if control is not None:
            control[1].close()
            (ctx.home / CONTROL_SOCKET).unlink(missing_ok=True)
        watcher.cancel()
        await ctx.peers.aclose()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        sock.close()
    log.info("Node %s stopped.", ctx.address)


def _control_server(ctx: NodeContext) -> tuple[_Server, socket.socket] | None:
    """The server of the node's control socket (:mod:`allmende.node.control`), or None for an
    offline node or when the socket cannot be made (the commands then work without it)."""
    if ctx.chain is None:
        return None
    try:
        sock = bind_control_socket(ctx.home)
    except NodeError as exc:
        log.warning("%s Commands such as `job submit` will do their work themselves.", exc)
        return None
    config = uvicorn.Config(control_app(ctx), log_config=None, access_log=False, lifespan="off")
    return _Server(config), sock


def _start(service: RoleService, ctx: NodeContext) -> asyncio.Task[None]:
    task = asyncio.create_task(service.run(ctx), name=service.name)

    def report(done: asyncio.Task[None]) -> None:
        if not done.cancelled() and done.exception() is not None:
            ctx.metrics.internal_errors.inc()
            log.error("Role %s failed.", service.name, exc_info=done.exception())

    task.add_done_callback(report)
    return task


async def _finish(tasks: list[asyncio.Task[None]]) -> None:
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=ROLE_STOP_SECONDS)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


async def _stop_when(event: asyncio.Event, stop: Callable[[], None]) -> None:
    await event.wait()
    stop()


async def _sweep_nonces(ctx: NodeContext) -> None:
    while not ctx.stopping.is_set():
        await asyncio.to_thread(ctx.state.forget_expired_nonces, time.time())  # a disk write
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ctx.stopping.wait(), NONCE_SWEEP_SECONDS)


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop when it is installed (less overhead a callback and a socket read
    than asyncio's own loop, which a node on a busy machine feels every round), else asyncio."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def run_node(
    home: Path,
    *,
    prompt: PasswordPrompt | None = None,
    services: Sequence[RoleService] | None = None,
) -> None:
    """The whole ``node run``: lock, open, register, serve until a signal, close."""
    home = Path(home)
    if not home.is_dir():
        raise NodeError(f"No node home at {home}; create one with `allmende node init {home}`.")
    with home_lock(home):
        ctx = open_node(home, prompt=prompt)
        try:
            check_dataset(ctx.config)
            register_node(ctx)
            chosen = role_services(ctx.config) if services is None else services
            run_loop(serve(ctx, chosen))
        except AllmendeError:
            raise
        except Exception as exc:
            log.exception("The node failed.")
            raise NodeError(f"The node stopped after an unexpected error: {exc!r}.") from exc
        finally:
            ctx.state.close()
