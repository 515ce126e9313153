"""``GET`` over plain HTTP/1.1 with kept-alive connections: the fast path of blob downloads.

Every round, each trainer downloads the round's model and the aggregator downloads every
update, all small blobs from peers on ``http://`` URLs. Through httpx a download costs about
2.5 ms of CPU (its transport layers, anyio and the request and response models), ten times
what the bytes cost; on a small machine shared by many nodes that is a sizeable part of a
round. :class:`PlainHttp` writes the request line itself and parses the answer with httptools
(the C parser uvicorn serves with): status, headers, a ``Content-Length`` or chunked body, and
whether the connection may be reused. HTTPS and everything that is not a blob download still
go through httpx.

A peer is untrusted: it is connected to only at the addresses ``resolve(host, port)``
returns (the peer client's endpoint policy, :mod:`allmende.net.endpoints`), headers are
bounded (:data:`MAX_HEADER_BYTES`), every read has a timeout, a malformed answer raises
:class:`PlainHttpError`, and a connection is reused only after a complete, well-formed answer
that allows it.

A large blob is most of a round's bytes, so its body is read with as little Python as
possible: once the headers say ``Content-Length``, the rest of the body is received straight
into two reusable buffers of :data:`READ_BYTES` in turn (``recv_into``, never more than the
announced length), without the parser and without a copy per piece; a worker thread hands each
piece to ``on_body`` (which hashes and writes it, releasing the GIL) while the event loop
receives the next. Bytes past the announced length make the connection unusable for another
request. The connection is a plain non-blocking socket driven by the event loop's ``sock_*``
calls.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httptools

# One receive takes at most this much; a download holds one such buffer. Large reads keep the
# Python work per byte small, and one that fits in the cache keeps the copy, the hash and the
# write to disk of a piece fast.
READ_BYTES = 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024  # status line and headers together
MAX_IDLE_PER_PEER = 8
# Hands the pieces of raw bodies to their callbacks (one piece a download at a time).
_BODY_THREADS = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="allmende-body")


class PlainHttpError(Exception):
    """The peer could not be asked or answered wrongly; ``kind`` is ``timeout``,
    ``unreachable`` or ``protocol``."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


@dataclass
class _Answer:
    """httptools' callbacks collect one response here."""

    headers: dict[str, str] = field(default_factory=dict)
    header_bytes: int = 0
    headers_done: bool = False
    complete: bool = False
    pieces: list[bytes] = field(default_factory=list)
    body_bytes: int = 0  # body bytes the parser has passed on

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value)
        if self.header_bytes > MAX_HEADER_BYTES:
            raise PlainHttpError("protocol", f"sent over {MAX_HEADER_BYTES} bytes of headers")
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        self.pieces.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


Connection = socket.socket
OnHeaders = Callable[[int, dict[str, str]], None]
# Gets each piece of the body, in order; a memoryview is only valid during the call (its buffer
# is reused). The pieces of a Content-Length body come from a worker thread, one at a time.
OnBody = Callable[[bytes | memoryview], None]
Resolve = Callable[[str, int], Awaitable[list[str]]]


async def _as_given(host: str, port: int) -> list[str]:
    return [host]


class PlainHttp:
    """``GET`` requests to ``http://`` peers, reusing idle connections per host and port."""

    def __init__(
        self,
        *,
        connect_timeout: float,
        read_timeout: float,
        headers: dict[str, str],
        resolve: Resolve = _as_given,
    ) -> None:
        """``resolve(host, port)``: the addresses to connect to, in order (it may raise to
        refuse the host); by default the host itself, resolved by the operating system."""
        self.connect_timeout = connect_timeout
        self.resolve = resolve
        self.read_timeout = read_timeout
        self._extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self._idle: dict[tuple[str, int], list[Connection]] = {}

    async def get(self, url: str, on_headers: OnHeaders, on_body: OnBody) -> None:
        """``GET url``: ``on_headers(status, headers)`` once the headers are in (lower-case
        names), then ``on_body`` with each piece of the body. An exception from either stops
        the download (the connection is closed) and propagates."""
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise PlainHttpError("protocol", f"{url} is not a plain http:// URL")
        host, port = parts.hostname, parts.port or 80
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        request = (f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n{self._extra}\r\n").encode(
            "latin-1"
        )
        idle = self._idle.setdefault((host, port), [])
        while idle:  # an idle connection the peer closed meanwhile fails before any byte
            connection = idle.pop()
            try:
                return await self._exchange(connection, request, idle, on_headers, on_body)
            except _Stale:
                continue
        connection = await self._connect(host, port)
        try:
            return await self._exchange(connection, request, idle, on_headers, on_body)
        except _Stale:
            raise PlainHttpError("unreachable", "closed the connection without answering") from None

    async def aclose(self) -> None:
        """Close every idle connection."""
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()

    async def _connect(self, host: str, port: int) -> Connection:
        try:  # what ``resolve`` raises to refuse the host propagates as it is
            addresses = await asyncio.wait_for(self.resolve(host, port), self.connect_timeout)
        except TimeoutError:
            raise PlainHttpError("timeout", f"did not resolve in {self.connect_timeout:g} s"
                                 ) from None  # fmt: skip
        try:
            return await asyncio.wait_for(self._open(addresses, port), self.connect_timeout)
        except TimeoutError:
            raise PlainHttpError("timeout", f"did not accept a connection in "
                                 f"{self.connect_timeout:g} s") from None  # fmt: skip
        except OSError as exc:
            raise PlainHttpError("unreachable", f"{type(exc).__name__}: {exc}") from None

    async def _open(self, addresses: list[str], port: int) -> Connection:
        """A connection to the first of ``addresses`` that accepts one."""
        loop = asyncio.get_running_loop()
        error: OSError = OSError("the host resolved to no address")
        for address in addresses:
            family = socket.AF_INET6 if _is_ipv6(address) else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                await loop.sock_connect(sock, (address, port))
                return sock
            except OSError as exc:
                sock.close()
                error = exc
            except BaseException:
                sock.close()
                raise
        raise error

    async def _exchange(
        self,
        connection: Connection,
        request: bytes,
        idle: list[Connection],
        on_headers: OnHeaders,
        on_body: OnBody,
    ) -> None:
        loop = asyncio.get_running_loop()
        answer = _Answer()
        parser = httptools.HttpResponseParser(answer)
        buffer = bytearray(READ_BYTES)
        view = memoryview(buffer)
        received = 0
        status_line = b""
        reusable = raw = False
        try:
            await loop.sock_sendall(connection, request)
            reported = False
            while not answer.complete:
                count = await self._read(connection, view, received)
                if not count:
                    if received == 0:
                        raise _Stale
                    if answer.headers_done and _until_close(answer.headers):
                        break  # a body delimited by the end of the connection
                    raise PlainHttpError("unreachable", "closed the connection mid-answer")
                data = bytes(view[:count])
                if received == 0:
                    status_line = data.split(b"\r\n", 1)[0]
                received += count
                try:
                    parser.feed_data(data)
                except httptools.HttpParserUpgrade:
                    raise PlainHttpError("protocol", "asked to switch protocols") from None
                except httptools.HttpParserError as exc:
                    raise PlainHttpError("protocol", f"sent a malformed answer ({exc})") from None
                if not answer.headers_done and received > MAX_HEADER_BYTES:
                    raise PlainHttpError("protocol", f"sent over {MAX_HEADER_BYTES} bytes of "
                                         "headers")  # fmt: skip
                if answer.headers_done and not reported:
                    reported = True
                    on_headers(parser.get_status_code(), answer.headers)
                for piece in answer.pieces:
                    on_body(piece)
                answer.pieces.clear()
                length = _content_length(answer)
                if length is not None and not answer.complete:
                    received += await self._raw_body(
                        connection, view, length - answer.body_bytes, received, on_body
                    )
                    answer.complete = True  # the parser saw the headers only
                    raw = True
            # bytes past the announced body would be read as the next answer: not reusable
            reusable = (
                answer.complete
                and _keep_alive(status_line, answer.headers)
                and not (raw and _pending(connection))
            )
        except ConnectionError as exc:
            if received == 0:
                raise _Stale from None
            raise PlainHttpError("unreachable", f"{type(exc).__name__}: {exc}") from None
        finally:
            if reusable and len(idle) < MAX_IDLE_PER_PEER:
                idle.append(connection)
            else:
                connection.close()

    async def _raw_body(
        self,
        connection: Connection,
        view: memoryview,
        remaining: int,
        received: int,
        on_body: OnBody,
    ) -> int:
        """The last ``remaining`` bytes of a ``Content-Length`` body, received straight into
        two buffers in turn and passed on as views of them; never reads past the body. While
        a worker thread gives one piece to ``on_body`` (hashing and writing it, which release
        the GIL), the event loop receives the next into the other buffer. Returns the count."""
        buffers = (view, memoryview(bytearray(len(view))))
        pending: concurrent.futures.Future[None] | None = None
        done = turn = 0
        try:
            while done < remaining:
                into = buffers[turn][: min(len(view), remaining - done)]
                count = await self._read(connection, into, received + done)
                if not count:
                    raise PlainHttpError("unreachable", "closed the connection mid-answer")
                done += count
                if pending is not None:
                    await asyncio.wrap_future(pending)  # its buffer is the next one to fill
                pending = _BODY_THREADS.submit(on_body, into[:count])
                turn = 1 - turn
            if pending is not None:
                await asyncio.wrap_future(pending)
        finally:
            if pending is not None:  # cancelled or failed: the piece in hand must be done
                concurrent.futures.wait([pending])  # before the caller drops the download
        return done

    async def _read(self, connection: Connection, into: memoryview, received: int) -> int:
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.sock_recv_into(connection, into),
                                          self.read_timeout)  # fmt: skip
        except TimeoutError:
            raise PlainHttpError(
                "timeout", f"sent nothing for {self.read_timeout:g} s after {received} bytes"
            ) from None


class _Stale(Exception):
    """The connection ended before the answer's first byte (a reused one the peer closed)."""


def _keep_alive(status_line: bytes, headers: dict[str, str]) -> bool:
    """Whether the connection may carry another request after this answer (the parser's own
    flag is reset once it has parsed a whole message)."""
    tokens = {token.strip().lower() for token in headers.get("connection", "").split(",")}
    if status_line.startswith(b"HTTP/1.1 "):
        return "close" not in tokens
    return status_line.startswith(b"HTTP/1.0 ") and "keep-alive" in tokens


def _until_close(headers: dict[str, str]) -> bool:
    """Whether the body runs to the end of the connection (no length, not chunked)."""
    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    return "content-length" not in headers and not chunked


def _content_length(answer: _Answer) -> int | None:
    """The announced body length once the headers are in, when the body is delimited by it
    (not chunked); None otherwise. The parser has refused a malformed length already."""
    if not answer.headers_done or "chunked" in answer.headers.get("transfer-encoding", "").lower():
        return None
    declared = answer.headers.get("content-length")
    return int(declared) if declared is not None and declared.isdigit() else None


def _pending(connection: Connection) -> bool:
    """Whether the peer sent more than it was asked for (bytes are waiting, or it closed)."""
    try:
        return connection.recv(1, socket.MSG_PEEK) is not None
    except BlockingIOError:
        return False
    except OSError:
        return True


def _is_ipv6(address: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(address), ipaddress.IPv6Address)
    except ValueError:  # a host name (the default resolver): connect over IPv4
        return False
