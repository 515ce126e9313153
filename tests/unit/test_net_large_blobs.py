"""Large blobs, both ways: served with sendfile by a real uvicorn server with the node's protocol,
and fetched by the peer client's raw-body path from hand-written peers that misbehave.

A blob here is a few MiB: larger than one serving piece (so the server sends it with
``sendfile``) and than the client's receive buffer (so the body takes several raw reads).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from allmende.errors import PeerError
from allmende.net.api import direct_blob_gets
from allmende.net.client import PeerClient
from allmende.net.endpoints import LOOPBACK_RANGES, EndpointPolicy
from allmende.net.fairshare import PeerLimits, fair_protocol
from allmende.net.metrics import NodeMetrics
from allmende.net.plainhttp import READ_BYTES
from allmende.store.blobs import BlobStore

SIZE = 3 * READ_BYTES + 12345
WAIT_SECONDS = 10.0
LOOPBACK = EndpointPolicy.allowing(LOOPBACK_RANGES)


def blob() -> tuple[bytes, str]:
    data = os.urandom(SIZE)
    return data, hashlib.sha256(data).hexdigest()


def sample(metrics: NodeMetrics, name: str) -> float:
    for line in metrics.render().decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def left_behind(store: BlobStore) -> list[str]:
    """Temporary files of the store (a failed download must leave none)."""
    return [entry.name for entry in store.tmp_dir.iterdir()]


# -- serving ------------------------------------------------------------------------------------


class _Server(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@asynccontextmanager
async def node(store: BlobStore, limits: PeerLimits) -> AsyncIterator[tuple[str, Any, list[str]]]:
    """The node's blob serving (``direct_blob_gets`` on the fair protocol) over ``store``; its
    URL, protocol class and the paths that reached the inner app (the route)."""
    routed: list[str] = []

    async def route(scope: dict[str, Any], receive: Any, send: Any) -> None:
        routed.append(scope["path"])
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    metrics = NodeMetrics()
    protocol = fair_protocol(limits, metrics=metrics)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        direct_blob_gets(route, store=store, metrics=metrics),
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
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", protocol, routed
    finally:
        running.should_exit = True
        await task


async def fetch(url: str, digest: str, into: Path, *, read_timeout: float = WAIT_SECONDS) -> int:
    async with PeerClient(
        BlobStore(into), timeout=httpx.Timeout(read_timeout, connect=2.0), policy=LOOPBACK
    ) as client:
        return (await client.fetch_blob(digest, [url])).size


def test_a_large_blob_is_sent_whole_from_the_file(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "node")
    data, digest = blob()
    store.put_bytes(data)

    async def run() -> None:
        async with node(store, PeerLimits()) as (url, protocol, routed):
            for _ in range(2):  # the second on the kept-alive connection
                into = tmp_path / f"peer{_}"
                assert await fetch(url, digest, into) == SIZE
                assert BlobStore(into).read_bytes(digest) == data
            assert routed == []  # never through the route: sendfile took both
            await until(lambda: protocol.senders.busy == 0, "the sends did not end")
            assert sample(protocol.metrics, "allmende_blob_bytes_served_total") == 2 * SIZE

    asyncio.run(run())


def test_a_large_blob_corrupted_on_disk_is_quarantined_when_sent(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "node")
    data, digest = blob()
    store.put_bytes(data)
    path = store.path(digest)
    rotten = bytearray(data)
    rotten[SIZE // 2] ^= 1
    path.write_bytes(bytes(rotten))

    async def run() -> None:
        async with node(store, PeerLimits()) as (url, protocol, _):
            with pytest.raises(PeerError, match="served wrong bytes"):
                await fetch(url, digest, tmp_path / "peer")
            assert left_behind(BlobStore(tmp_path / "peer")) == []
            assert not BlobStore(tmp_path / "peer").has(digest)
            # the node hashes what it sends and may finish after the peer has every byte
            await until(lambda: not store.has(digest), "the rotted blob was not quarantined")
            assert sample(protocol.metrics, "allmende_corrupt_blobs_total") == 1
            assert [entry.name.split(".")[0] for entry in store.quarantine_dir.iterdir()] == [
                digest
            ]

    asyncio.run(run())


async def stalled_request(url: str, digest: str) -> socket.socket:
    """A connection that asks for ``digest`` with a tiny receive buffer and never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    port = int(url.rsplit(":", 1)[1])
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, f"GET /v1/blobs/{digest} HTTP/1.1\r\nHost: n\r\n\r\n".encode())
    return sock


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


def test_a_reader_that_stalls_a_sendfile_is_dropped_and_others_are_served(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "node")
    data, digest = blob()
    store.put_bytes(data)
    limits = PeerLimits(send_timeout_seconds=0.5)

    async def run() -> None:
        async with node(store, limits) as (url, protocol, _):
            stalled = await stalled_request(url, digest)
            await until(lambda: protocol.senders.busy == 1, "the send never started")
            started = time.monotonic()
            # another peer is served meanwhile
            assert await fetch(url, digest, tmp_path / "other") == SIZE
            await until(lambda: protocol.senders.busy == 0, "the stalled send was kept")
            assert time.monotonic() - started >= limits.send_timeout_seconds * 0.9
            metrics = protocol.metrics
            assert sample(metrics, "allmende_stalled_sends_dropped_total") == 1
            stalled.close()

    asyncio.run(run())


def test_a_peer_that_hangs_up_mid_send_frees_its_thread(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "node")
    data, digest = blob()
    store.put_bytes(data)

    async def run() -> None:
        async with node(store, PeerLimits()) as (url, protocol, _):
            stalled = await stalled_request(url, digest)
            await until(lambda: protocol.senders.busy == 1, "the send never started")
            stalled.close()
            await until(lambda: protocol.senders.busy == 0, "the send outlived its peer")
            assert sample(protocol.metrics, "allmende_stalled_sends_dropped_total") == 0

    asyncio.run(run())


def test_with_every_send_thread_taken_the_route_streams_the_blob(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "node")
    data, digest = blob()
    store.put_bytes(data)

    async def run() -> None:
        async with node(store, PeerLimits()) as (url, protocol, routed):
            protocol.senders.threads = 0
            async with httpx.AsyncClient() as client:
                response = await client.get(f"{url}/v1/blobs/{digest}")
            assert (response.status_code, routed) == (299, [f"/v1/blobs/{digest}"])

    asyncio.run(run())


# -- fetching -----------------------------------------------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def peer(handler: Handler) -> AsyncIterator[tuple[str, list[int]]]:
    """A hand-written peer answering every connection with ``handler``; its URL and a list
    that grows by one a connection."""
    connections: list[int] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", connections


def head(length: int) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % length


def fetch_fails(tmp_path: Path, handler: Handler, digest: str, match: str, **kw: Any) -> None:
    """A fetch of ``digest`` from a peer answering with ``handler`` fails with ``match``,
    and leaves neither the blob nor a temporary file behind."""
    store = BlobStore(tmp_path / "peer")

    async def run() -> None:
        async with peer(handler) as (url, _):
            with pytest.raises(PeerError, match=match):
                await fetch(url, digest, store.root, **kw)

    asyncio.run(run())
    assert not store.has(digest)
    assert left_behind(store) == []


def test_a_body_that_goes_wrong_mid_stream_is_refused(tmp_path: Path) -> None:
    data, digest = blob()
    forged = bytearray(data)
    forged[2 * READ_BYTES + 7] ^= 0xFF  # well inside the raw reads

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(head(SIZE) + bytes(forged))
        await writer.drain()

    fetch_fails(tmp_path, handler, digest, "served wrong bytes")


def test_a_truncated_body_is_refused(tmp_path: Path) -> None:
    data, digest = blob()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(head(SIZE) + data[: SIZE // 2])
        await writer.drain()
        writer.close()

    fetch_fails(tmp_path, handler, digest, "closed the connection mid-answer")


def test_a_stall_mid_body_is_cut_off_by_the_read_timeout(tmp_path: Path) -> None:
    data, digest = blob()
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(head(SIZE) + data[: SIZE // 2])
        await writer.drain()
        await release.wait()  # never set: the peer just stops sending

    fetch_fails(tmp_path, handler, digest, "sent nothing for 0.3 s", read_timeout=0.3)


def test_an_announced_size_over_the_limit_is_refused_before_the_body(tmp_path: Path) -> None:
    data, digest = blob()
    store = BlobStore(tmp_path / "peer", max_blob_bytes=SIZE - 1)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(head(SIZE) + data)
        await writer.drain()

    async def run() -> None:
        async with peer(handler) as (url, _), PeerClient(store, policy=LOOPBACK) as client:
            with pytest.raises(PeerError, match=f"announced {SIZE} bytes"):
                await client.fetch_blob(digest, [url])

    asyncio.run(run())
    assert left_behind(store) == []


def test_an_unannounced_body_over_the_limit_is_cut_off(tmp_path: Path) -> None:
    data, digest = blob()
    store = BlobStore(tmp_path / "peer", max_blob_bytes=SIZE - 1)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n" + data)  # until close
        await writer.drain()
        writer.close()

    async def run() -> None:
        async with peer(handler) as (url, _), PeerClient(store, policy=LOOPBACK) as client:
            with pytest.raises(PeerError, match="sent too much"):
                await client.fetch_blob(digest, [url])

    asyncio.run(run())
    assert left_behind(store) == []


def test_bytes_past_the_announced_body_are_not_read_as_the_next_answer(tmp_path: Path) -> None:
    data, digest = blob()
    other, other_digest = blob()
    bodies = {digest: data, other_digest: other}

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # every answer is followed by junk that looks like the start of another answer
        body = bodies.pop(next(iter(bodies)))
        writer.write(head(len(body)) + body + b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nbad")
        await writer.drain()

    store = BlobStore(tmp_path / "peer")

    async def run() -> None:
        async with (
            peer(handler) as (url, connections),
            PeerClient(store, policy=LOOPBACK) as client,
        ):
            assert (await client.fetch_blob(digest, [url])).size == SIZE
            assert (await client.fetch_blob(other_digest, [url])).size == SIZE
            assert len(connections) == 2  # the first connection was not reused

    asyncio.run(run())
    assert store.read_bytes(digest) == data and store.read_bytes(other_digest) == other


def test_a_blob_the_node_hashed_lately_is_sent_unhashed_until_its_recheck(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "node")
    data, digest = blob()
    store.put_bytes(data)  # hashed as it was written
    path = store.path(digest)
    stat = path.stat()
    with open(path, "r+b") as f:  # rot that leaves the file's inode, size and time alone
        f.seek(SIZE // 3)
        f.write(bytes([data[SIZE // 3] ^ 1]))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    async def run() -> None:
        async with node(store, PeerLimits()) as (url, protocol, _):
            # the receiver's own check refuses the bytes; the node did not hash them again
            with pytest.raises(PeerError, match="served wrong bytes"):
                await fetch(url, digest, tmp_path / "peer")
            await until(lambda: protocol.senders.busy == 0, "the send did not end")
            assert store.has(digest)
            assert sample(protocol.metrics, "allmende_corrupt_blobs_total") == 0
            store.recheck_seconds = 0.0  # past the recheck: hashed while sent, and quarantined
            with pytest.raises(PeerError, match="served wrong bytes"):
                await fetch(url, digest, tmp_path / "peer")
            await until(lambda: not store.has(digest), "the rotted blob was not quarantined")
            assert sample(protocol.metrics, "allmende_corrupt_blobs_total") == 1

    asyncio.run(run())
