"""The control socket's API (``allmende.node.control``): what a node answers before any ether
moves. The happy path, on a real node and chain, is in ``tests/e2e/test_job_cli.py``."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from allmende.errors import ConfigError, NodeError
from allmende.node.control import (
    CONTROL_SOCKET,
    MAX_SUBMITTED_SPEC_BYTES,
    bind_control_socket,
    control_app,
    submit_through_node,
)

# A spec shipped with the project; the control API only passes it on.
SPEC = (Path(__file__).resolve().parents[2] / "examples/jobs/digits-fedavg.toml").read_bytes()


class UnregisteredRegistry:
    def node(self, address: str) -> SimpleNamespace:
        return SimpleNamespace(registered=False)


class NoJobs:
    def create_job(self, **_: object) -> None:
        raise AssertionError("no job may be created")


class Client:
    """Posts to the control app of a node with ``chain`` (None: offline) in-process."""

    def __init__(self, *, chain: object | None, home: Path) -> None:
        ctx = SimpleNamespace(chain=chain, address="0x" + "11" * 20, store=None, state=None,
                              home=home)  # fmt: skip
        self.app = control_app(ctx)  # type: ignore[arg-type]

    def post(self, path: str, *, content: bytes) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://node") as http:
                return await http.post(path, content=content)

        return asyncio.run(go())


client = Client


def test_a_malformed_spec_is_refused_as_a_config_error(tmp_path: Path) -> None:
    answer = client(chain=None, home=tmp_path).post("/v1/jobs", content=b"rounds = = 2")
    assert answer.status_code == 400
    assert answer.json()["kind"] == "config" and "not valid TOML" in answer.json()["error"]

    answer = client(chain=None, home=tmp_path).post("/v1/jobs", content=SPEC + b"roundz = 3\n")
    assert answer.status_code == 400 and "roundz" in answer.json()["error"]


def test_an_oversized_body_is_refused(tmp_path: Path) -> None:
    body = SPEC + b"#" * MAX_SUBMITTED_SPEC_BYTES
    answer = client(chain=None, home=tmp_path).post("/v1/jobs", content=body)
    assert answer.status_code == 413 and answer.json()["kind"] == "config"


def test_an_offline_node_refuses_to_submit(tmp_path: Path) -> None:
    answer = client(chain=None, home=tmp_path).post("/v1/jobs", content=SPEC)
    assert answer.status_code == 400
    assert answer.json() == {"error": "This node is offline; a job needs a chain.", "kind": "node"}


def test_an_unregistered_owner_is_refused_before_any_job(tmp_path: Path) -> None:
    chain = SimpleNamespace(jobs=NoJobs(), registry=UnregisteredRegistry())
    answer = client(chain=chain, home=tmp_path).post("/v1/jobs", content=SPEC)
    assert answer.status_code == 400 and answer.json()["kind"] == "node"
    assert "is not registered" in answer.json()["error"]


def test_the_socket_is_the_owners_only_and_replaces_a_stale_one(tmp_path: Path) -> None:
    home = tmp_path / ("a-long-directory-name-" * 6)  # longer than a Unix socket path may be
    home.mkdir()
    first = bind_control_socket(home)
    first.close()  # like a killed node: the file stays
    second = bind_control_socket(home)
    try:
        assert (home / CONTROL_SOCKET).stat().st_mode & 0o777 == 0o600
    finally:
        second.close()


def test_the_command_does_the_work_itself_when_no_node_listens(tmp_path: Path) -> None:
    assert submit_through_node(tmp_path, SPEC.decode()) is None  # no socket file
    bind_control_socket(tmp_path).close()  # a socket file nobody listens on
    assert submit_through_node(tmp_path, SPEC.decode()) is None


def read_request(conn: socket.socket) -> bytes:
    """One whole HTTP request from ``conn``: the headers, then ``Content-Length`` bytes of body
    (``http.client`` sends them in separate writes, so one ``recv`` may hold only a part)."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = conn.recv(65536)
        assert piece, f"the client hung up in the middle of its headers: {data!r}"
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        piece = conn.recv(65536)
        assert piece, "the client hung up in the middle of its body"
        body += piece
    return head + b"\r\n\r\n" + body


def answering(home: Path, reply: bytes | None, *, early: bool = False) -> threading.Thread:
    """A control socket at ``home`` whose listener reads one whole request and sends ``reply``
    (None: closes the connection without a word); with ``early``, it answers and closes
    without reading the request at all, as a node refusing at once does. The thread ends after
    that request."""
    listener = bind_control_socket(home)
    listener.listen()

    def answer_once() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn:
                if not early:
                    assert read_request(conn).startswith(b"POST /v1/jobs ")
                if reply is not None:
                    conn.sendall(reply)

    thread = threading.Thread(target=answer_once)
    thread.start()
    return thread


def http_answer(status: str, body: bytes) -> bytes:
    return (b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n%s" % (status.encode(), len(body), body))  # fmt: skip


@pytest.mark.parametrize(("kind", "error"), [("config", ConfigError), ("node", NodeError)])
def test_a_refusal_reaches_the_command_as_its_kind_of_error(tmp_path, kind, error) -> None:
    body = ('{"error": "refused for a reason", "kind": "' + kind + '"}').encode()
    thread = answering(tmp_path, http_answer("400 Bad Request", body))
    try:
        with pytest.raises(error, match="refused for a reason"):
            submit_through_node(tmp_path, SPEC.decode())
    finally:
        thread.join(timeout=10)


@pytest.mark.parametrize("reply", [
    None,  # the node died with the request
    b"garbage\r\n\r\n",
    http_answer("200 OK", b'{"job_id": 1}'),  # not a whole job
    http_answer("200 OK", b"[1, 2]"),
], ids=["closed", "garbage", "partial-job", "not-an-object"])  # fmt: skip
def test_a_broken_answer_is_a_node_error_that_says_what_to_check(tmp_path, reply) -> None:
    thread = answering(tmp_path, reply)
    try:
        with pytest.raises(NodeError, match="allmende job show"):
            submit_through_node(tmp_path, SPEC.decode())
    finally:
        thread.join(timeout=10)


def test_a_submission_answered_with_a_job_returns_it(tmp_path: Path) -> None:
    job = {"job_id": 7, "owner": "0x" + "11" * 20, "spec_hash": "ab" * 32,
           "model_hash": "cd" * 32, "escrow": 10**18}  # fmt: skip
    thread = answering(tmp_path, http_answer("200 OK", json.dumps(job).encode()))
    try:
        submitted = submit_through_node(tmp_path, SPEC.decode())
    finally:
        thread.join(timeout=10)
    assert submitted is not None and submitted.job_id == 7 and submitted.escrow == 10**18


def test_a_refusal_sent_before_the_body_was_read_still_reaches_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node may refuse before it reads the whole request (413 for a body over its limit) and
    close; the command's send then fails with a broken pipe, and the answer must still count."""
    from allmende.node import control

    failed_sends: list[BaseException] = []
    real_send = control._ControlConnection.send

    def send(self: http.client.HTTPConnection, data: object) -> None:
        try:
            real_send(self, data)  # type: ignore[arg-type]
        except OSError as exc:
            failed_sends.append(exc)
            raise

    monkeypatch.setattr(control._ControlConnection, "send", send)
    body = b'{"error": "The job spec is over 65536 bytes.", "kind": "config"}'
    thread = answering(tmp_path, http_answer("413 Content Too Large", body), early=True)
    # far more than the socket buffers hold, so the send must meet the closed socket
    spec = SPEC.decode() + "#" * (16 * 1024 * 1024)
    try:
        with pytest.raises(ConfigError, match="over 65536 bytes"):
            submit_through_node(tmp_path, spec)
    finally:
        thread.join(timeout=10)
    assert failed_sends and isinstance(failed_sends[0], BrokenPipeError | ConnectionResetError)
