"""PlainHttp against hand-written peers: framing, reuse, and every way a peer can misbehave."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from allmende.net.plainhttp import MAX_HEADER_BYTES, PlainHttp, PlainHttpError

BODY = bytes(range(256)) * 300
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def ok(body: bytes = BODY, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n" % (len(body), extra) + body


async def serve(handler: Handler, run: Callable[[str, list[int]], Awaitable[object]]) -> object:
    """Run ``run(base_url, connections)`` against a server answering with ``handler``."""
    connections: list[int] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        return await run(f"http://127.0.0.1:{port}", connections)


def client(read_timeout: float = 5.0) -> PlainHttp:
    return PlainHttp(connect_timeout=2.0, read_timeout=read_timeout, headers={"user-agent": "t"})


async def get(http: PlainHttp, url: str) -> tuple[int, dict[str, str], bytes]:
    seen: dict[str, object] = {}
    body = bytearray()

    def on_headers(status: int, headers: dict[str, str]) -> None:
        seen["status"], seen["headers"] = status, headers

    await http.get(url + "/v1/blobs/x", on_headers, body.extend)
    return seen["status"], seen["headers"], bytes(body)  # type: ignore[return-value]


def test_a_kept_alive_connection_serves_several_requests() -> None:
    async def handler(reader, writer) -> None:
        while True:
            request = await read_request(reader)
            assert request.startswith(b"GET /v1/blobs/x HTTP/1.1\r\nHost: 127.0.0.1:")
            assert b"user-agent: t\r\n" in request
            writer.write(ok())
            await writer.drain()

    async def run(url: str, connections: list[int]) -> None:
        http = client()
        for _ in range(3):
            assert await get(http, url) == (200, {"content-length": str(len(BODY))}, BODY)
        await http.aclose()
        assert len(connections) == 1

    asyncio.run(serve(handler, run))


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (BODY[:1000], BODY[1000:]))
        + b"0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n" + BODY,  # the body runs to the close
    ],
    ids=["chunked", "until-close"],
)
def test_chunked_and_close_delimited_bodies_arrive_whole(answer: bytes) -> None:
    async def handler(reader, writer) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()
        if b"chunked" not in answer:
            writer.close()
        else:
            await reader.read()  # keep the connection open: the chunks alone end the body

    async def run(url: str, connections: list[int]) -> None:
        http = client()
        status, _, body = await get(http, url)
        await http.aclose()
        assert (status, body) == (200, BODY)

    asyncio.run(serve(handler, run))


def test_other_statuses_reach_the_caller() -> None:
    async def handler(reader, writer) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 9\r\n\r\nnot found")
        await writer.drain()

    async def run(url: str, connections: list[int]) -> None:
        http = client()
        status, _, body = await get(http, url)
        await http.aclose()
        assert (status, body) == (404, b"not found")

    asyncio.run(serve(handler, run))


def test_a_connection_the_peer_closed_while_idle_is_replaced() -> None:
    async def handler(reader, writer) -> None:
        await read_request(reader)
        writer.write(ok())  # allows reuse, then hangs up anyway
        await writer.drain()

    async def run(url: str, connections: list[int]) -> None:
        http = client()
        assert (await get(http, url))[2] == BODY
        await asyncio.sleep(0.1)  # the close reaches the client's idle connection
        assert (await get(http, url))[2] == BODY
        await http.aclose()
        assert len(connections) == 2

    asyncio.run(serve(handler, run))


async def _closes_mid_body(reader, writer) -> None:
    await read_request(reader)
    writer.write(ok()[:5000])


async def _garbage(reader, writer) -> None:
    await read_request(reader)
    writer.write(b"SPAM 200 maybe\r\n\r\n")


async def _endless_headers(reader, writer) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\n")
    for i in range(MAX_HEADER_BYTES // 16 + 10):
        writer.write(b"x-%08d: yes\r\n" % i)
    await writer.drain()
    await reader.read()


async def _huge_header_line(reader, writer) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * (MAX_HEADER_BYTES + 10))
    await writer.drain()
    await reader.read()


async def _silent(reader, writer) -> None:
    await read_request(reader)
    await reader.read()  # never answers


async def _hangs_up(reader, writer) -> None:
    await read_request(reader)  # and closes without a byte


async def _upgrade(reader, writer) -> None:
    await read_request(reader)
    writer.write(
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"
    )
    await writer.drain()
    await reader.read()


@pytest.mark.parametrize(
    ("handler", "kind", "detail"),
    [
        (_closes_mid_body, "unreachable", "closed the connection mid-answer"),
        (_garbage, "protocol", "malformed answer"),
        (_endless_headers, "protocol", "bytes of headers"),
        (_huge_header_line, "protocol", "bytes of headers"),
        (_silent, "timeout", "sent nothing for 0.3 s after 0 bytes"),
        (_hangs_up, "unreachable", "closed the connection without answering"),
        (_upgrade, "protocol", "switch protocols"),
    ],
)  # fmt: skip
def test_a_misbehaving_peer_raises_a_plain_http_error(handler, kind: str, detail: str) -> None:
    async def run(url: str, connections: list[int]) -> None:
        with pytest.raises(PlainHttpError, match=detail) as raised:
            await get(client(read_timeout=0.3), url)
        assert raised.value.kind == kind

    asyncio.run(serve(handler, run))


def test_an_unreachable_peer_and_a_non_http_url_are_refused() -> None:
    async def run() -> None:
        with pytest.raises(PlainHttpError) as raised:
            await get(client(), "http://127.0.0.1:9")  # nothing listens on the discard port
        assert raised.value.kind == "unreachable"
        with pytest.raises(PlainHttpError, match="not a plain http:// URL"):
            await get(client(), "https://127.0.0.1:9")

    asyncio.run(run())


def test_a_callback_that_refuses_stops_the_download_and_drops_the_connection() -> None:
    async def handler(reader, writer) -> None:
        while True:
            await read_request(reader)
            writer.write(ok())
            await writer.drain()

    class Enough(Exception):
        pass

    def refuse(_: bytes) -> None:
        raise Enough

    async def run(url: str, connections: list[int]) -> None:
        http = client()
        with pytest.raises(Enough):
            await http.get(url + "/v1/blobs/x", lambda status, headers: None, refuse)
        assert (await get(http, url))[2] == BODY  # on a new connection: the old one was dropped
        await http.aclose()
        assert len(connections) == 2

    asyncio.run(serve(handler, run))
