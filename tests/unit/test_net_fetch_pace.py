"""Downloads held to a pace: a trickling or endless peer is dropped in time and the next holder
used; the slow one is recorded and tried last; an honest steady download is left alone.

The peers are real asyncio servers on loopback speaking HTTP/1.1 to the real peer client.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from allmende.errors import PeerError
from allmende.net.client import FetchPace, PeerClient
from allmende.net.endpoints import LOOPBACK_RANGES, EndpointPolicy
from allmende.net.metrics import NodeMetrics
from allmende.store.blobs import BlobStore
from allmende.store.state import StateDB

DATA = bytes(range(256)) * 64  # 16 KiB
DIGEST = hashlib.sha256(DATA).hexdigest()
TRICKLE_SECONDS = 0.5  # the slow peer sends one byte this often: never a read timeout
# Small on purpose, so the tests take a couple of seconds.
PACE = FetchPace(deadline_seconds=3.0, min_bytes_per_second=2000, window_seconds=1.0)
# How late past its bound a give-up may come on a busy machine (timers fire late, never early).
SLACK_SECONDS = 10.0  # the trickle would take over two hours: any give-up this soon is the pace

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def headers(size: int = len(DATA)) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size


async def fast(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(headers() + DATA)
        await writer.drain()


async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(headers())
    for byte in DATA:
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(TRICKLE_SECONDS)


async def steady(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Honest but not instant: 1 KiB every 0.1 s (10 KiB/s), 1.6 s for the blob."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(headers())
    for start in range(0, len(DATA), 1024):
        writer.write(DATA[start : start + 1024])
        await writer.drain()
        await asyncio.sleep(0.1)


@asynccontextmanager
async def peer(handler: Handler) -> AsyncIterator[tuple[str, list[int]]]:
    """A server answering with ``handler``: its URL and a list that grows by one a connection."""
    connections: list[int] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}", connections
        server.close()


def client(tmp_path: Path, pace: FetchPace = PACE) -> tuple[PeerClient, StateDB, NodeMetrics]:
    state = StateDB.open(tmp_path / "state.sqlite")
    metrics = NodeMetrics()
    store = BlobStore(tmp_path / "blobs")
    policy = EndpointPolicy.allowing(LOOPBACK_RANGES)  # the test's peers listen on loopback
    client = PeerClient(store, state=state, metrics=metrics, pace=pace, policy=policy)
    return client, state, metrics


def test_a_trickling_holder_is_dropped_within_the_window_and_the_next_one_used(
    tmp_path: Path,
) -> None:
    async def run() -> None:
        peers, state, metrics = client(tmp_path)
        async with peer(trickle) as (slow_url, _), peer(fast) as (fast_url, _):
            started = time.monotonic()
            result = await peers.fetch_blob(DIGEST, [slow_url, fast_url])
            elapsed = time.monotonic() - started
        await peers.aclose()
        assert (result.peer, result.size) == (fast_url, len(DATA))
        assert peers.store.read_bytes(DIGEST) == DATA
        assert PACE.window_seconds <= elapsed < PACE.window_seconds + SLACK_SECONDS
        faults = state.peer_faults(slow_url)
        assert [f.kind for f in faults] == ["slow"]
        assert "below the minimum of 2000 bytes/s" in faults[0].detail
        assert state.peer_faults(fast_url) == []
        assert 'allmende_peer_faults_total{kind="slow"} 1.0' in metrics.render().decode()

    asyncio.run(run())


def test_the_slow_holder_is_tried_last_next_time(tmp_path: Path) -> None:
    async def run() -> None:
        peers, _, _ = client(tmp_path)
        async with peer(trickle) as (slow_url, slow_seen), peer(fast) as (fast_url, fast_seen):
            await peers.fetch_blob(DIGEST, [slow_url, fast_url])
            assert (len(slow_seen), len(fast_seen)) == (1, 1)
            peers.store.delete(DIGEST)
            started = time.monotonic()
            result = await peers.fetch_blob(DIGEST, [slow_url, fast_url])
            assert time.monotonic() - started < PACE.window_seconds  # no wait on the slow one
            assert result.peer == fast_url
            assert len(slow_seen) == 1  # not asked again
            assert peers.by_reliability([slow_url, fast_url]) == [fast_url, slow_url]
        await peers.aclose()

    asyncio.run(run())


def test_a_holder_that_never_finishes_is_cut_off_at_the_deadline(tmp_path: Path) -> None:
    no_rate = FetchPace(deadline_seconds=1.5, min_bytes_per_second=0, window_seconds=1.0)

    async def run() -> None:
        peers, state, _ = client(tmp_path, no_rate)
        async with peer(trickle) as (slow_url, _):
            started = time.monotonic()
            with pytest.raises(PeerError, match=r"did not finish in 1\.5 s"):
                await peers.fetch_blob(DIGEST, [slow_url])
            elapsed = time.monotonic() - started
        await peers.aclose()
        assert no_rate.deadline_seconds <= elapsed < no_rate.deadline_seconds + SLACK_SECONDS
        assert [f.kind for f in state.peer_faults(slow_url)] == ["timeout"]
        assert not peers.store.has(DIGEST)

    asyncio.run(run())


def test_a_steady_download_longer_than_the_window_is_left_alone(tmp_path: Path) -> None:
    async def run() -> None:
        peers, state, _ = client(tmp_path)
        async with peer(steady) as (steady_url, _):
            started = time.monotonic()
            result = await peers.fetch_blob(DIGEST, [steady_url])
            elapsed = time.monotonic() - started
        await peers.aclose()
        assert result.peer == steady_url
        assert elapsed > PACE.window_seconds  # the rate was judged, and passed
        assert state.peer_faults() == []

    asyncio.run(run())


def test_a_cancelled_fetch_stays_cancelled(tmp_path: Path) -> None:
    """The pace watch cancels its task to cut a download off; a cancel from outside must
    still cancel the fetch, not become a peer fault."""

    async def run() -> None:
        peers, state, _ = client(tmp_path)
        async with peer(trickle) as (slow_url, slow_seen):
            fetch = asyncio.create_task(peers.fetch_blob(DIGEST, [slow_url]))
            while not slow_seen:
                await asyncio.sleep(0.01)
            fetch.cancel()
            with pytest.raises(asyncio.CancelledError):
                await fetch
        await peers.aclose()
        assert state.peer_faults() == []

    asyncio.run(run())
