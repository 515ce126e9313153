"""The health probe tells serving, ready, not ready and absent nodes apart, through one client."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from allmende.net.health import HealthProbe

BODIES: dict[str, tuple[int, object]] = {
    "ready": (200, {"status": "ok", "ready": True}),
    "starting": (200, {"status": "ok", "ready": False}),
    "old": (200, {"status": "ok"}),  # a node from before readiness was reported
    "list": (200, ["ok"]),
    "failing": (503, {"detail": "down"}),
}


class Answers(BaseHTTPRequestHandler):
    """``/healthz`` answers chosen by the path's first part: ``/<kind>/healthz``."""

    def do_GET(self) -> None:
        kind, _, rest = self.path.strip("/").partition("/")
        if rest != "healthz" or kind not in {*BODIES, "garbage"}:
            self.send_error(404)
            return
        if kind == "garbage":
            status, body = 200, b"not json"
        else:
            status, document = BODIES[kind]
            body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Answers)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serving_and_ready_are_told_apart(server: str) -> None:
    with HealthProbe() as probe:
        assert probe.serving(f"{server}/ready") and probe.ready(f"{server}/ready/")
        assert probe.serving(f"{server}/starting") and not probe.ready(f"{server}/starting")
        assert probe.ready(f"{server}/old")


def test_bad_answers_and_absent_nodes_are_neither_serving_nor_ready(server: str) -> None:
    with HealthProbe(timeout=1.0) as probe:
        for kind in ("failing", "garbage", "list", "missing"):
            assert not probe.serving(f"{server}/{kind}"), kind
            assert not probe.ready(f"{server}/{kind}"), kind
        assert not probe.serving(f"http://127.0.0.1:{closed_port()}")
