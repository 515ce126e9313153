"""The node's control socket, ``HOME/node.sock``: requests from the node's own operator.

A running node listens on a Unix socket in its home, readable and writable by its owner only
(mode 0600), so only someone who can already read the node's key can use it. Through it the
light command line hands work to the node, which has torch, the task code, its key and the chain
connection loaded already: ``allmende job submit`` sends the job spec there and returns in well
under a second instead of importing all of that first. When no node listens (it is not running,
or the socket could not be made), the command does the work in its own process, as before.

``POST /v1/jobs``, body the job spec (TOML, at most :data:`MAX_SUBMITTED_SPEC_BYTES`): publish
the spec and the initial model in the node's store and create the job with the node's key.
Answers 200 with the :class:`SubmittedJob` as JSON, or 400 with ``{"error": message, "kind":
"config" or "node"}`` (413 for a larger body, sent before the rest of the body is read).

Unix socket paths are limited to about 100 bytes; the path is given through the home's
directory descriptor (``/proc/self/fd/N/node.sock``), so a node home may be anywhere.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from allmende.errors import ConfigError, NodeError
from allmende.node.submit import SubmittedJob, publish_job

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    from allmende.node.context import NodeContext

CONTROL_SOCKET = "node.sock"
# The body of a submission (the spec's TOML, a few hundred bytes); more is refused with 413.
MAX_SUBMITTED_SPEC_BYTES = 64 * 1024
# Creating a job sends one transaction and waits for its receipt.
SUBMIT_TIMEOUT_SECONDS = 120.0
MAX_ANSWER_BYTES = 64 * 1024  # the node's answer is a few hundred bytes of JSON


@contextlib.contextmanager
def socket_path(home: Path) -> Iterator[str]:
    """A short path naming ``home/node.sock`` (through a descriptor of ``home``) while open."""
    fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{CONTROL_SOCKET}"
    finally:
        os.close(fd)


def bind_control_socket(home: Path) -> socket.socket:
    """Listen on ``home/node.sock`` (owner only), replacing a stale socket file."""
    target = home / CONTROL_SOCKET
    if target.is_socket():
        target.unlink()  # left by a node that was killed; the home lock says none runs now
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with socket_path(home) as path:
            old = os.umask(0o177)
            try:
                sock.bind(path)
            finally:
                os.umask(old)
        os.chmod(target, 0o600)
    except OSError as exc:
        sock.close()
        raise NodeError(f"Cannot create the control socket {target}: {exc.strerror}.") from None
    sock.set_inheritable(True)
    return sock


def control_app(ctx: NodeContext) -> Starlette:
    """The control API of the node ``ctx`` (the web stack is imported here, by the node only)."""
    import asyncio

    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from allmende.errors import AllmendeError
    from allmende.node.jobspec import loads_jobspec

    async def submit(request: Request) -> JSONResponse:
        body = b""
        async for piece in request.stream():
            body += piece
            if len(body) > MAX_SUBMITTED_SPEC_BYTES:
                message = f"The job spec is over {MAX_SUBMITTED_SPEC_BYTES} bytes."
                return _refusal(message, "config", 413)
        try:
            spec = loads_jobspec(body.decode("utf-8"), source="the job spec")
        except UnicodeDecodeError:
            return _refusal("The job spec is not UTF-8 text.", "config")
        except ConfigError as exc:
            return _refusal(str(exc), "config")
        if ctx.chain is None:
            return _refusal("This node is offline; a job needs a chain.", "node")
        chain = ctx.chain
        try:
            submitted = await asyncio.to_thread(
                publish_job, spec, jobs=chain.jobs, registry=chain.registry,
                owner=ctx.address, store=ctx.store, state=ctx.state, home=ctx.home,
            )  # fmt: skip
        except ConfigError as exc:
            return _refusal(str(exc), "config")
        except AllmendeError as exc:
            return _refusal(str(exc), "node")
        return JSONResponse(asdict(submitted))

    return Starlette(routes=[Route("/v1/jobs", submit, methods=["POST"])])


def _refusal(message: str, kind: str, status: int = 400) -> JSONResponse:
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message, "kind": kind}, status_code=status)


def submit_through_node(home: Path, spec_text: str) -> SubmittedJob | None:
    """Have the running node at ``home`` submit the job; None when no node listens there.

    A refusal by the node raises :class:`ConfigError` (the spec) or :class:`NodeError`.
    """
    if not (home / CONTROL_SOCKET).is_socket():
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with socket_path(home) as path:
        try:
            sock.connect(path)
        except OSError:
            sock.close()
            return None  # a stale socket: the node is not running
    sock.settimeout(SUBMIT_TIMEOUT_SECONDS)
    connection = _ControlConnection(sock)
    try:
        # The node may answer and close before it read all of the request (a refusal, such as
        # 413 for a spec over its limit): the send then fails, but the answer waits in the
        # socket, so it is read all the same.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            connection.request("POST", "/v1/jobs", body=spec_text.encode(),
                               headers={"content-type": "application/toml"})  # fmt: skip
        response = connection.getresponse()
        status, body = response.status, response.read(MAX_ANSWER_BYTES)
    except (OSError, http.client.HTTPException) as exc:
        raise NodeError(
            f"The node at {home} did not answer the job submission ({exc!r}); check its "
            "node.log, then look with `allmende job show` whether the job was created before "
            "submitting again."
        ) from None
    finally:
        connection.close()
    try:
        answer = json.loads(body)
    except ValueError:
        answer = {}
    if not isinstance(answer, dict):
        answer = {}
    if status != 200:
        message = answer.get("error") or f"HTTP {status}"
        raise (ConfigError if answer.get("kind") == "config" else NodeError)(message)
    try:
        return SubmittedJob(**answer)
    except TypeError:
        raise NodeError(
            f"The node at {home} answered the job submission with {body[:200]!r}, not a job; "
            "look with `allmende job show` whether the job was created."
        ) from None


class _ControlConnection(http.client.HTTPConnection):
    """HTTP/1.1 over an already connected control socket. The standard library's client keeps
    a submission light: no TLS set-up and no third-party imports in the command."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__("node", timeout=SUBMIT_TIMEOUT_SECONDS)
        self.sock = sock
