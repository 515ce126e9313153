"""The keep-alive JSON-RPC transport against a small HTTP server on loopback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from allmende.chain.rpc import JsonRpcTransport, RpcBadAnswer, RpcUnreachable


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
        else:
            self._answer(200, json.dumps({"id": request["id"], "result": method}).encode())
        if method == "then_close":
            self.close_connection = True
            self.connection.close()

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
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
