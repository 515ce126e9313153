"""JSON-RPC over HTTP/1.1 with one kept-alive connection per thread.

A node calls the chain a few dozen times a round. A call through web3's provider (requests,
urllib3) takes about four times as long as one over a plain ``http.client`` connection
(``benchmarks/chain_calls.py``).
A connection the server closed while idle is noticed before it is reused (the socket reads as
ready) and replaced. Should the server close it just as a request goes out, a read is sent once
more on a new connection; a transaction is not (the caller re-reads the nonce and tries again).
A server that says how long it keeps an idle connection (``Keep-Alive: timeout=5`` from Hardhat,
as from any Node.js server) is taken at its word: a connection idle for nearly that long is
replaced before a request goes out, so a transaction never meets a connection closing under it.
"""

from __future__ import annotations

import http.client
import itertools
import json
import re
import select
import threading
import time
from typing import Any
from urllib.parse import urlsplit

HEADERS = {"content-type": "application/json", "accept": "application/json"}
MAX_RESPONSE_BYTES = 64 * 1024 * 1024  # a big eth_getLogs answer, never an endless body
# Reads may be sent again when a kept-alive connection turns out dead; a transaction never is.
RETRY_SAFE = frozenset({
    "eth_blockNumber", "eth_call", "eth_chainId", "eth_estimateGas", "eth_getBalance",
    "eth_getBlockByNumber", "eth_getCode", "eth_getLogs", "eth_getTransactionCount",
    "eth_getTransactionReceipt", "eth_maxPriorityFeePerGas",
})  # fmt: skip


# A connection is replaced once it has been idle this long less than the server's keep-alive
# timeout: room for the two clocks and the request's own travel.
KEEPALIVE_MARGIN_SECONDS = 1.0
_KEEPALIVE_TIMEOUT = re.compile(r"(?:^|[,;\s])timeout=(\d{1,6})(?:$|[,;\s])")


class RpcUnreachable(ConnectionError):
    """The endpoint could not be reached or dropped the connection mid-request."""


class RpcBadAnswer(ValueError):
    """The endpoint answered, but not with a JSON-RPC response (HTTP error, not JSON, too big)."""


class JsonRpcTransport:
    """Posts JSON-RPC requests to ``url``; thread-safe (each thread has its own connection)."""

    def __init__(self, url: str, *, timeout: float) -> None:
        self._lock = threading.Lock()
        self._open: set[http.client.HTTPConnection] = set()  # every thread's, to close them all
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http(s) URL")
        self.url = url
        self.timeout = timeout
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._ids = itertools.count(1)
        self._local = threading.local()

    def call(self, method: str, params: list[Any]) -> Any:
        """The decoded JSON answer to one request (a dict with ``result`` or ``error``)."""
        body = json.dumps(
            {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        ).encode()
        reused = getattr(self._local, "connection", None) is not None
        try:
            response, data = self._post(body)
        except (OSError, http.client.HTTPException) as exc:
            self._drop()
            if not (reused and method in RETRY_SAFE):
                raise RpcUnreachable(f"{type(exc).__name__}: {exc}") from None
            try:  # the server may have closed the idle connection as the request went out
                response, data = self._post(body)
            except (OSError, http.client.HTTPException) as again:
                self._drop()
                raise RpcUnreachable(f"{type(again).__name__}: {again}") from None
        if response.will_close:
            self._drop()
        else:
            self._local.idle_limit = _keepalive_limit(response.getheader("keep-alive"))
            self._local.last_used = time.monotonic()
        if len(data) > MAX_RESPONSE_BYTES:
            self._drop()
            raise RpcBadAnswer(f"the answer to {method} is over {MAX_RESPONSE_BYTES} bytes")
        if response.status != 200:
            raise RpcBadAnswer(f"HTTP {response.status} {response.reason}: {data[:200]!r}")
        try:
            return json.loads(data)
        except ValueError:
            raise RpcBadAnswer(f"the answer to {method} is not JSON: {data[:200]!r}") from None

    def _post(self, body: bytes) -> tuple[http.client.HTTPResponse, bytes]:
        connection = self._connection()
        connection.request("POST", self._path, body, HEADERS)
        response = connection.getresponse()
        return response, response.read(MAX_RESPONSE_BYTES + 1)

    def close(self) -> None:
        """Close every thread's connection; a later call opens a new one."""
        with self._lock:
            connections, self._open = self._open, set()
        for connection in connections:
            connection.close()

    def __del__(self) -> None:
        self.close()

    def _connection(self) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is not None and (self._idle_too_long() or _closed_by_peer(connection)):
            self._drop()
            connection = None
        if connection is None:
            kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            connection = kind(self._host, self._port, timeout=self.timeout)
            self._local.connection = connection
            with self._lock:
                self._open.add(connection)
        return connection

    def _idle_too_long(self) -> bool:
        """Whether this thread's connection has been idle nearly as long as the server keeps it."""
        limit: float | None = getattr(self._local, "idle_limit", None)
        if limit is None:
            return False
        return time.monotonic() - getattr(self._local, "last_used", 0.0) >= limit

    def _drop(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            with self._lock:
                self._open.discard(connection)
        self._local.connection = None


def _keepalive_limit(header: str | None) -> float | None:
    """Seconds a connection may stay idle before reuse, from a ``Keep-Alive: timeout=N`` header
    (None: the server set no limit)."""
    if not header:
        return None
    match = _KEEPALIVE_TIMEOUT.search(header.lower())
    if match is None:
        return None
    return max(0.0, int(match.group(1)) - KEEPALIVE_MARGIN_SECONDS)


def _closed_by_peer(connection: http.client.HTTPConnection) -> bool:
    """An idle kept-alive socket that reads as ready was closed (or spoken to) by the server."""
    sock = connection.sock
    if sock is None:
        return False  # not connected yet: request() connects
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)
