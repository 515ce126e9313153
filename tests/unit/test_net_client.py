"""The peer client: fall back across peers, verify while streaming, record who misbehaved."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import httpx
import pytest
from eth_account import Account

from allmende.errors import PeerError
from allmende.net.api import MessageRouter, NodeIdentity, create_app
from allmende.net.client import PeerClient
from allmende.net.messages import MessageDomain
from allmende.net.metrics import NodeMetrics
from allmende.net.signers import StaticSigners
from allmende.store.blobs import BlobStore
from allmende.store.state import StateDB

DATA = b"the model bytes " * 1000
DIGEST = hashlib.sha256(DATA).hexdigest()


def _peers(request: httpx.Request) -> httpx.Response:
    """Fake peers, one per host name, each misbehaving in its own way."""
    host = request.url.host
    if not request.url.path.startswith("/v1/blobs/"):
        return httpx.Response(404)
    if host == "good":
        return httpx.Response(200, stream=httpx.ByteStream(DATA))
    if host == "liar":
        return httpx.Response(200, stream=httpx.ByteStream(DATA[:-1] + b"X"))
    if host == "broken":
        return httpx.Response(500, json={"detail": "oops"})
    if host == "empty":
        return httpx.Response(404, json={"detail": "not here"})
    if host == "huge":  # no Content-Length: the limit is enforced while streaming
        return httpx.Response(200, stream=httpx.ByteStream(b"x" * 100_000))
    if host == "boastful":  # announces more than the limit
        headers = {"content-length": "100000"}
        return httpx.Response(200, headers=headers, stream=httpx.ByteStream(b""))
    if host == "down":
        raise httpx.ConnectError("connection refused", request=request)
    if host == "slow":
        raise httpx.ReadTimeout("read timed out", request=request)
    raise AssertionError(host)


@pytest.fixture
def local(tmp_path: Path):
    store = BlobStore(tmp_path / "blobs", max_blob_bytes=50_000)
    state = StateDB.open(tmp_path / "state.sqlite")
    metrics = NodeMetrics()
    client = PeerClient(
        store, state=state, metrics=metrics, transport=httpx.MockTransport(_peers)
    )
    yield store, state, metrics, client
    asyncio.run(client.aclose())
    state.close()


def test_fetch_falls_back_past_every_kind_of_bad_peer(local) -> None:
    store, state, metrics, client = local
    names = ("down", "slow", "broken", "empty", "liar", "huge", "boastful", "good")
    peers = [f"http://{h}" for h in names]
    result = asyncio.run(client.fetch_blob(DIGEST, peers))
    assert result.peer == "http://good" and result.size == len(DATA)
    assert store.read_bytes(DIGEST) == DATA
    kinds = {f.peer: f.kind for f in state.peer_faults()}
    assert kinds == {
        "http://down": "unreachable",
        "http://slow": "timeout",
        "http://broken": "http",
        "http://liar": "hash",
        "http://huge": "size",
        "http://boastful": "size",
    }  # a peer that simply lacks the blob is no fault
    text = metrics.render().decode()
    assert 'allmende_peer_faults_total{kind="hash"} 1.0' in text
    assert "allmende_blob_bytes_fetched_total 16000.0" in text
    assert list(store.tmp_dir.iterdir()) == []


def test_fetch_fails_with_every_reason_when_no_peer_serves_it(local) -> None:
    store, _, _, client = local
    with pytest.raises(PeerError) as caught:
        asyncio.run(client.fetch_blob(DIGEST, ["http://liar", "http://empty"]))
    assert "wrong bytes" in str(caught.value) and "404" in str(caught.value)
    assert not store.has(DIGEST)
    with pytest.raises(PeerError, match="no peers were given"):
        asyncio.run(client.fetch_blob(DIGEST, []))


def test_a_blob_already_stored_is_not_fetched(local) -> None:
    store, _, _, client = local
    store.put_bytes(DATA)
    result = asyncio.run(client.fetch_blob(DIGEST, ["http://down"]))
    assert result.peer is None and result.size == len(DATA)


def test_a_per_fetch_limit_below_the_store_limit(local) -> None:
    _, state, _, client = local
    with pytest.raises(PeerError, match="size limit of 1000 bytes for this kind") as info:
        asyncio.run(client.fetch_blob(DIGEST, ["http://good"], max_bytes=1000))
    assert "max_blob_bytes" not in str(info.value)  # raising the store's limit would not help
    assert [f.kind for f in state.peer_faults()] == ["size"]


def test_post_message_to_a_real_app(tmp_path: Path) -> None:
    sender = Account.from_key("0x" + "11" * 32)
    receiver = Account.from_key("0x" + "22" * 32)
    domain = MessageDomain(chain_id=31337, registry="0x" + "ab" * 20)
    state = StateDB.open(tmp_path / "state.sqlite")
    app = create_app(
        identity=NodeIdentity(address=receiver.address, roles=[], domain=domain),
        store=BlobStore(tmp_path / "blobs"),
        state=state,
        signers=StaticSigners([sender.address]),
        router=MessageRouter(),
        metrics=NodeMetrics(),
    )
    transport = httpx.ASGITransport(app=app)

    async def scenario() -> None:
        async with PeerClient(
            BlobStore(tmp_path / "mine"), account=sender, domain=domain, transport=transport
        ) as client:
            reply = await client.post_message(
                "http://peer", recipient=receiver.address, kind="ping", payload={"n": 1}
            )
            assert reply == {"pong": {"n": 1}}
            with pytest.raises(PeerError, match=r"HTTP 401.*addressed to"):
                await client.post_message(
                    "http://peer", recipient=sender.address, kind="ping", payload={}
                )
        async with PeerClient(BlobStore(tmp_path / "x"), transport=transport) as keyless:
            with pytest.raises(PeerError, match="no key"):
                await keyless.post_message("http://peer", recipient=receiver.address,
                                           kind="ping", payload={})

    asyncio.run(scenario())
    state.close()


def test_concurrent_fetches_of_one_blob_download_it_once(tmp_path: Path) -> None:
    requests: list[str] = []

    def serve(request: httpx.Request) -> httpx.Response:
        requests.append(str(request.url))
        return httpx.Response(200, stream=httpx.ByteStream(DATA))

    store = BlobStore(tmp_path / "blobs")

    async def scenario() -> list:
        async with PeerClient(store, transport=httpx.MockTransport(serve)) as client:
            return await asyncio.gather(
                *(client.fetch_blob(DIGEST, ["http://good"]) for _ in range(3))
            )

    results = asyncio.run(scenario())
    assert len(requests) == 1
    assert sorted(r.peer is None for r in results) == [False, True, True]
    assert store.read_bytes(DIGEST) == DATA
