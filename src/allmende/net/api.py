"""The node's HTTP API (FastAPI): info, blobs, signed messages, metrics, health.

========================  ===============================================================
``GET /v1/info``          address, roles, software version, chain id, Registry address
``GET|HEAD /v1/blobs/h``  a stored blob, streamed; ``Range`` requests supported
``POST /v1/messages``     an EIP-712 :class:`~allmende.net.messages.SignedMessage`
``GET /metrics``          Prometheus text format
``GET /healthz``          ``{"status": "ok", "ready": bool}``; ready once the roles have
                          loaded what they need and follow the chain
========================  ===============================================================

Blobs are only served, never uploaded: peers pull what they need by hash, and local tools put
blobs into their own node's store directly (``allmende node put``). A full ``GET`` re-hashes the
blob while it streams (a large one goes out with ``sendfile``, :mod:`allmende.net.zerocopy`, and
is not hashed again if this node hashed it within the store's ``recheck_seconds``); a blob found
corrupted is quarantined (the next request gets 404) and the peer, which checks the hash
itself, fetches it elsewhere. ``Range`` and ``HEAD`` are served from
the file without hashing (a ranged reader checks the hash of the whole when it has it).

Every refusal is a 4xx JSON body ``{"detail": "..."}`` saying what was wrong; an unexpected error
is logged and answered with a JSON 500, and the node keeps serving. A message's nonce is written
to the state database in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse

from allmende import __version__
from allmende.errors import (
    AllmendeError,
    BlobNameError,
    BlobNotFound,
    HashMismatch,
    MessageError,
    StoreError,
)
from allmende.net.fairshare import SENDFILE_EXTENSION
from allmende.net.limits import DEFAULT_MAX_MESSAGE_BYTES, MAX_MESSAGE_TTL_SECONDS
from allmende.net.messages import (
    MessageDomain,
    SignedMessage,
    parse_message,
    verify_signature,
)
from allmende.net.metrics import NodeMetrics
from allmende.net.signers import SignerCheck
from allmende.net.zerocopy import SendOutcome
from allmende.store.blobs import BlobStore
from allmende.store.state import StateDB

log = logging.getLogger(__name__)

# A full GET streams the blob in pieces of this size. A response its peer does not read holds
# about one piece in memory until the peer reads or leaves, so pieces stay small: 1,000 stalled
# downloads then cost ~120 MiB instead of gigabytes (tests/faults/test_resources.py).
SERVE_CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class NodeIdentity:
    """What ``GET /v1/info`` reports, and what messages must be addressed to."""

    address: str
    roles: list[str]
    domain: MessageDomain
    version: str = __version__


@dataclass(frozen=True)
class VerifiedMessage:
    """A message whose signature, expiry, recipient, sender registration and nonce were checked."""

    sender: str
    kind: str
    payload: dict[str, Any]
    nonce: int
    expiry: int


MessageHandler = Callable[[VerifiedMessage], Awaitable[dict[str, Any] | None]]


@dataclass
class MessageRouter:
    """Handlers of message kinds; roles register theirs (``router.register("round.ready", f)``).
    The aggregator registers secure aggregation's board (:mod:`allmende.node.roles.secure`).

    A handler gets a :class:`VerifiedMessage` and returns a JSON-able reply (or None); raising
    :class:`~allmende.errors.AllmendeError` refuses the message with a 400 and the error's text.
    """

    handlers: dict[str, MessageHandler] = field(default_factory=dict)

    def register(self, kind: str, handler: MessageHandler) -> None:
        """Route messages of ``kind`` to ``handler`` (one handler a kind)."""
        if kind in self.handlers:
            raise ValueError(f"A handler for message kind {kind!r} is already registered.")
        self.handlers[kind] = handler


async def _ping(message: VerifiedMessage) -> dict[str, Any]:
    return {"pong": message.payload}


@dataclass
class ApiSettings:
    """Limits of the API; see the ``[net]`` config section."""

    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_message_ttl_seconds: int = MAX_MESSAGE_TTL_SECONDS


def create_app(
    *,
    identity: NodeIdentity,
    store: BlobStore,
    state: StateDB,
    signers: SignerCheck,
    router: MessageRouter,
    metrics: NodeMetrics,
    settings: ApiSettings | None = None,
    ready: Callable[[], bool] = lambda: True,
) -> FastAPI:
    """The node's FastAPI app over its store, state and identity; ``ready`` says whether the
    node's roles are ready for jobs (``/healthz``)."""
    limits = settings or ApiSettings()
    if "ping" not in router.handlers:
        router.register("ping", _ping)
    app = FastAPI(title="Allmende node", version=__version__)

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        metrics.internal_errors.inc()
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse(
            {"detail": f"The node failed unexpectedly ({type(exc).__name__}); see its log."},
            status_code=500,
        )

    @app.get("/v1/info")
    async def info() -> dict[str, Any]:
        """This node's address, roles, software version and chain."""
        return {
            "address": identity.address,
            "roles": identity.roles,
            "version": identity.version,
            "chain_id": identity.domain.chain_id,
            "registry": identity.domain.registry,
        }

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness (the process serves requests) and readiness (its roles are ready)."""
        return {"status": "ok", "ready": ready()}

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Prometheus metrics."""
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.head("/v1/blobs/{digest}", response_model=None)
    async def head_blob(digest: str, request: Request) -> Response:
        """Whether a blob is stored, and its size (``Content-Length``)."""
        return await get_blob(digest, request)

    @app.get("/v1/blobs/{digest}", response_model=None)
    async def get_blob(digest: str, request: Request) -> Response:
        """A stored blob by its SHA-256 (hex); streamed, hash-checked, Range supported."""
        try:
            path = store.path(digest)
            size = store.size(digest)
        except BlobNameError as exc:
            metrics.blob_requests.labels("bad_name").inc()
            raise HTTPException(400, str(exc)) from None
        except BlobNotFound as exc:
            metrics.blob_requests.labels("not_found").inc()
            raise HTTPException(404, str(exc)) from None
        metrics.blob_requests.labels("served").inc()
        if request.method == "HEAD" or "range" in request.headers:
            return FileResponse(path, media_type="application/octet-stream")
        if size <= SERVE_CHUNK_BYTES:  # one piece: hash-checked before it goes out, in one go
            return _whole_blob(store, digest, metrics)
        return StreamingResponse(
            _verified_chunks(store, digest, metrics),
            media_type="application/octet-stream",
            headers={"Content-Length": str(size), "Accept-Ranges": "bytes"},
        )

    @app.post(
        "/v1/messages",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": SignedMessage.model_json_schema()}},
            }
        },
    )
    async def post_message(request: Request) -> dict[str, Any]:
        """Accept an EIP-712 message signed by a registered node; reply with its handler's."""
        body = await _read_limited(request, limits.max_message_bytes, metrics)
        message = _checked(400, "malformed", metrics, lambda: parse_message(body))
        _checked(
            401,
            "bad_signature",
            metrics,
            lambda: verify_signature(
                message,
                identity.domain,
                recipient=identity.address,
                max_ttl_seconds=limits.max_message_ttl_seconds,
            ),
        )
        try:
            registered = await signers.is_registered(message.sender)
        except AllmendeError as exc:
            metrics.messages.labels("registry_unavailable").inc()
            raise HTTPException(503, f"Cannot check the sender's registration now: {exc}") from None
        if not registered:
            metrics.messages.labels("unregistered").inc()
            raise HTTPException(
                403,
                f"Sender {message.sender} is not a registered node; register it on the Registry "
                "before sending messages.",
            )
        handler = router.handlers.get(message.kind)
        if handler is None:
            metrics.messages.labels("unknown_kind").inc()
            raise HTTPException(400, f"This node has no handler for message kind {message.kind!r}.")
        # A disk write: in a worker thread (the connection is shared under the state's lock),
        # so a slow disk or a locked database stalls this request only, never the event loop.
        try:
            fresh = await asyncio.to_thread(
                state.remember_nonce, message.sender, message.nonce, message.expiry
            )
        except StoreError as exc:
            metrics.messages.labels("state_unavailable").inc()
            raise HTTPException(503, f"Cannot record the message's nonce now: {exc}") from None
        if not fresh:
            metrics.messages.labels("replayed").inc()
            raise HTTPException(
                409,
                f"Nonce {message.nonce} of {message.sender} was already used; this is a "
                "replay. Sign a new message with a fresh nonce.",
            )
        verified = VerifiedMessage(
            sender=message.sender,
            kind=message.kind,
            payload=message.payload,
            nonce=message.nonce,
            expiry=message.expiry,
        )
        try:
            reply = await handler(verified)
        except AllmendeError as exc:
            metrics.messages.labels("refused_by_handler").inc()
            raise HTTPException(400, str(exc)) from None
        metrics.messages.labels("accepted").inc()
        return {"accepted": True, "reply": reply}

    return app


def _whole_blob(store: BlobStore, digest: str, metrics: NodeMetrics) -> Response:
    """A small blob as one response (see :func:`_read_whole`)."""
    body = _read_whole(store, digest, metrics)
    return Response(body, media_type="application/octet-stream", headers={"Accept-Ranges": "bytes"})


def _read_whole(store: BlobStore, digest: str, metrics: NodeMetrics) -> bytes:
    """A small blob's bytes, checked first: a blob that rotted on disk is quarantined and
    answered with 404, so the peer asks another node (a streamed blob is checked at its end,
    and the peer's own check refuses it)."""
    try:
        body = store.read_bytes(digest)
    except HashMismatch as exc:
        metrics.corrupt_blobs.inc()
        log.warning("%s", exc)
        raise HTTPException(
            404,
            f"Blob {digest} was corrupted on this node's disk and is quarantined; ask "
            "another peer.",
        ) from None
    except BlobNotFound as exc:  # deleted (e.g. by gc) between the size check and the read
        raise HTTPException(404, str(exc)) from None
    metrics.blob_bytes_served.inc(len(body))
    return body


ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
                   Awaitable[None]]  # fmt: skip
BLOB_PATH = "/v1/blobs/"


def direct_blob_gets(app: ASGIApp, *, store: BlobStore, metrics: NodeMetrics) -> ASGIApp:
    """``app`` with whole-blob ``GET``s answered before FastAPI sees them.

    Every round each trainer downloads the model and the aggregator every update, all blobs
    under :data:`SERVE_CHUNK_BYTES`; FastAPI's routing, middleware and response classes cost
    more CPU per such request than reading and hashing the blob. The answer is the route's
    own: the same bytes, headers, hash check, quarantine and metrics. A larger blob goes out
    with ``sendfile`` where the server offers it (:data:`SENDFILE_EXTENSION`,
    :mod:`allmende.net.zerocopy`): hashed as it is sent, as the streamed route hashes it.
    Anything else (``HEAD``, ``Range``, a bad name, a missing blob, other paths, a large blob
    when no send thread is free) goes to ``app``.
    """

    async def serve(
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and scope["path"].startswith(BLOB_PATH)
            and not any(name == b"range" for name, _ in scope["headers"])
        ):
            digest = scope["path"][len(BLOB_PATH) :]
            if _small_blob(store, digest):
                metrics.blob_requests.labels("served").inc()
                try:
                    body = _read_whole(store, digest, metrics)
                    status, headers = (
                        200,
                        [
                            (b"content-type", b"application/octet-stream"),
                            (b"accept-ranges", b"bytes"),
                        ],
                    )
                except HTTPException as exc:
                    body = json.dumps({"detail": exc.detail}).encode()
                    status, headers = exc.status_code, [(b"content-type", b"application/json")]
                headers.append((b"content-length", str(len(body)).encode()))
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
            sendfile = scope.get("extensions", {}).get(SENDFILE_EXTENSION)
            if sendfile is not None and await _send_large(store, digest, metrics, send, sendfile):
                return
        await app(scope, receive, send)

    return serve


async def _send_large(
    store: BlobStore,
    digest: str,
    metrics: NodeMetrics,
    send: Callable[[Any], Awaitable[None]],
    sendfile: Callable[..., Awaitable[SendOutcome | None]],
) -> bool:
    """Serve stored blob ``digest`` with ``sendfile``; False, with nothing sent, when it is not
    stored, not a valid name, or ``sendfile`` declines (the route then answers)."""
    try:
        path, size = store.path(digest), store.size(digest)
    except (BlobNameError, BlobNotFound):
        return False
    headers = [
        (b"content-type", b"application/octet-stream"),
        (b"content-length", str(size).encode()),
        (b"accept-ranges", b"bytes"),
    ]
    served = metrics.blob_requests.labels("served").inc
    verify = not store.checked_lately(digest)  # hashed by this node lately: not again
    outcome = await sendfile(send, headers, path, size, served, verify)
    if outcome is None:
        return False
    metrics.blob_bytes_served.inc(outcome.sent)
    if outcome.digest is not None and outcome.digest != digest:
        metrics.corrupt_blobs.inc()  # every byte is sent already; the peer refuses them
        log.warning("%s", store.quarantine(digest, outcome.digest))
    elif outcome.digest == digest:
        store.checked(digest)
    return True


def _small_blob(store: BlobStore, digest: str) -> bool:
    """Whether ``digest`` names a stored blob of one serving piece at most."""
    try:
        return store.size(digest) <= SERVE_CHUNK_BYTES
    except (BlobNameError, BlobNotFound):  # the route answers these (400, 404)
        return False


async def _verified_chunks(
    store: BlobStore, digest: str, metrics: NodeMetrics
) -> AsyncIterator[bytes]:
    """The blob's pieces, hashed as they go out. Reading and hashing one piece takes a fraction
    of a millisecond, so it runs on the event loop: a worker-thread hop per piece (what a plain
    iterator costs in Starlette) made serving about a third slower (benchmarks/blobs.py).

    After each piece the generator yields to the event loop. Sending to a peer that hung up
    returns at once without suspending, so without that pause the response would never see
    the disconnect: it would read and hash the rest of the blob for nobody, and hold up every
    other request while it did."""
    try:
        for chunk in store.iter_verified(digest, chunk_bytes=SERVE_CHUNK_BYTES):
            metrics.blob_bytes_served.inc(len(chunk))
            yield chunk
            await asyncio.sleep(0)
    except HashMismatch as exc:  # every byte is sent already; the peer's own check refuses them
        metrics.corrupt_blobs.inc()
        log.warning("%s", exc)
    except BlobNotFound:  # deleted (e.g. by gc) between the size check and the open
        log.warning("Blob %s vanished while being served.", digest)


async def _read_limited(request: Request, limit: int, metrics: NodeMetrics) -> bytes:
    too_large = HTTPException(413, f"The message body exceeds {limit} bytes; send a smaller one.")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        metrics.messages.labels("too_large").inc()
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            metrics.messages.labels("too_large").inc()
            raise too_large
    return bytes(body)


def _checked(status: int, outcome: str, metrics: NodeMetrics, check: Callable[[], Any]) -> Any:
    try:
        return check()
    except MessageError as exc:
        metrics.messages.labels(outcome).inc()
        raise HTTPException(status, str(exc)) from None
