"""The peer client: fetch blobs by hash from whichever peer has them, post signed messages.

Blobs from ``http://`` peers come through :class:`~allmende.net.plainhttp.PlainHttp`; HTTPS
peers and messages go through httpx.

A fetch tries the candidate peers in order and moves on at the first error, timeout, oversized
body or wrong hash. Bytes are hashed as they arrive and written to a temporary file in the store,
which is renamed into place only when the hash matches, so a whole blob is never held in memory
and a half-received or forged blob is never visible. A peer that fails is recorded in the state
database (``peer_faults``) and counted in ``allmende_peer_faults``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from allmende import __version__
from allmende.errors import BlobTooLarge, HashMismatch, PeerError
from allmende.net.limits import DEFAULT_MESSAGE_TTL_SECONDS
from allmende.net.messages import MessageDomain, sign_message
from allmende.net.metrics import NodeMetrics
from allmende.net.plainhttp import PlainHttp, PlainHttpError
from allmende.store.blobs import BlobStore, check_digest
from allmende.store.state import StateDB

log = logging.getLogger(__name__)

# Connect quickly or try the next peer; between two received chunks, wait at most read seconds.
# A slow link with big blobs needs a longer read timeout, never a longer connect timeout.
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


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


class PeerClient:
    """Talks to other nodes for this one; one instance per node, closed with :meth:`aclose`.

    ``account`` and ``domain`` are needed only to post messages; ``state`` and ``metrics`` only to
    record peers that misbehave.
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
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.store = store
        self.state = state
        self.metrics = metrics
        self.account = account
        self.domain = domain
        headers = {"user-agent": f"allmende/{__version__}"}
        self._http = httpx.AsyncClient(
            timeout=timeout,
            headers=headers,
            follow_redirects=False,
            transport=transport,
            verify=tls_context(),
        )
        # Blob downloads from http:// peers; a test's own transport sees every request instead.
        self._plain = (
            PlainHttp(
                connect_timeout=timeout.connect or DEFAULT_TIMEOUT.connect or 5.0,
                read_timeout=timeout.read or DEFAULT_TIMEOUT.read or 30.0,
                headers=headers,
            )
            if transport is None
            else None
        )
        self._fetching: dict[str, asyncio.Lock] = {}

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

        ``peers`` are base URLs (``http://host:port``). Returns at once when the blob is already
        stored. Raises :class:`PeerError` listing what went wrong with each peer when none did.
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
        for peer in peers:
            try:
                size = await self._fetch_from(peer, digest, max_bytes)
            except _PeerFailure as failure:
                failures.append(f"{peer}: {failure.detail}")
                if failure.kind != "not_found":
                    self._record_fault(peer, failure.kind, failure.detail)
                continue
            if self.metrics is not None:
                self.metrics.blob_bytes_fetched.inc(size)
            return FetchResult(digest, size, peer)
        tried = "; ".join(failures) or "no peers were given"
        raise PeerError(
            f"No peer served blob {digest} correctly ({tried}). Try again later or ask other "
            "participants of the job for it."
        )

    async def _fetch_from(self, peer: str, digest: str, max_bytes: int | None) -> int:
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

            try:
                if self._plain is not None and url.startswith("http://"):
                    await self._plain.get(url, check_answer, writer.write)
                else:
                    async with self._http.stream("GET", url) as response:
                        check_answer(response.status_code, response.headers)
                        async for chunk in response.aiter_raw():
                            writer.write(chunk)
                writer.commit()
                return writer.size
            except HashMismatch as exc:
                raise _PeerFailure("hash", f"served wrong bytes: {exc}") from None
            except BlobTooLarge as exc:
                raise _PeerFailure("size", f"sent too much: {exc}") from None
            except PlainHttpError as exc:
                raise _PeerFailure(exc.kind, f"failed: {exc.detail}") from None
            except httpx.TimeoutException as exc:
                raise _PeerFailure("timeout", f"timed out ({type(exc).__name__})") from None
            except httpx.HTTPError as exc:
                raise _PeerFailure("unreachable", f"failed: {type(exc).__name__}: {exc}") from None

    def _record_fault(self, peer: str, kind: str, detail: str) -> None:
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
    ) -> Any:
        """Sign a message to ``recipient`` (the peer's address) and post it; the handler's reply.

        Raises :class:`PeerError` when the peer is unreachable or refuses the message (with the
        peer's reason).
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
            response = await self._http.post(
                url,
                content=message.model_dump_json(),
                headers={"content-type": "application/json"},
            )
        except httpx.HTTPError as exc:
            self._record_fault(peer, "unreachable", f"failed: {type(exc).__name__}: {exc}")
            raise PeerError(f"Cannot deliver a {kind!r} message to {peer}: {exc}.") from None
        body = _json_or_none(response)
        if response.status_code != 200 or not isinstance(body, dict):
            reason = body.get("detail") if isinstance(body, dict) else response.text[:200]
            raise PeerError(
                f"Peer {peer} refused the {kind!r} message (HTTP {response.status_code}): {reason}"
            )
        return body.get("reply")

    async def info(self, peer: str) -> dict[str, Any]:
        """A peer's ``GET /v1/info`` (untrusted: it says what the peer claims)."""
        try:
            response = await self._http.get(f"{peer.rstrip('/')}/v1/info")
            response.raise_for_status()
            body = response.json()
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


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
