"""The node's control socket, ``HOME/node.sock``: requests from the node's own operator.

A running node listens on a Unix socket in its home, readable and writable by its owner only
(mode 0600), so only someone who can already read the node's key can use it. Through it the
light command line hands work to the node, which has torch, the task code, its key and the chain
connection loaded already: ``allmende job submit`` sends the job spec there and returns in well
under a second instead of importing all of that first. When no node listens (it is not running,
or the socket could not be made), the command does the work in its own process, as before.

``POST /v1/jobs``, body the job spec (TOML, at most :data:`MAX_SPEC_BYTES`): publish the spec
and the initial model in the node's store and create the job with the node's key. Answers 200
with the :class:`SubmittedJob` as JSON, or 400 with ``{"error": message, "kind": "config" or
"node"}`` (413 for a larger body).

Unix socket paths are limited to about 100 bytes; the path is given through the home's
directory descriptor (``/proc/self/fd/N/node.sock``), so a node home may be anywhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from allmende.errors import ConfigError, NodeError

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    from allmende.node.process import NodeContext

CONTROL_SOCKET = "node.sock"
MAX_SPEC_BYTES = 64 * 1024  # a job spec is a few hundred bytes of TOML
# Creating a job sends one transaction and waits for its receipt.
SUBMIT_TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True)
class SubmittedJob:
    """What submitting a job created."""

    job_id: int
    owner: str
    spec_hash: str
    model_hash: str
    escrow: int


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
    from allmende.node.submit import publish_job

    async def submit(request: Request) -> JSONResponse:
        body = b""
        async for piece in request.stream():
            body += piece
            if len(body) > MAX_SPEC_BYTES:
                return _refusal(f"The job spec is over {MAX_SPEC_BYTES} bytes.", "config", 413)
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
    with socket_path(home) as path:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(path)
            except OSError:
                return None  # a stale socket: the node is not running
        # A unix socket carries no TLS: without verify=False httpx would load the CA
        # certificates for nothing, tens of milliseconds of every submission.
        transport = httpx.HTTPTransport(uds=path, verify=False)
        with httpx.Client(
            transport=transport, timeout=SUBMIT_TIMEOUT_SECONDS, verify=False
        ) as client:
            try:
                response = client.post("http://node/v1/jobs", content=spec_text.encode())
            except httpx.ConnectError:
                return None  # the node stopped just now
            except httpx.HTTPError as exc:
                raise NodeError(
                    f"The node at {home} did not answer the job submission ({exc}); "
                    "check its node.log, then look with `allmende job show` whether the "
                    "job was created before submitting again."
                ) from None
    try:
        answer = response.json()
    except json.JSONDecodeError:
        answer = {}
    if response.status_code != 200:
        message = answer.get("error") or f"HTTP {response.status_code}"
        raise (ConfigError if answer.get("kind") == "config" else NodeError)(message)
    return SubmittedJob(**answer)
