"""Fair sharing of the node's HTTP server among peers: per-peer limits and a send timeout.

uvicorn's ``limit_concurrency`` (``[net] max_connections``) bounds what all peers together tie
up, but one greedy peer could take every slot and starve the rest. :func:`fair_protocol` makes
uvicorn's HTTP protocol class with three more bounds, all per peer (one IPv4 address, or one
IPv6 /64, which one host usually holds whole):

- ``max_connections_per_peer``: connections it holds open. A request on a connection past the
  limit is answered 503 and the connection closed; one that sends nothing is closed after
  :data:`EXCESS_CONNECTION_GRACE_SECONDS`.
- ``max_requests_per_peer``: requests it has in flight (a stalled download counts until it
  ends). Past it, a request is answered 503 and its connection closed.
- ``send_timeout_seconds``: a response its peer stops reading (the send buffer stays full) is
  dropped after that long without progress: the connection is aborted, so its memory and its
  slots come back.

The protocol also offers the API a zero-copy send of a large blob's body (scope extension
:data:`SENDFILE_EXTENSION`, see :mod:`allmende.net.zerocopy`): at most :data:`SENDFILE_THREADS`
such sends run at once, each in its own worker thread, held to the same send timeout; past
that, or while the connection still has bytes of an earlier answer to send, the API streams the
blob as before. The body goes around uvicorn, so the send settles uvicorn's account of the
response itself (``RequestResponseCycle.expected_content_length``; the tests in
``tests/unit/test_net_large_blobs.py`` run it on the real server).

A 503 carries ``{"detail": ...}`` saying which limit was hit and ``Retry-After``. Refusals and
dropped sends are counted in ``allmende_peer_limit_refusals`` and
``allmende_stalled_sends_dropped``.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import logging
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from allmende.net.limits import (
    DEFAULT_MAX_CONNECTIONS_PER_PEER,
    DEFAULT_MAX_REQUESTS_PER_PEER,
    DEFAULT_SEND_TIMEOUT_SECONDS,
)
from allmende.net.metrics import NodeMetrics
from allmende.net.zerocopy import SendOutcome, send_blob

log = logging.getLogger(__name__)

# A connection past its peer's limit that sends no request within this long is closed.
EXCESS_CONNECTION_GRACE_SECONDS = 1.0
# A stalled send is looked at this many times per send timeout.
STALL_CHECKS_PER_TIMEOUT = 4
RETRY_AFTER_SECONDS = 1
# Zero-copy blob sends running at once (each holds a worker thread while its peer reads).
SENDFILE_THREADS = 8
# await scope["extensions"][SENDFILE_EXTENSION](send, headers, path, size, started, verify): a 200
# response with the file as its body; None, with nothing sent, when it cannot be (then answer
# as usual).
SENDFILE_EXTENSION = "allmende.sendfile"


@dataclass(frozen=True)
class PeerLimits:
    """Per-peer bounds of the API server; see the ``[net]`` config section."""

    max_connections_per_peer: int = DEFAULT_MAX_CONNECTIONS_PER_PEER
    max_requests_per_peer: int = DEFAULT_MAX_REQUESTS_PER_PEER
    send_timeout_seconds: float = DEFAULT_SEND_TIMEOUT_SECONDS


@dataclass
class PeerTable:
    """Open connections and requests in flight per peer, shared by one server's connections."""

    connections: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)

    @staticmethod
    def _drop(counts: Counter[str], peer: str) -> None:
        counts[peer] -= 1
        if counts[peer] <= 0:
            del counts[peer]


def peer_of(host: str) -> str:
    """The peer a remote address belongs to: an IPv4 address, or an IPv6 address's /64."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def fair_protocol(
    limits: PeerLimits, *, metrics: NodeMetrics | None = None
) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with ``limits`` on every peer; pass it as ``http=``. Its
    ``table`` attribute is the live :class:`PeerTable`."""

    class FairHttpProtocol(_FairHttpProtocol):
        pass

    FairHttpProtocol.limits = limits
    FairHttpProtocol.table = PeerTable()
    FairHttpProtocol.metrics = metrics
    FairHttpProtocol.senders = _Senders()
    return FairHttpProtocol


class _Senders:
    """The worker threads of one server's zero-copy sends, and how many are taken."""

    def __init__(self, threads: int = SENDFILE_THREADS) -> None:
        self.threads = threads
        self.busy = 0
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="allmende-sendfile")


class _FairHttpProtocol(HttpToolsProtocol):
    """One connection: counted against its peer, its requests gated, its sends watched."""

    limits: PeerLimits
    table: PeerTable
    metrics: NodeMetrics | None
    senders: _Senders

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._app = self.app
        self.app = self._gate
        self._peer: str | None = None
        self._excess = False
        self._excess_timer: asyncio.TimerHandle | None = None
        self._stall_timer: asyncio.TimerHandle | None = None
        self._buffered = 0
        self._progressed = False
        self._stalled_since = 0.0
        self._send_stops: set[threading.Event] = set()

    # connection accounting

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        if self.client is None:  # not an IP connection (a Unix socket): nothing to share
            return
        self._peer = peer_of(self.client[0])
        self.table.connections[self._peer] += 1
        if self.table.connections[self._peer] > self.limits.max_connections_per_peer:
            self._excess = True
            self._excess_timer = self.loop.call_later(
                EXCESS_CONNECTION_GRACE_SECONDS, self._close_silent_excess
            )

    def connection_lost(self, exc: Exception | None) -> None:
        if self._peer is not None:
            PeerTable._drop(self.table.connections, self._peer)
            self._peer = None
        for timer in (self._excess_timer, self._stall_timer):
            if timer is not None:
                timer.cancel()
        for stop in self._send_stops:  # a zero-copy send in flight stops at its next step
            stop.set()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._excess_timer is not None:
            self._excess_timer.cancel()
            self._excess_timer = None
        super().data_received(data)

    def _close_silent_excess(self) -> None:
        self._excess_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    # request gate

    async def _gate(self, scope: Any, receive: Any, send: Any) -> None:
        peer = self._peer
        if peer is None or scope["type"] != "http":
            return await self._app(scope, receive, send)
        if self._excess:
            self._count_refusal("connections")
            return await _refuse(
                send,
                f"This peer already holds {self.limits.max_connections_per_peer} connections "
                "to this node; reuse them or close some before opening more.",
            )
        if self.table.requests[peer] >= self.limits.max_requests_per_peer:
            self._count_refusal("requests")
            return await _refuse(
                send,
                f"This peer already has {self.limits.max_requests_per_peer} requests in "
                "flight at this node; wait for some to finish before sending more.",
            )
        scope.setdefault("extensions", {})[SENDFILE_EXTENSION] = self._send_file
        self.table.requests[peer] += 1
        try:
            await self._app(scope, receive, send)
        finally:
            PeerTable._drop(self.table.requests, peer)

    def _count_refusal(self, limit: str) -> None:
        if self.metrics is not None:
            self.metrics.peer_limit_refusals.labels(limit).inc()

    # zero-copy sends

    async def _send_file(
        self,
        send: Any,
        headers: list[tuple[bytes, bytes]],
        path: Path,
        size: int,
        started: Callable[[], None],
        verify: bool = True,
    ) -> SendOutcome | None:
        """Answer 200 with ``headers`` (which announce ``size`` bytes) and the first ``size``
        bytes of ``path`` as the body, sent from a worker thread (and hashed when ``verify``);
        ``started()`` is called once it is taken on. None, with nothing sent, when no thread
        is free or the connection is busy; the caller then answers as usual. A send that stops
        early (a stalled or gone peer) aborts the connection."""
        sock = self.transport.get_extra_info("socket")
        if (
            sock is None
            or self.senders.busy >= self.senders.threads
            or self.transport.is_closing()
            or self.transport.get_write_buffer_size() > 0
        ):
            return None
        self.senders.busy += 1
        started()
        stop = threading.Event()
        self._send_stops.add(stop)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            cycle = self.cycle
            self.flow.pause_reading()  # resumed by uvicorn once the response is complete
            if cycle.disconnected or cycle.expected_content_length != size:
                outcome = SendOutcome(0, None, "the peer left before the body")
            elif not await self._headers_sent():
                outcome = SendOutcome(0, None, "the peer read none of the headers")
            else:
                outcome = await self.loop.run_in_executor(
                    self.senders.executor,
                    functools.partial(
                        send_blob, sock.fileno(), path, size,
                        stall_seconds=self.limits.send_timeout_seconds, stop=stop,
                        verify=verify,
                    ),
                )  # fmt: skip
        finally:
            stop.set()
            self._send_stops.discard(stop)
            self.senders.busy -= 1
        cycle.expected_content_length -= outcome.sent  # the body went around uvicorn
        if outcome.failure is not None:
            log.info("Sending a blob to peer %s stopped: %s.", self._peer, outcome.failure)
            if self.metrics is not None and "read nothing" in outcome.failure:
                self.metrics.stalled_sends_dropped.inc()
            cycle.expected_content_length = 0
            self.transport.abort()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return outcome

    async def _headers_sent(self) -> bool:
        """Wait until the transport has handed everything to the kernel (the headers are
        usually gone at once); False when the peer takes nothing for the send timeout."""
        if self.transport.get_write_buffer_size() == 0:
            return True
        self.transport.set_write_buffer_limits(high=1, low=0)  # resume_writing once empty
        try:
            await asyncio.wait_for(self.flow.drain(), self.limits.send_timeout_seconds)
        except TimeoutError:
            return False
        finally:
            if not self.transport.is_closing():
                self.transport.set_write_buffer_limits()
        return self.transport.get_write_buffer_size() == 0

    # send timeout

    def pause_writing(self) -> None:
        super().pause_writing()
        self._watch_sends()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._progressed = True

    def timeout_keep_alive_handler(self) -> None:
        super().timeout_keep_alive_handler()  # closes; a full buffer still waits for its reader
        self._watch_sends()

    def _watch_sends(self) -> None:
        if self._stall_timer is not None or self.transport.get_write_buffer_size() == 0:
            return
        self._buffered = self.transport.get_write_buffer_size()
        self._progressed = False
        self._stalled_since = self.loop.time()
        self._stall_timer = self.loop.call_later(self._check_every, self._check_stall)

    @property
    def _check_every(self) -> float:
        return self.limits.send_timeout_seconds / STALL_CHECKS_PER_TIMEOUT

    def _check_stall(self) -> None:
        """Abort the connection when its peer read nothing for the send timeout."""
        self._stall_timer = None
        buffered = self.transport.get_write_buffer_size()
        if buffered == 0:  # everything went out (or the connection is gone)
            return
        now = self.loop.time()
        if self._progressed or buffered < self._buffered:
            self._progressed, self._buffered, self._stalled_since = False, buffered, now
        elif now - self._stalled_since >= self.limits.send_timeout_seconds:
            log.info(
                "Peer %s read nothing for %g s; dropping its connection.",
                self._peer,
                self.limits.send_timeout_seconds,
            )
            if self.metrics is not None:
                self.metrics.stalled_sends_dropped.inc()
            self.transport.abort()
            return
        self._stall_timer = self.loop.call_later(self._check_every, self._check_stall)


async def _refuse(send: Any, detail: str) -> None:
    """A 503 naming the limit, closing the connection."""
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
