"""The peer client: fetch blobs by hash from whichever peer has them, post signed messages.

Blobs from ``http://`` peers come through :class:`~allmende.net.plainhttp.PlainHttp`; HTTPS
peers and messages go through httpx. Both contact a peer only as the client's
:class:`~allmende.net.endpoints.EndpointPolicy` allows: its URL is checked before any request,
and its host is resolved and every address checked when connecting, and the connection is made
to those checked addresses (httpx through :class:`_PolicyBackend`), so a name that resolves to an
internal address is refused too. A refused peer is a ``refused`` peer fault; nothing is sent.

A fetch tries the candidate peers in order and moves on at the first error, timeout, oversized
body or wrong hash. Besides the per-read timeout, a download from one peer is held to a
:class:`FetchPace`: a whole-download deadline and a minimum rate over a sliding window, so a
peer that trickles a byte now and then is dropped too. Bytes are hashed as they arrive and
written to a temporary file in the store, which is renamed into place only when the hash
matches, so a whole blob is never held in memory and a half-received or forged blob is never
visible. A peer that fails (or is too slow) is recorded in the state database (``peer_faults``)
and counted in ``allmende_peer_faults``, and tried after the others for
:data:`FAULT_MEMORY_SECONDS`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import ssl
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from allmende import __version__
from allmende.errors import BlobTooLarge, HashMismatch, PeerError
from allmende.net.endpoints import EndpointPolicy, EndpointRefused
from allmende.net.limits import (
    DEFAULT_FETCH_DEADLINE_SECONDS,
    DEFAULT_FETCH_MIN_BYTES_PER_SECOND,
    DEFAULT_FETCH_RATE_WINDOW_SECONDS,
    DEFAULT_MESSAGE_TTL_SECONDS,
)
from allmende.net.messages import MessageDomain, sign_message
from allmende.net.metrics import NodeMetrics
from allmende.net.plainhttp import PlainHttp, PlainHttpError
from allmende.store.blobs import BlobStore, check_digest
from allmende.store.state import StateDB

log = logging.getLogger(__name__)

# Connect quickly or try the next peer; between two received chunks, wait at most read seconds.
# A slow link with big blobs needs a longer read timeout, never a longer connect timeout.
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
# A peer that failed a download (or was too slow) is tried after the others for this long.
FAULT_MEMORY_SECONDS = 600.0
# The pace of a download is looked at this many times per rate window.
PACE_CHECKS_PER_WINDOW = 4


@dataclass(frozen=True)
class FetchPace:
    """How long a blob download from one peer may take and how slow it may get; see the
    ``[net]`` config section. ``min_bytes_per_second`` 0 turns the rate check off."""

    deadline_seconds: float = DEFAULT_FETCH_DEADLINE_SECONDS
    min_bytes_per_second: int = DEFAULT_FETCH_MIN_BYTES_PER_SECOND
    window_seconds: float = DEFAULT_FETCH_RATE_WINDOW_SECONDS


@dataclass(frozen=True)
class FetchResult:
    """A blob that is now in the local store, and where it came from (None: it was local)."""

    digest: str
    size: int
    peer: str | None


@functools.cache
def tls_context() -> ssl.SSLContext:
    """How peers' TLS certificates are checked (httpx's defaults), made once per process:
    loading the CA bundle takes tens of milliseconds. The launcher of several nodes makes it
    before forking them, so they share it."""
    return httpx.create_ssl_context()


class _PolicyBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend connecting only to addresses ``policy`` allows: it resolves the
    host itself and connects to the checked addresses (TLS still checks the host's name)."""

    def __init__(self, policy: EndpointPolicy) -> None:
        self.policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        error: Exception = httpcore.ConnectError(f"{host} resolved to no address")
        for address in await self.policy.resolve(host, port):
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        raise error

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.AsyncNetworkStream:
        raise EndpointRefused("Peers are reached over TCP only, never a local socket.")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _PolicyTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with its connection pool on a :class:`_PolicyBackend`."""

    def __init__(self, policy: EndpointPolicy) -> None:
        super().__init__(verify=tls_context())
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)  # httpx's own
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=tls_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_PolicyBackend(policy),
        )


class PeerClient:
    """Talks to other nodes for this one; one instance per node, closed with :meth:`aclose`.

    ``policy`` says which endpoints may be contacted (default: public addresses only; a devnet
    node's config allows loopback). ``account`` and ``domain`` are needed only to post messages;
    ``state`` and ``metrics`` only to record peers that misbehave. A test's ``transport`` sees
    every request instead of the network (the URL checks still apply).
    """

    def __init__(
        self,
        store: BlobStore,
        *,
        state: StateDB | None = None,
        metrics: NodeMetrics | None = None,
        account: Any = None,
        domain: MessageDomain | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        pace: FetchPace = FetchPace(),
        policy: EndpointPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.store = store
        self.pace = pace
        self.policy = policy or EndpointPolicy()
        self.state = state
        self.metrics = metrics
        self.account = account
        self.domain = domain
        headers = {"user-agent": f"allmende/{__version__}"}
        self._http = httpx.AsyncClient(
            timeout=timeout,
            headers=headers,
            follow_redirects=False,
            transport=transport or _PolicyTransport(self.policy),
        )
        # Blob downloads from http:// peers; a test's own transport sees every request instead.
        self._plain = (
            PlainHttp(
                connect_timeout=timeout.connect or DEFAULT_TIMEOUT.connect or 5.0,
                read_timeout=timeout.read or DEFAULT_TIMEOUT.read or 30.0,
                headers=headers,
                resolve=self.policy.resolve,
            )
            if transport is None
            else None
        )
        self._fetching: dict[str, asyncio.Lock] = {}
        self._faulted: dict[str, float] = {}  # peer -> time.monotonic() of its last fault

    async def aclose(self) -> None:
        """Close the connection pools."""
        await self._http.aclose()
        if self._plain is not None:
            await self._plain.aclose()

    async def __aenter__(self) -> PeerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def fetch_blob(
        self, digest: str, peers: Sequence[str], *, max_bytes: int | None = None
    ) -> FetchResult:
        """Get blob ``digest`` into the local store from the first peer that serves it right.

        ``peers`` are base URLs (``http://host:port``), tried in order, except that peers which
        failed lately go last. Returns at once when the blob is already stored. Raises
        :class:`PeerError` listing what went wrong with each peer when none did.
        """
        check_digest(digest)
        lock = self._fetching.setdefault(digest, asyncio.Lock())
        try:
            async with lock:  # two roles asking for one blob download it once
                if self.store.has(digest):
                    return FetchResult(digest, self.store.size(digest), None)
                return await self._fetch_any(digest, peers, max_bytes)
        finally:
            if not lock.locked():
                self._fetching.pop(digest, None)

    async def _fetch_any(
        self, digest: str, peers: Sequence[str], max_bytes: int | None
    ) -> FetchResult:
        failures = []
        for peer in self.by_reliability(peers):
            try:
                size = await self._fetch_from(peer, digest, max_bytes)
            except _PeerFailure as failure:
                failures.append(f"{peer}: {failure.detail}")
                if failure.kind != "not_found":
                    self.record_fault(peer, failure.kind, failure.detail)
                    self._faulted[peer] = time.monotonic()
                continue
            self._faulted.pop(peer, None)
            if self.metrics is not None:
                self.metrics.blob_bytes_fetched.inc(size)
            return FetchResult(digest, size, peer)
        tried = "; ".join(failures) or "no peers were given"
        raise PeerError(
            f"No peer served blob {digest} correctly ({tried}). Try again later or ask other "
            "participants of the job for it."
        )

    def by_reliability(self, peers: Sequence[str]) -> list[str]:
        """``peers`` in their order, those with a fault in the last :data:`FAULT_MEMORY_SECONDS`
        moved to the end (the longest ago first)."""
        now = time.monotonic()
        for peer, at in list(self._faulted.items()):
            if now - at > FAULT_MEMORY_SECONDS:
                del self._faulted[peer]
        return sorted(peers, key=lambda peer: (peer in self._faulted, self._faulted.get(peer, 0)))

    async def _fetch_from(self, peer: str, digest: str, max_bytes: int | None) -> int:
        try:
            self.policy.check_url(peer)
        except EndpointRefused as exc:
            raise _PeerFailure("refused", f"was not asked: {exc}") from None
        watch = _PaceWatch(self.pace)
        try:
            return await self._download(peer, digest, max_bytes, watch)
        except asyncio.CancelledError:
            if watch.failure is None:
                raise
            watch.task.uncancel()
            raise watch.failure from None
        finally:
            watch.stop()

    async def _download(
        self, peer: str, digest: str, max_bytes: int | None, watch: _PaceWatch
    ) -> int:
        url = f"{peer.rstrip('/')}/v1/blobs/{digest}"
        # a copy: a peer has it, so a crash may lose it (see BlobStore.writer)
        with self.store.writer(digest, max_bytes=max_bytes, durable=False) as writer:

            def check_answer(status: int, headers: Mapping[str, str]) -> None:
                if status == 404:
                    raise _PeerFailure("not_found", "does not have it (404)")
                if status != 200:
                    raise _PeerFailure("http", f"answered HTTP {status}")
                declared = headers.get("content-length", "")
                if declared.isdigit() and int(declared) > writer.max_bytes:
                    raise _PeerFailure(
                        "size", f"announced {declared} bytes, over the limit {writer.max_bytes}"
                    )

            def on_body(piece: bytes | memoryview) -> None:
                watch.received += len(piece)
                writer.write(piece)

            try:
                if self._plain is not None and url.startswith("http://"):
                    await self._plain.get(url, check_answer, on_body)
                else:
                    async with self._http.stream("GET", url) as response:
                        check_answer(response.status_code, response.headers)
                        async for chunk in response.aiter_raw():
                            on_body(chunk)
                if watch.failure is not None:  # the cancel came as the download ended
                    watch.task.uncancel()
                writer.commit()
                return writer.size
            except HashMismatch as exc:
                raise _PeerFailure("hash", f"served wrong bytes: {exc}") from None
            except BlobTooLarge as exc:
                raise _PeerFailure("size", f"sent too much: {exc}") from None
            except EndpointRefused as exc:
                raise _PeerFailure("refused", f"was not asked: {exc}") from None
            except PlainHttpError as exc:
                raise _PeerFailure(exc.kind, f"failed: {exc.detail}") from None
            except httpx.TimeoutException as exc:
                raise _PeerFailure("timeout", f"timed out ({type(exc).__name__})") from None
            except httpx.HTTPError as exc:
                raise _PeerFailure("unreachable", f"failed: {type(exc).__name__}: {exc}") from None

    def record_fault(self, peer: str, kind: str, detail: str) -> None:
        """Log a peer's misbehaviour, count it and record it in the state database."""
        log.warning("Peer %s %s", peer, detail)
        if self.metrics is not None:
            self.metrics.peer_faults.labels(kind).inc()
        if self.state is not None:
            self.state.record_peer_fault(peer, kind, detail)

    async def post_message(
        self,
        peer: str,
        *,
        recipient: str,
        kind: str,
        payload: dict[str, Any],
        ttl_seconds: int = DEFAULT_MESSAGE_TTL_SECONDS,
        max_reply_bytes: int | None = None,
    ) -> Any:
        """Sign a message to ``recipient`` (the peer's address) and post it; the handler's reply.

        Raises :class:`PeerError` when the peer is unreachable or refuses the message (with the
        peer's reason), or its answer is longer than ``max_reply_bytes`` (read no further).
        """
        if self.account is None or self.domain is None:
            raise PeerError("This peer client has no key or domain; it cannot sign messages.")
        message = sign_message(
            self.account,
            self.domain,
            kind=kind,
            payload=payload,
            recipient=recipient,
            ttl_seconds=ttl_seconds,
        )
        url = f"{peer.rstrip('/')}/v1/messages"
        try:
            self.policy.check_url(peer)
            request = self._http.build_request(
                "POST",
                url,
                content=message.model_dump_json(),
                headers={"content-type": "application/json"},
            )
            response = await self._http.send(request, stream=True)
            try:
                content = bytearray()
                async for piece in response.aiter_bytes():
                    content += piece
                    if max_reply_bytes is not None and len(content) > max_reply_bytes:
                        raise PeerError(
                            f"Peer {peer} answered the {kind!r} message with more than "
                            f"{max_reply_bytes} bytes; the answer is refused."
                        )
            finally:
                await response.aclose()
        except EndpointRefused as exc:
            self.record_fault(peer, "refused", f"was not sent a message: {exc}")
            raise PeerError(f"Not sending a {kind!r} message to {peer}: {exc}") from None
        except httpx.HTTPError as exc:
            self.record_fault(peer, "unreachable", f"failed: {type(exc).__name__}: {exc}")
            raise PeerError(f"Cannot deliver a {kind!r} message to {peer}: {exc}.") from None
        try:
            body = json.loads(bytes(content))
        except ValueError:
            body = None
        if response.status_code != 200 or not isinstance(body, dict):
            reason = (
                body.get("detail") if isinstance(body, dict)
                else bytes(content[:200]).decode(errors="replace")
            )  # fmt: skip
            raise PeerError(
                f"Peer {peer} refused the {kind!r} message (HTTP {response.status_code}): {reason}"
            )
        return body.get("reply")

    async def info(self, peer: str) -> dict[str, Any]:
        """A peer's ``GET /v1/info`` (untrusted: it says what the peer claims)."""
        try:
            self.policy.check_url(peer)
            response = await self._http.get(f"{peer.rstrip('/')}/v1/info")
            response.raise_for_status()
            body = response.json()
        except EndpointRefused as exc:
            raise PeerError(f"Not asking peer {peer} for its info: {exc}") from None
        except (httpx.HTTPError, ValueError) as exc:
            raise PeerError(f"Cannot read the info of peer {peer}: {exc}.") from None
        if not isinstance(body, dict):
            raise PeerError(f"Peer {peer} answered /v1/info with something other than an object.")
        return body


class _PeerFailure(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


class _PaceWatch:
    """Holds the current task's download from one peer to a :class:`FetchPace`.

    A timer looks at the bytes received (``received``, counted by the download) every
    ``window / PACE_CHECKS_PER_WINDOW`` seconds; past the deadline, or below the rate over the
    last window, it cancels the task and keeps the reason in ``failure``. A stalled read is
    cut off too, as it would be by :func:`asyncio.timeout`.
    """

    def __init__(self, pace: FetchPace) -> None:
        self.pace = pace
        self.loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None, "a download runs in a task"
        self.task = task
        self.received = 0
        self.failure: _PeerFailure | None = None
        self.started = self.loop.time()
        self._samples: deque[tuple[float, int]] = deque([(self.started, 0)])
        self._timer = self.loop.call_at(self._next_check(self.started), self._check)

    def stop(self) -> None:
        self._timer.cancel()

    def _next_check(self, now: float) -> float:
        every = self.pace.window_seconds / PACE_CHECKS_PER_WINDOW
        return min(now + every, self.started + self.pace.deadline_seconds)

    def _check(self) -> None:
        now = self.loop.time()
        self.failure = self._verdict(now)
        if self.failure is not None:
            self.task.cancel()
            return
        self._timer = self.loop.call_at(self._next_check(now), self._check)

    def _verdict(self, now: float) -> _PeerFailure | None:
        if now - self.started >= self.pace.deadline_seconds:
            return _PeerFailure(
                "timeout",
                f"did not finish in {self.pace.deadline_seconds:g} s (sent {self.received} bytes)",
            )
        self._samples.append((now, self.received))
        # the newest sample at least one window old is where the window starts
        while len(self._samples) > 1 and now - self._samples[1][0] >= self.pace.window_seconds:
            self._samples.popleft()
        since, then = self._samples[0]
        span = now - since
        if span < self.pace.window_seconds:  # not one window in yet
            return None
        sent = self.received - then
        if sent < self.pace.min_bytes_per_second * span:
            return _PeerFailure(
                "slow",
                f"sent {sent} bytes in the last {span:.1f} s, below the minimum of "
                f"{self.pace.min_bytes_per_second} bytes/s",
            )
        return None
