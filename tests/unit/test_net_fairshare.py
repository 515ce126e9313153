"""Per-peer limits and the send timeout of the API server, on a real uvicorn server in process.

Two peers are two loopback source addresses (Linux routes all of 127/8 to ``lo``): the greedy
one connects from 127.0.0.2, the other from 127.0.0.3.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
import uvicorn

from allmende.net.fairshare import (
    EXCESS_CONNECTION_GRACE_SECONDS,
    PeerLimits,
    PeerTable,
    fair_protocol,
    peer_of,
)
from allmende.net.metrics import NodeMetrics

GREEDY, OTHER = "127.0.0.2", "127.0.0.3"
BIG_BYTES = 4 * 1024 * 1024  # far more than the socket buffers of a peer that reads nothing
SMALL_BYTES = 1024 * 1024
PIECE = 64 * 1024
WAIT_SECONDS = 10.0
TABLES: dict[int, PeerTable] = {}
METRICS: dict[int, NodeMetrics] = {}
LIMITS = PeerLimits(max_connections_per_peer=3, max_requests_per_peer=2, send_timeout_seconds=60)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``/big`` and ``/small``: that many bytes, streamed in pieces."""
    size = BIG_BYTES if scope["path"] == "/big" else SMALL_BYTES
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(size).encode())],
        }
    )
    for start in range(0, size, PIECE):
        more = start + PIECE < size
        await send({"type": "http.response.body", "body": b"x" * PIECE, "more_body": more})


def sample(port: int, name: str) -> float:
    """One sample of the server's metrics (0 when it has none yet)."""
    for line in METRICS[port].render().decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


class _Server(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@asynccontextmanager
async def server(limits: PeerLimits) -> AsyncIterator[int]:
    """A uvicorn server with the fair protocol on 127.0.0.1; its port. Its peer table is
    ``TABLES[port]``, its metrics ``METRICS[port]``."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    metrics = NodeMetrics()
    protocol = fair_protocol(limits, metrics=metrics)
    TABLES[sock.getsockname()[1]] = protocol.table  # type: ignore[attr-defined]
    METRICS[sock.getsockname()[1]] = metrics
    config = uvicorn.Config(
        app,
        http=protocol,
        log_config=None,
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    running = _Server(config)
    task = asyncio.create_task(running.serve(sockets=[sock]))
    while not running.started:
        await asyncio.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        running.should_exit = True
        await task


class Connection:
    """A raw HTTP/1.1 connection from a chosen source address with a tiny receive buffer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, source: str) -> Connection:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.bind((source, 0))
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=PIECE)
        return cls(reader, writer)

    async def ask(self, path: str) -> tuple[int, dict[str, str]]:
        """Send ``GET path``; the status and headers (the body is left unread)."""
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: node\r\n\r\n".encode())
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), WAIT_SECONDS)
        lines = head.decode().split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:] if line)
        return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}

    async def body(self, headers: dict[str, str]) -> bytes:
        return await asyncio.wait_for(
            self.reader.readexactly(int(headers["content-length"])), WAIT_SECONDS
        )

    async def ended(self) -> bool:
        """Whether the server closed or reset the connection (reading what is left)."""
        try:
            while await asyncio.wait_for(self.reader.read(PIECE), WAIT_SECONDS):
                pass
        except ConnectionResetError:
            pass
        return True

    def close(self) -> None:
        self.writer.close()


def test_a_peer_past_its_request_limit_gets_503_while_another_peer_is_served() -> None:
    async def run() -> None:
        async with server(LIMITS) as port:
            held = [
                await Connection.open(port, GREEDY) for _ in range(LIMITS.max_requests_per_peer)
            ]
            for connection in held:  # stalled downloads: the peer never reads them
                assert (await connection.ask("/big"))[0] == 200
            refused = await Connection.open(port, GREEDY)
            status, headers = await refused.ask("/small")
            assert (status, headers["retry-after"], headers["connection"]) == (503, "1", "close")
            detail = json.loads(await refused.body(headers))["detail"]
            assert "already has 2 requests in flight" in detail
            assert sample(port, 'allmende_peer_limit_refusals_total{limit="requests"}') == 1
            assert await refused.ended()

            other = await Connection.open(port, OTHER)
            for _ in range(3):  # served, and on one kept-alive connection
                status, headers = await other.ask("/small")
                assert status == 200
                assert len(await other.body(headers)) == SMALL_BYTES

            held.pop().close()  # one slot of the greedy peer frees up
            retry = await Connection.open(port, GREEDY)
            deadline = time.monotonic() + WAIT_SECONDS
            while (status := (await retry.ask("/small"))[0]) != 200:
                assert time.monotonic() < deadline, "the closed download never freed its slot"
                retry.close()
                retry = await Connection.open(port, GREEDY)
            for connection in [*held, refused, other, retry]:
                connection.close()

    asyncio.run(run())


def test_a_peer_past_its_connection_limit_gets_503_while_another_peer_is_served() -> None:
    async def run() -> None:
        async with server(LIMITS) as port:
            idle = [
                await Connection.open(port, GREEDY) for _ in range(LIMITS.max_connections_per_peer)
            ]
            extra = await Connection.open(port, GREEDY)
            status, headers = await extra.ask("/small")
            assert status == 503
            assert "already holds 3 connections" in json.loads(await extra.body(headers))["detail"]
            assert sample(port, 'allmende_peer_limit_refusals_total{limit="connections"}') == 1

            other = await Connection.open(port, OTHER)
            status, headers = await other.ask("/small")
            assert (status, len(await other.body(headers))) == (200, SMALL_BYTES)

            status, headers = await idle[0].ask("/small")  # its own connections still work
            assert (status, len(await idle[0].body(headers))) == (200, SMALL_BYTES)
            for connection in [*idle, extra, other]:
                connection.close()

    asyncio.run(run())


def test_a_silent_connection_past_the_limit_is_closed_after_the_grace() -> None:
    async def run() -> None:
        async with server(LIMITS) as port:
            idle = [
                await Connection.open(port, GREEDY) for _ in range(LIMITS.max_connections_per_peer)
            ]
            started = time.monotonic()
            silent = await Connection.open(port, GREEDY)
            assert await silent.ended()
            assert time.monotonic() - started >= EXCESS_CONNECTION_GRACE_SECONDS * 0.9
            for connection in [*idle, silent]:
                connection.close()

    asyncio.run(run())


def test_a_reader_that_stops_reading_is_dropped_after_the_send_timeout() -> None:
    limits = PeerLimits(
        max_connections_per_peer=4, max_requests_per_peer=1, send_timeout_seconds=0.5
    )

    async def run() -> None:
        async with server(limits) as port:
            stalled = await Connection.open(port, GREEDY)
            started = time.monotonic()
            assert (await stalled.ask("/big"))[0] == 200
            table = TABLES[port]
            # the node drops it (the peer reads nothing); the request's slot is given back once
            # the app notices the connection is gone, a moment after the connection's
            while table.connections[GREEDY] or table.requests[GREEDY]:
                assert time.monotonic() - started < WAIT_SECONDS, "the stalled send was kept"
                await asyncio.sleep(0.05)
            assert time.monotonic() - started >= limits.send_timeout_seconds
            assert sample(port, "allmende_stalled_sends_dropped_total") == 1
            assert await stalled.ended()
            # its request slot is free again (the limit is one)
            again = await Connection.open(port, GREEDY)
            status, headers = await again.ask("/small")
            assert (status, len(await again.body(headers))) == (200, SMALL_BYTES)
            for connection in (stalled, again):
                connection.close()

    asyncio.run(run())


def test_a_slow_reader_that_keeps_reading_is_not_dropped() -> None:
    limits = PeerLimits(
        max_connections_per_peer=4, max_requests_per_peer=4, send_timeout_seconds=0.5
    )

    async def run() -> None:
        async with server(limits) as port:
            slow = await Connection.open(port, GREEDY)
            status, _ = await slow.ask("/small")
            assert status == 200
            received = 0
            while received < SMALL_BYTES:  # ~1.6 s in all, never a pause of 0.5 s
                received += len(await asyncio.wait_for(slow.reader.read(PIECE), WAIT_SECONDS))
                await asyncio.sleep(0.1)
            assert received == SMALL_BYTES
            assert sample(port, "allmende_stalled_sends_dropped_total") == 0
            slow.close()

    asyncio.run(run())


@pytest.mark.parametrize(
    ("host", "peer"),
    [
        ("127.0.0.2", "127.0.0.2"),
        ("2001:db8::1", "2001:db8::/64"),
        ("2001:db8::ffff:1", "2001:db8::/64"),
        ("::ffff:10.0.0.1", "10.0.0.1"),
        ("not-an-ip", "not-an-ip"),
    ],
)
def test_peers_are_ipv4_addresses_and_ipv6_prefixes(host: str, peer: str) -> None:
    assert peer_of(host) == peer
