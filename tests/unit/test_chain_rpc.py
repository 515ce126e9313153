"""The keep-alive JSON-RPC transport against a small HTTP server on loopback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from allmende.chain.rpc import JsonRpcTransport, RpcBadAnswer, RpcUnreachable, _keepalive_limit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep connections alive
    connections: ClassVar[set[tuple[str, int]]] = set()  # client (host, port) pairs seen

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["content-length"])))
        Handler.connections.add(self.client_address)
        method = request["method"]
        if method == "http_error":
            self._answer(500, b"broken")
        elif method == "not_json":
            self._answer(200, b"<html>")
        elif method.startswith("keepalive:"):  # advertise an idle timeout, as Node.js servers do
            body = json.dumps({"id": request["id"], "result": method}).encode()
            self._answer(200, body, {"keep-alive": method.removeprefix("keepalive:")})
        else:
            self._answer(200, json.dumps({"id": request["id"], "result": method}).encode())
        if method == "then_close":
            self.close_connection = True
            self.connection.close()

    def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def url() -> Iterator[str]:
    Handler.connections = set()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_calls_share_one_kept_alive_connection(url: str) -> None:
    rpc = JsonRpcTransport(url, timeout=5)
    assert [rpc.call(m, [])["result"] for m in ("a", "b", "c")] == ["a", "b", "c"]
    assert len(Handler.connections) == 1
    rpc.close()


def test_a_connection_the_server_closed_is_replaced_before_reuse(url: str) -> None:
    rpc = JsonRpcTransport(url, timeout=5)
    assert rpc.call("then_close", [])["result"] == "then_close"
    time.sleep(0.2)  # idle: the close reaches the client
    assert rpc.call("after", [])["result"] == "after"  # sent once, on a new connection
    assert len(Handler.connections) == 2
    rpc.close()


def test_http_errors_and_non_json_are_bad_answers(url: str) -> None:
    rpc = JsonRpcTransport(url, timeout=5)
    with pytest.raises(RpcBadAnswer, match="HTTP 500"):
        rpc.call("http_error", [])
    with pytest.raises(RpcBadAnswer, match="not JSON"):
        rpc.call("not_json", [])
    assert rpc.call("still", [])["result"] == "still"
    rpc.close()


def test_an_unreachable_endpoint_and_a_bad_url_are_refused() -> None:
    with pytest.raises(RpcUnreachable):
        JsonRpcTransport("http://127.0.0.1:9/", timeout=1).call("eth_blockNumber", [])
    with pytest.raises(ValueError, match="not an http"):
        JsonRpcTransport("ws://127.0.0.1:8545", timeout=1)


def test_a_read_racing_the_servers_close_is_sent_again_on_a_new_connection(url: str) -> None:
    rpc = JsonRpcTransport(url, timeout=5)
    for _ in range(20):
        assert rpc.call("then_close", [])["result"] == "then_close"
        assert rpc.call("eth_blockNumber", [])["result"] == "eth_blockNumber"  # no pause
    rpc.close()


class Clock:
    """A monotonic clock the test moves on (the transport reads ``time.monotonic``)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_connection_idle_near_the_servers_keepalive_timeout_is_replaced(url, monkeypatch) -> None:
    """Hardhat (Node.js) says ``Keep-Alive: timeout=5`` and closes an idle connection after 5 s;
    a transaction sent just then would be lost, so the connection is replaced at 4 s."""
    clock = Clock()
    monkeypatch.setattr("allmende.chain.rpc.time.monotonic", clock)
    rpc = JsonRpcTransport(url, timeout=5)
    assert rpc.call("keepalive:timeout=5", [])["result"] == "keepalive:timeout=5"
    clock.now += 3.9  # idle, but well within what the server promised
    rpc.call("keepalive:timeout=5", [])
    assert len(Handler.connections) == 1
    clock.now += 4.0  # idle for the server's timeout less the margin: not reused
    assert rpc.call("eth_sendRawTransaction", [])["result"] == "eth_sendRawTransaction"
    assert len(Handler.connections) == 2
    clock.now += 60.0  # that answer named no timeout: the connection is kept however long idle
    rpc.call("eth_blockNumber", [])
    assert len(Handler.connections) == 2
    rpc.close()


def test_the_keepalive_header_is_read_strictly() -> None:
    assert _keepalive_limit("timeout=5") == 4.0
    assert _keepalive_limit("timeout=5, max=1000") == 4.0
    assert _keepalive_limit("max=10, timeout=60") == 59.0
    assert _keepalive_limit("timeout=1") == 0.0  # under the margin: never reused
    for header in (None, "", "max=5", "timeout=", "timeout=abc", "xtimeout=5", "timeout=5s"):
        assert _keepalive_limit(header) is None, header
