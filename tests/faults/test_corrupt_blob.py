"""A blob corrupted on disk is detected when read and fetched again from a peer.

Two real node processes hold the same blob; one byte of node A's copy is flipped on disk. A node
serving its corrupted copy notices at the end of the stream and quarantines it (the next request
gets 404); the fetching peer's hash check refuses the bytes and takes them from node B. A node
reading its own corrupted copy gets :class:`HashMismatch`, the copy is quarantined, and the next
fetch brings a good one from a peer.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import pytest
from fault_nodes import NodeProcess

from allmende.errors import HashMismatch
from allmende.net.client import PeerClient
from allmende.net.endpoints import LOOPBACK_RANGES, EndpointPolicy
from allmende.store.blobs import BlobStore
from allmende.store.state import StateDB

LOOPBACK = EndpointPolicy.allowing(LOOPBACK_RANGES)  # the nodes are on loopback

BLOB_BYTES = 3 * 1024 * 1024 + 17  # more than one streamed chunk


def flip_one_byte(path: Path, offset: int) -> None:
    """Corrupt a file in place, as bit rot would: same size, one byte different."""
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


@pytest.fixture
def blob(tmp_path: Path) -> Path:
    path = tmp_path / "blob.bin"
    path.write_bytes(os.urandom(BLOB_BYTES))
    return path


@pytest.fixture
def two_nodes(nodes, blob: Path) -> tuple[NodeProcess, NodeProcess, str]:
    """Nodes A and B holding ``blob``; A's copy is corrupted on disk before A starts."""
    a, b = nodes("a", offline=True), nodes("b", offline=True)
    digest = a.put(blob)
    assert b.put(blob) == digest
    flip_one_byte(a.store.path(digest), BLOB_BYTES // 2)
    a.start(wait=False)
    b.start()
    a.wait_ready()
    return a, b, digest


def test_a_node_serving_a_corrupted_blob_is_passed_over_and_quarantines_it(
    two_nodes: tuple[NodeProcess, NodeProcess, str], tmp_path: Path
) -> None:
    a, b, digest = two_nodes
    state = StateDB.open(tmp_path / "peer-state.sqlite")
    store = BlobStore(tmp_path / "peer-blobs")

    async def fetch() -> str | None:
        async with PeerClient(store, state=state, policy=LOOPBACK) as client:
            return (await client.fetch_blob(digest, [a.url, b.url])).peer

    assert asyncio.run(fetch()) == b.url  # A was asked first and served wrong bytes
    assert store.read_bytes(digest) == b.store.read_bytes(digest)
    assert [fault.kind for fault in state.peer_faults(a.url)] == ["hash"]
    assert state.peer_faults(b.url) == []
    # A found out while streaming: its copy is quarantined and it no longer offers the blob.
    assert httpx.get(f"{a.url}/v1/blobs/{digest}", timeout=30).status_code == 404
    assert list(a.store.quarantine_dir.iterdir())
    assert not a.store.has(digest)
    # B's good copy is untouched and still served.
    assert httpx.get(f"{b.url}/v1/blobs/{digest}", timeout=30).status_code == 200


def test_a_node_reading_its_corrupted_blob_detects_it_and_fetches_it_again(
    nodes, blob: Path, tmp_path: Path
) -> None:
    b = nodes("b", offline=True)
    digest = b.put(blob)
    b.start()
    local = BlobStore(tmp_path / "local")
    assert local.put_file(blob) == digest
    flip_one_byte(local.path(digest), 0)

    with pytest.raises(HashMismatch, match="corrupted on disk"):
        local.read_bytes(digest)
    assert not local.has(digest)  # quarantined, so the next fetch does not trust it

    async def refetch() -> str | None:
        async with PeerClient(local, policy=LOOPBACK) as client:
            return (await client.fetch_blob(digest, [b.url])).peer

    assert asyncio.run(refetch()) == b.url
    assert local.read_bytes(digest) == blob.read_bytes()


def test_an_intact_blob_is_read_without_a_fetch(nodes, blob: Path, tmp_path: Path) -> None:
    """The negative case: nothing is corrupted, nothing is quarantined or fetched."""
    local = BlobStore(tmp_path / "local")
    digest = local.put_file(blob)

    async def fetch() -> str | None:
        async with PeerClient(local, policy=LOOPBACK) as client:
            return (await client.fetch_blob(digest, ["http://127.0.0.1:9"])).peer

    assert asyncio.run(fetch()) is None  # already local and intact: no peer asked
    assert local.read_bytes(digest) == blob.read_bytes()
    assert not list(local.quarantine_dir.iterdir())
