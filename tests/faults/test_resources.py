"""Resource bounds of a real node process: greedy peers holding blob requests open.

Greedy peers open connections, ask each for a large blob and never read the answer (their
receive buffers are tiny), so every response stalls on a full socket. Peers are told apart by
their loopback source address (Linux routes all of 127/8 to ``lo``): the greedy ones connect
from 127.0.0.2 and up, the other peer from 127.0.0.1.

- Memory: eight greedy peers hold ``HELD_REQUESTS`` requests. Another peer must still be served
  (health, info, metrics, a small blob and the whole large blob, hash-checked), and the node's
  resident memory may grow only by a bounded amount per held request: a node that buffered a
  blob, or even a 1 MiB piece of it, per request would need gigabytes. RSS is read from
  ``/proc/<pid>/status`` before, while holding, and after closing. When the greedy peers hang
  up, the node must stop reading those blobs: the bytes it sends afterwards are read off its
  metrics.
- The global limit (``[net] max_connections``): past it, everyone gets 503.
- Fair sharing: one greedy peer gets its ``max_requests_per_peer`` and no more, and a peer
  hoarding idle connections its ``max_connections_per_peer``, while another peer downloads.
- The send timeout: downloads nobody reads are dropped, and their slots come back.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fault_nodes import NodeProcess

from allmende.net.api import SERVE_CHUNK_BYTES
from allmende.net.client import PeerClient
from allmende.net.endpoints import LOOPBACK_RANGES, EndpointPolicy
from allmende.node.config import parse_config, write_config
from allmende.store.blobs import BlobStore

HELD_REQUESTS = 1000
BIG_BLOB_BYTES = 16 * 1024 * 1024
# Growth of the node's RSS allowed per held request. Streaming in small pieces costs about
# 120 KiB per stalled response (socket and transport buffers); a whole 1 MiB chunk per response
# would not fit.
MAX_RSS_PER_HELD_REQUEST = 384 * 1024
SETTLE_SECONDS = 3.0
WAIT_SECONDS = 300.0
# RSS counts as steady when it grew less than this over STEADY_SAMPLES one-second samples.
STEADY_GROWTH_BYTES = 2 * 1024 * 1024
STEADY_SAMPLES = 4
SMALL_LIMIT = 32
SENT_BYTES = "allmende_blob_bytes_served_total"
# Pieces a response may still send once its peer hung up, before it stops reading the blob.
MAX_PIECES_AFTER_HANG_UP = 2


# The memory test's held requests come from this many greedy peers (each under its limits).
GREEDY_PEERS = [f"127.0.0.{i}" for i in range(2, 10)]
OTHER_GREEDY = "127.0.0.20"  # a peer hoarding idle connections
# The fair-sharing test: the global limit, which one greedy peer alone would exhaust, and the
# per-peer limits under it.
FAIR_GLOBAL_LIMIT = 64
FAIR_REQUESTS_PER_PEER = 8
FAIR_CONNECTIONS_PER_PEER = 16
GREEDY_ATTEMPTS = FAIR_GLOBAL_LIMIT + 16
# Long enough that no held download is dropped while a test measures; short for the test of it.
NO_SEND_TIMEOUT = 3600.0
SHORT_SEND_TIMEOUT = 2.0
OK, UNAVAILABLE = "HTTP/1.1 200", "HTTP/1.1 503"

# The test holds HELD_REQUESTS sockets and the node as many connections (plus its own files).
OPEN_FILES_NEEDED = HELD_REQUESTS + 512


@pytest.fixture(autouse=True)
def enough_open_files() -> Iterator[None]:
    """Raise this process's open-file limit (which the node processes it starts inherit) to
    what the held requests need, or skip when the hard limit does not allow it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < OPEN_FILES_NEEDED:
        pytest.skip(f"the open-file hard limit {hard} is below the {OPEN_FILES_NEEDED} needed")
    if soft != resource.RLIM_INFINITY and soft < OPEN_FILES_NEEDED:
        resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES_NEEDED, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def read_exactly(sock: socket.socket, size: int) -> bytes:
    """``size`` bytes from ``sock``, or fewer if it closes first (one ``recv`` may return less)."""
    data = b""
    while len(data) < size:
        piece = sock.recv(size - len(data))
        if not piece:
            break
        data += piece
    return data


def metric(node: NodeProcess, sample: str) -> float:
    """One sample of the node's Prometheus metrics, 0 when it has none yet."""
    text = httpx.get(f"{node.url}/metrics", timeout=60).text
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


def served_count(node: NodeProcess) -> float:
    """The node's count of blob requests it started serving (``allmende_blob_requests``)."""
    return metric(node, 'allmende_blob_requests_total{outcome="served"}')


def steady_rss(node: NodeProcess) -> int:
    """The node's RSS once it stopped growing (the held responses filled their buffers)."""
    samples = [node.rss_bytes()]
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        time.sleep(1.0)
        samples.append(node.rss_bytes())
        recent = samples[-STEADY_SAMPLES:]
        if len(recent) == STEADY_SAMPLES and recent[-1] - recent[0] < STEADY_GROWTH_BYTES:
            return max(samples)
    return max(samples)


def open_connection(node: NodeProcess, source: str) -> socket.socket:
    """A connection to the node from address ``source``, with a tiny receive buffer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", node.port))
    return sock


def open_request(node: NodeProcess, digest: str, source: str = "127.0.0.1") -> socket.socket:
    """A connection from ``source`` that requested blob ``digest``."""
    sock = open_connection(node, source)
    sock.sendall(f"GET /v1/blobs/{digest} HTTP/1.1\r\nHost: greedy\r\n\r\n".encode())
    return sock


def status_of(sock: socket.socket) -> str:
    """The start of the answer's status line (``HTTP/1.1 200``)."""
    sock.settimeout(WAIT_SECONDS)
    return read_exactly(sock, 12).decode(errors="replace")


def ended(sock: socket.socket) -> bool:
    """Whether the node closed or reset the connection (reading whatever it still holds)."""
    sock.settimeout(WAIT_SECONDS)
    try:
        while sock.recv(1 << 16):
            pass
    except ConnectionResetError:
        pass
    return True


@contextlib.contextmanager
def held_requests(
    node: NodeProcess, digest: str, count: int, sources: list[str] | None = None
) -> Iterator[list[socket.socket]]:
    """``count`` connections that each request blob ``digest`` and never read the response,
    spread over the addresses ``sources`` (127.0.0.1 if none)."""
    sources = sources or ["127.0.0.1"]
    held: list[socket.socket] = []
    try:
        for i in range(count):
            held.append(open_request(node, digest, sources[i % len(sources)]))
        yield held
    finally:
        for sock in held:
            sock.close()


def configure(node: NodeProcess, **net: object) -> None:
    """Set ``[net]`` keys in the node's ``node.toml`` (before it starts)."""
    raw = tomllib.loads((node.home / "node.toml").read_text())
    raw["net"].update(net)
    write_config(node.home, parse_config(raw))


async def fetch_as_other_peer(node: NodeProcess, digest: str, into: Path) -> int:
    """Fetch a blob from the node with the real peer client (hash-checked); its size."""
    async with PeerClient(
        BlobStore(into),
        timeout=httpx.Timeout(WAIT_SECONDS),
        policy=EndpointPolicy.allowing(LOOPBACK_RANGES),
    ) as client:
        result = await client.fetch_blob(digest, [node.url])
    return result.size


@pytest.mark.timeout(900)
def test_held_blob_requests_neither_starve_others_nor_grow_memory(nodes, tmp_path: Path) -> None:
    import asyncio

    node: NodeProcess = nodes("node", offline=True)
    configure(node, send_timeout_seconds=NO_SEND_TIMEOUT)
    big, small = tmp_path / "big.bin", tmp_path / "small.bin"
    big.write_bytes(os.urandom(BIG_BLOB_BYTES))
    small.write_bytes(b"a small blob another peer wants")
    big_digest, small_digest = node.put(big), node.put(small)
    node.start()
    httpx.get(f"{node.url}/v1/blobs/{small_digest}", timeout=60).raise_for_status()  # warm up
    rss_before = node.rss_bytes()

    with held_requests(node, big_digest, HELD_REQUESTS, GREEDY_PEERS):
        deadline = time.monotonic() + WAIT_SECONDS
        while served_count(node) < HELD_REQUESTS + 1 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert served_count(node) >= HELD_REQUESTS + 1, "the node never took all held requests"
        rss_held = steady_rss(node)

        for path in ("/healthz", "/v1/info"):
            assert httpx.get(f"{node.url}{path}", timeout=WAIT_SECONDS).status_code == 200
        got_small = asyncio.run(fetch_as_other_peer(node, small_digest, tmp_path / "other"))
        got_big = asyncio.run(fetch_as_other_peer(node, big_digest, tmp_path / "other"))
        assert (got_small, got_big) == (small.stat().st_size, BIG_BLOB_BYTES)
        assert node.alive()
        sent_while_held = metric(node, SENT_BYTES)

    time.sleep(SETTLE_SECONDS)
    assert httpx.get(f"{node.url}/healthz", timeout=WAIT_SECONDS).status_code == 200
    sent_after_hang_up = metric(node, SENT_BYTES) - sent_while_held
    print(f"sent after the greedy peer hung up: {sent_after_hang_up / 2**20:.1f} MiB")
    # Each dropped response may send a piece or two before it notices; a node that read its
    # blob to the end for nobody would send ~16 GiB and stall every other request meanwhile.
    assert sent_after_hang_up <= HELD_REQUESTS * MAX_PIECES_AFTER_HANG_UP * SERVE_CHUNK_BYTES
    rss_after = node.rss_bytes()
    growth = rss_held - rss_before
    print(
        f"RSS before {rss_before / 2**20:.0f} MiB, holding {HELD_REQUESTS} requests "
        f"{rss_held / 2**20:.0f} MiB (+{growth / HELD_REQUESTS / 1024:.0f} KiB each), "
        f"after {rss_after / 2**20:.0f} MiB"
    )
    assert growth < HELD_REQUESTS * MAX_RSS_PER_HELD_REQUEST
    assert node.alive()
    assert httpx.get(f"{node.url}/healthz", timeout=60).status_code == 200


def test_connections_beyond_the_limit_are_refused_with_503_until_some_close(
    nodes, tmp_path: Path
) -> None:
    """``[net] max_connections`` is what bounds the memory: past it, new requests get 503."""
    node: NodeProcess = nodes("node", offline=True)
    configure(node, max_connections=SMALL_LIMIT)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(BIG_BLOB_BYTES))
    digest = node.put(big)
    node.start()
    assert httpx.get(f"{node.url}/healthz", timeout=60).status_code == 200

    statuses = []
    with held_requests(node, digest, 0) as held:
        for _ in range(SMALL_LIMIT + 8):  # one at a time: each learns its status before the next
            sock = open_request(node, digest)
            held.append(sock)
            statuses.append(read_exactly(sock, 12).decode(errors="replace"))
        admitted = statuses.count("HTTP/1.1 200")
        assert 0 < admitted <= SMALL_LIMIT
        assert statuses.count("HTTP/1.1 503") == len(statuses) - admitted
        status = httpx.get(f"{node.url}/healthz", timeout=60).status_code
        assert status == 503  # while the admitted downloads stall, nothing more is taken on

    deadline = time.monotonic() + WAIT_SECONDS
    while status != 200 and time.monotonic() < deadline:
        status = httpx.get(f"{node.url}/healthz", timeout=60).status_code
        time.sleep(0.2)
    assert status == 200
    assert node.alive()


def test_a_greedy_peer_gets_its_share_while_another_peer_downloads(nodes, tmp_path: Path) -> None:
    """One peer asks for more downloads than the whole node takes (``FAIR_GLOBAL_LIMIT``) and
    reads none: it gets ``max_requests_per_peer`` of them, the rest 503; a peer hoarding idle
    connections gets ``max_connections_per_peer``; another peer is served all along."""
    import asyncio

    node: NodeProcess = nodes("node", offline=True)
    configure(
        node,
        max_connections=FAIR_GLOBAL_LIMIT,
        max_requests_per_peer=FAIR_REQUESTS_PER_PEER,
        max_connections_per_peer=FAIR_CONNECTIONS_PER_PEER,
        send_timeout_seconds=NO_SEND_TIMEOUT,
    )
    big, small = tmp_path / "big.bin", tmp_path / "small.bin"
    big.write_bytes(os.urandom(BIG_BLOB_BYTES))
    small.write_bytes(b"a small blob another peer wants")
    big_digest, small_digest = node.put(big), node.put(small)
    node.start()

    with held_requests(node, big_digest, 0) as held:
        statuses = []
        for _ in range(GREEDY_ATTEMPTS):  # one at a time: each learns its status before the next
            held.append(open_request(node, big_digest, GREEDY_PEERS[0]))
            statuses.append(status_of(held[-1]))
        assert statuses == [OK] * FAIR_REQUESTS_PER_PEER + [UNAVAILABLE] * (
            GREEDY_ATTEMPTS - FAIR_REQUESTS_PER_PEER
        )
        for _ in range(FAIR_CONNECTIONS_PER_PEER):  # idle: they never send a request
            held.append(open_connection(node, OTHER_GREEDY))
        held.append(open_request(node, small_digest, OTHER_GREEDY))
        assert status_of(held[-1]) == UNAVAILABLE

        for path in ("/healthz", "/v1/info"):
            assert httpx.get(f"{node.url}{path}", timeout=WAIT_SECONDS).status_code == 200
        got_small = asyncio.run(fetch_as_other_peer(node, small_digest, tmp_path / "other"))
        got_big = asyncio.run(fetch_as_other_peer(node, big_digest, tmp_path / "other"))
        assert (got_small, got_big) == (small.stat().st_size, BIG_BLOB_BYTES)
        refused = "allmende_peer_limit_refusals_total"
        assert (
            metric(node, refused + '{limit="requests"}') == GREEDY_ATTEMPTS - FAIR_REQUESTS_PER_PEER
        )
        assert metric(node, refused + '{limit="connections"}') == 1

    # the greedy peer hung up: its slots come back
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        with contextlib.closing(open_request(node, small_digest, GREEDY_PEERS[0])) as sock:
            if status_of(sock) == OK:
                break
        assert time.monotonic() < deadline, "the greedy peer's slots never came back"
        time.sleep(0.2)
    assert node.alive()


def test_a_download_nobody_reads_is_dropped_after_the_send_timeout(nodes, tmp_path: Path) -> None:
    node: NodeProcess = nodes("node", offline=True)
    configure(
        node,
        max_requests_per_peer=FAIR_REQUESTS_PER_PEER,
        send_timeout_seconds=SHORT_SEND_TIMEOUT,
    )
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(BIG_BLOB_BYTES))
    digest = node.put(big)
    node.start()

    with held_requests(node, digest, FAIR_REQUESTS_PER_PEER, GREEDY_PEERS[:1]) as held:
        started = time.monotonic()
        assert [status_of(sock) for sock in held] == [OK] * FAIR_REQUESTS_PER_PEER
        dropped = "allmende_stalled_sends_dropped_total"
        deadline = started + WAIT_SECONDS
        while metric(node, dropped) < FAIR_REQUESTS_PER_PEER:
            assert time.monotonic() < deadline, "the node kept downloads nobody read"
            time.sleep(0.2)
        assert time.monotonic() - started >= SHORT_SEND_TIMEOUT
        assert all(ended(sock) for sock in held)
        with contextlib.closing(open_request(node, digest, GREEDY_PEERS[0])) as sock:
            assert status_of(sock) == OK  # its slots are free again
    assert node.alive()
