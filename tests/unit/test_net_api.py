"""The node's HTTP API, in process: every endpoint, and a 4xx JSON answer for every bad input."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import time
from pathlib import Path

import httpx
import pytest
from eth_account import Account

from allmende.errors import MessageError
from allmende.net.api import (
    SERVE_CHUNK_BYTES,
    ApiSettings,
    MessageRouter,
    NodeIdentity,
    VerifiedMessage,
    create_app,
    direct_blob_gets,
)
from allmende.net.messages import MessageDomain, sign_message
from allmende.net.metrics import NodeMetrics
from allmende.net.signers import StaticSigners
from allmende.store.blobs import BlobStore
from allmende.store.state import StateDB

NODE = Account.from_key("0x" + "22" * 32)
PEER = Account.from_key("0x" + "11" * 32)
STRANGER = Account.from_key("0x" + "33" * 32)
DOMAIN = MessageDomain(chain_id=31337, registry="0x" + "ab" * 20)


class SyncClient:
    """An httpx client calling the ASGI app in process, on its own event loop."""

    def __init__(self, app) -> None:
        self._loop = asyncio.new_event_loop()
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        self._client = httpx.AsyncClient(transport=transport, base_url="http://node")

    def request(self, method: str, url: str, **kwargs) -> httpx.Response:
        return self._loop.run_until_complete(self._client.request(method, url, **kwargs))

    def get(self, url: str, **kwargs) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def head(self, url: str, **kwargs) -> httpx.Response:
        return self.request("HEAD", url, **kwargs)

    def post(self, url: str, **kwargs) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def close(self) -> None:
        self._loop.run_until_complete(self._client.aclose())
        self._loop.close()


class Node:
    def __init__(self, tmp_path: Path, *, direct: bool = False) -> None:
        self.store = BlobStore(tmp_path / "blobs")
        self.state = StateDB.open(tmp_path / "state.sqlite")
        self.metrics = NodeMetrics()
        self.router = MessageRouter()
        self.received: list[VerifiedMessage] = []
        self.roles_ready = False

        async def note(message: VerifiedMessage) -> dict:
            self.received.append(message)
            if message.payload.get("refuse"):
                raise MessageError("The note handler refuses this on purpose.")
            if message.payload.get("crash"):
                raise RuntimeError("handler bug")
            return {"seen": len(self.received)}

        self.router.register("note", note)
        app = create_app(
            identity=NodeIdentity(address=NODE.address, roles=["trainer"], domain=DOMAIN),
            store=self.store,
            state=self.state,
            signers=StaticSigners([PEER.address]),
            router=self.router,
            metrics=self.metrics,
            settings=ApiSettings(max_message_bytes=2048),
            ready=lambda: self.roles_ready,
        )
        self.app = app
        self.app_calls = 0

        async def counted(scope, receive, send) -> None:
            self.app_calls += 1
            await app(scope, receive, send)

        served = direct_blob_gets(counted, store=self.store, metrics=self.metrics)
        self.http = SyncClient(served if direct else counted)


@pytest.fixture(params=["fastapi", "direct"])
def node(tmp_path: Path, request: pytest.FixtureRequest):
    """The API as FastAPI serves it, and as a node serves it (small whole-blob GETs first)."""
    n = Node(tmp_path, direct=request.param == "direct")
    yield n
    n.http.close()
    n.state.close()


def _message(account=PEER, **overrides) -> str:
    args = {"kind": "note", "payload": {"x": 1}, "recipient": NODE.address}
    args.update(overrides)
    return sign_message(account, DOMAIN, **args).model_dump_json()


def _post(node: Node, body: str | bytes):
    return node.http.post(
        "/v1/messages", content=body, headers={"content-type": "application/json"}
    )


def test_info_health_metrics_and_openapi(node: Node) -> None:
    info = node.http.get("/v1/info").json()
    assert info["address"] == NODE.address
    assert info["roles"] == ["trainer"]
    assert info["chain_id"] == 31337
    assert info["version"]
    assert node.http.get("/healthz").json() == {"status": "ok", "ready": False}
    node.roles_ready = True  # the roles finished loading their tasks
    assert node.http.get("/healthz").json() == {"status": "ok", "ready": True}
    assert "allmende_messages" in node.http.get("/metrics").text
    paths = node.http.get("/openapi.json").json()["paths"]
    assert {"/v1/info", "/v1/blobs/{digest}", "/v1/messages"} <= set(paths)


def test_small_blob_gets_skip_fastapi_and_everything_else_reaches_it(tmp_path: Path) -> None:
    node = Node(tmp_path, direct=True)
    try:
        small = node.store.put_bytes(b"x" * 100)
        large = node.store.put_bytes(os.urandom(SERVE_CHUNK_BYTES + 1))
        assert node.http.get(f"/v1/blobs/{small}").content == b"x" * 100
        assert node.app_calls == 0
        for request in (
            ("GET", f"/v1/blobs/{large}", {}),
            ("GET", f"/v1/blobs/{small}", {"range": "bytes=0-9"}),
            ("HEAD", f"/v1/blobs/{small}", {}),
            ("GET", "/v1/blobs/" + "0" * 64, {}),
            ("GET", "/v1/blobs/not-a-digest", {}),
            ("GET", "/v1/info", {}),
        ):
            before = node.app_calls
            node.http.request(request[0], request[1], headers=request[2])
            assert node.app_calls == before + 1, request
    finally:
        node.http.close()
        node.state.close()


def test_get_head_and_range_of_a_blob(node: Node) -> None:
    data = bytes(range(256)) * 100
    digest = node.store.put_bytes(data)
    response = node.http.get(f"/v1/blobs/{digest}")
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-length"] == str(len(data))
    head = node.http.head(f"/v1/blobs/{digest}")
    assert head.status_code == 200 and head.headers["content-length"] == str(len(data))
    assert head.content == b""
    part = node.http.get(f"/v1/blobs/{digest}", headers={"range": "bytes=10-19"})
    assert part.status_code == 206
    assert part.content == data[10:20]
    assert "allmende_blob_bytes_served_total 25600.0" in node.http.get("/metrics").text


def test_unknown_and_malformed_blob_names_are_4xx_json(node: Node) -> None:
    missing = node.http.get("/v1/blobs/" + "0" * 64)
    assert missing.status_code == 404 and "not in this store" in missing.json()["detail"]
    bad = node.http.get("/v1/blobs/xyz")
    assert bad.status_code == 400 and "SHA-256" in bad.json()["detail"]


def test_a_streamed_blob_corrupted_on_disk_is_quarantined_when_served(node: Node) -> None:
    original = os.urandom(SERVE_CHUNK_BYTES + 1)  # more than one piece: streamed
    digest = node.store.put_bytes(original)
    node.store.path(digest).write_bytes(bytes(reversed(original)))
    served = node.http.get(f"/v1/blobs/{digest}")
    assert hashlib.sha256(served.content).hexdigest() != digest  # the client's check catches it
    assert node.http.get(f"/v1/blobs/{digest}").status_code == 404
    assert "allmende_corrupt_blobs_total 1.0" in node.http.get("/metrics").text


def test_a_small_blob_corrupted_on_disk_is_never_sent(node: Node) -> None:
    digest = node.store.put_bytes(b"original bytes")
    node.store.path(digest).write_bytes(b"rotten   bytes")
    served = node.http.get(f"/v1/blobs/{digest}")
    assert served.status_code == 404 and "corrupted" in served.json()["detail"]
    assert "allmende_corrupt_blobs_total 1.0" in node.http.get("/metrics").text
    assert list(node.store.quarantine_dir.iterdir())


def test_small_and_streamed_blobs_arrive_whole(node: Node) -> None:
    for size in (0, 1, SERVE_CHUNK_BYTES, SERVE_CHUNK_BYTES + 1, 3 * SERVE_CHUNK_BYTES):
        data = os.urandom(size)
        served = node.http.get(f"/v1/blobs/{node.store.put_bytes(data)}")
        assert served.status_code == 200 and served.content == data
        assert served.headers["content-length"] == str(size)


def test_a_registered_peer_message_reaches_its_handler(node: Node) -> None:
    response = _post(node, _message(payload={"x": 5}))
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": True, "reply": {"seen": 1}}
    assert node.received[0].sender == PEER.address
    assert node.received[0].payload == {"x": 5}
    ping = _post(node, _message(kind="ping", payload={"hi": 1}))
    assert ping.json()["reply"] == {"pong": {"hi": 1}}


def test_a_replayed_message_is_refused(node: Node) -> None:
    body = _message()
    assert _post(node, body).status_code == 200
    again = _post(node, body)
    assert again.status_code == 409 and "replay" in again.json()["detail"]
    assert len(node.received) == 1


@pytest.mark.parametrize(
    "body, status, words",
    [
        (b"{", 400, "malformed"),
        (b'{"kind": "note"}', 400, "malformed"),
        ("expired", 401, "expired"),
        ("forged", 401, "forged"),
        ("misaddressed", 401, "addressed to"),
        ("stranger", 403, "not a registered node"),
        ("unknown_kind", 400, "no handler"),
        ("refused", 400, "on purpose"),
        (b"x" * 5000, 413, "exceeds 2048 bytes"),
    ],
)
def test_bad_messages_get_a_4xx_that_says_why(
    node: Node, body: bytes | str, status: int, words: str
) -> None:
    if body == "expired":
        body = _message(ttl_seconds=10, now=time.time() - 60)
    elif body == "forged":
        body = _message().replace('"x":1', '"x":2')
    elif body == "misaddressed":
        body = _message(recipient=PEER.address)
    elif body == "stranger":
        body = _message(account=STRANGER)
    elif body == "unknown_kind":
        body = _message(kind="nobody.handles.this")
    elif body == "refused":
        body = _message(payload={"refuse": True})
    response = _post(node, body)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]
    assert _post(node, _message()).status_code == 200  # and the node keeps serving


def test_a_handler_bug_is_a_json_500_and_the_node_keeps_serving(node: Node) -> None:
    response = _post(node, _message(payload={"crash": True}))
    assert response.status_code == 500
    assert "RuntimeError" in response.json()["detail"]
    assert _post(node, _message()).status_code == 200
    assert "allmende_internal_errors_total 1.0" in node.http.get("/metrics").text


def test_the_nonce_write_of_a_message_never_blocks_the_event_loop(tmp_path: Path) -> None:
    """Another connection holds the database's write lock (a slow disk, a backup): a message
    waits for it, and meanwhile the node keeps answering other requests."""
    node = Node(tmp_path)
    blocker = sqlite3.connect(node.state.path, isolation_level=None)
    transport = httpx.ASGITransport(app=node.app, raise_app_exceptions=False)

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
            blocker.execute("BEGIN IMMEDIATE")
            posting = asyncio.create_task(
                client.post(
                    "/v1/messages",
                    content=_message(),
                    headers={"content-type": "application/json"},
                )
            )
            await asyncio.sleep(0.2)  # the message is waiting for the lock now
            health = await asyncio.wait_for(client.get("/healthz"), 5)
            assert health.status_code == 200
            assert not posting.done()
            blocker.execute("ROLLBACK")
            answer = await asyncio.wait_for(posting, 10)
            assert answer.status_code == 200, answer.text

    try:
        asyncio.run(scenario())
    finally:
        blocker.close()
        node.http.close()
        node.state.close()


def test_the_same_message_posted_concurrently_is_accepted_once(tmp_path: Path) -> None:
    node = Node(tmp_path)
    transport = httpx.ASGITransport(app=node.app, raise_app_exceptions=False)
    body = _message()

    async def scenario() -> list[int]:
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
            answers = await asyncio.gather(
                *(
                    client.post(
                        "/v1/messages", content=body, headers={"content-type": "application/json"}
                    )
                    for _ in range(8)
                )
            )
        return sorted(answer.status_code for answer in answers)

    try:
        assert asyncio.run(scenario()) == [200] + [409] * 7
        assert len(node.received) == 1
    finally:
        node.http.close()
        node.state.close()
