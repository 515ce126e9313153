"""The endpoint policy: which registered endpoints a node contacts, checked when an endpoint is
read and again, on the resolved addresses, when the peer client connects (real sockets)."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

from allmende.chain import Node
from allmende.errors import ConfigError, PeerError
from allmende.net.client import PeerClient
from allmende.net.endpoints import LOOPBACK_RANGES, EndpointPolicy, EndpointRefused, parse_ranges
from allmende.node.config import parse_config
from allmende.node.directory import PeerDirectory
from allmende.node.process import register_node
from allmende.store.blobs import BlobStore
from allmende.store.state import StateDB

STRICT = EndpointPolicy()
LOOPBACK = EndpointPolicy.allowing(LOOPBACK_RANGES)
DATA = b"a blob served over loopback " * 100
DIGEST = hashlib.sha256(DATA).hexdigest()


@pytest.mark.parametrize(
    "url, kind",
    [
        ("http://127.0.0.1:8470", "loopback"),
        ("http://127.5.6.7", "loopback"),
        ("http://[::1]:8470", "loopback"),
        ("http://10.0.0.1:9", "private"),
        ("http://172.16.3.4", "private"),
        ("http://192.168.1.1", "private"),
        ("http://[fc00::1]", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[fe80::1]", "link-local"),
        ("http://224.0.0.1", "multicast"),
        ("http://[ff02::1]", "multicast"),
        ("http://240.0.0.1", "reserved"),
        ("http://0.0.0.0:8470", "unspecified"),
        ("http://[::]:8470", "unspecified"),
        ("http://100.64.0.1", "not globally routable"),
        ("http://[::ffff:10.0.0.1]", "private"),  # IPv4-mapped: judged as its IPv4 address
        ("https://[::ffff:169.254.169.254]", "link-local"),
    ],
)
def test_non_public_addresses_are_refused_with_their_kind(url: str, kind: str) -> None:
    problem = STRICT.url_problem(url)
    assert problem is not None and f"is {kind};" in problem, problem
    assert "allow_endpoint_ranges" in problem
    with pytest.raises(EndpointRefused, match="is refused"):
        STRICT.check_url(url)


@pytest.mark.parametrize(
    "url, words",
    [
        ("http://user:pw@93.184.216.34", "user name or password"),
        ("http://user@peer.example", "user name or password"),
        ("http://peer.example/?x=1", "query"),
        ("http://peer.example?", "query"),
        ("http://169.254.169.254/latest/meta-data/#", "fragment"),
        ("http://peer.example#x", "fragment"),
        ("ftp://peer.example", "not an http"),
        ("peer.example:8470", "not an http"),
        ("http://", "names no host"),
        ("http://peer.example:99999", "port"),
        ("http://peer.example\n:80", "control"),
        ("http://peer example", "whitespace"),
        ("http://peer.exämple", "non-ASCII"),
    ],
)
def test_malformed_or_loaded_urls_are_refused_whatever_is_allowed(url: str, words: str) -> None:
    for policy in (STRICT, LOOPBACK, EndpointPolicy.allowing(["0.0.0.0/0", "::/0"])):
        problem = policy.url_problem(url)
        assert problem is not None and words in problem, (url, problem)


@pytest.mark.parametrize(
    "url",
    ["http://93.184.216.34:8470", "https://[2606:4700::1111]/prefix", "https://peer.example"],
)
def test_public_addresses_and_host_names_pass_the_url_check(url: str) -> None:
    assert STRICT.url_problem(url) is None


def test_allowed_ranges_let_exactly_those_addresses_through() -> None:
    assert LOOPBACK.url_problem("http://127.0.0.1:8470") is None
    assert LOOPBACK.url_problem("http://[::1]:8470") is None
    assert LOOPBACK.url_problem("http://[::ffff:127.0.0.1]:8470") is None
    assert "private" in (LOOPBACK.url_problem("http://10.0.0.1") or "")
    only_one = EndpointPolicy.allowing(["127.0.0.1/32"])
    assert only_one.url_problem("http://127.0.0.1:1") is None
    assert "loopback" in (only_one.url_problem("http://127.0.0.2:1") or "")
    lan = EndpointPolicy.allowing(["10.0.0.0/8"])
    assert lan.address_problem(ipaddress.ip_address("10.1.2.3")) is None
    assert lan.address_problem(ipaddress.ip_address("192.168.0.1")) is not None


def test_bad_ranges_are_config_errors_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="CIDR"):
        parse_ranges(["10.0.0.1/8"])  # host bits set
    with pytest.raises(ConfigError, match=r"net\.allow_endpoint_ranges"):
        parse_config({"chain": {"offline": True}, "net": {"allow_endpoint_ranges": ["nope"]}})
    config = parse_config(
        {"chain": {"offline": True}, "net": {"allow_endpoint_ranges": ["::1/128"]}}
    )
    assert config.net.endpoint_policy.url_problem("http://[::1]:1") is None
    assert parse_config({"chain": {"offline": True}}).net.endpoint_policy == STRICT


def test_a_name_that_resolves_to_a_refused_address_is_refused() -> None:
    with pytest.raises(EndpointRefused, match=r"'localhost' is refused.*loopback"):
        asyncio.run(STRICT.resolve("localhost", 80))
    assert "127.0.0.1" in asyncio.run(LOOPBACK.resolve("localhost", 80))
    with pytest.raises(EndpointRefused, match="does not resolve"):
        asyncio.run(STRICT.resolve("no-such-host.invalid", 80))


# -- at connect time, on real sockets -----------------------------------------------------------


@asynccontextmanager
async def _listener(host: str = "127.0.0.1") -> AsyncIterator[SimpleNamespace]:
    """A tiny HTTP server on ``host`` answering every request with DATA (or, once ``json`` is
    set, a JSON object) and closing; ``accepted`` counts the connections it accepted."""
    seen = SimpleNamespace(accepted=0, port=0, json=False)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.accepted += 1
        await reader.readuntil(b"\r\n\r\n")
        body = b'{"address": "0x0"}' if seen.json else DATA
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, host, 0)
    seen.port = server.sockets[0].getsockname()[1]
    async with server:
        yield seen


def _client(tmp_path: Path, policy: EndpointPolicy) -> tuple[PeerClient, StateDB]:
    state = StateDB.open(tmp_path / "state.sqlite")
    return PeerClient(BlobStore(tmp_path / "blobs"), state=state, policy=policy), state


def test_a_host_name_resolving_to_loopback_is_never_connected_to(tmp_path: Path) -> None:
    """``localhost`` passes the URL check (it is a name); the client resolves it, finds a
    loopback address, and refuses before connecting, on both of its HTTP paths."""
    client, state = _client(tmp_path, STRICT)

    async def scenario() -> SimpleNamespace:
        async with _listener() as server:
            peer = f"http://localhost:{server.port}"
            with pytest.raises(PeerError, match="refused"):
                await client.fetch_blob(DIGEST, [peer])  # plain HTTP path
            with pytest.raises(PeerError, match="refused"):
                await client.info(peer)  # httpx path
            await client.aclose()
            return server

    try:
        server = asyncio.run(scenario())
        assert server.accepted == 0
        assert [(f.kind, f.peer) for f in state.peer_faults()] == [
            ("refused", f"http://localhost:{server.port}")
        ]
    finally:
        state.close()


def test_an_allowed_host_name_is_fetched_from(tmp_path: Path) -> None:
    client, state = _client(tmp_path, LOOPBACK)

    async def scenario() -> tuple[str | None, int]:
        async with _listener() as server:
            result = await client.fetch_blob(DIGEST, [f"http://localhost:{server.port}"])
            server.json = True
            info = await client.info(f"http://localhost:{server.port}")
            assert info == {"address": "0x0"}
            await client.aclose()
            return result.peer, server.accepted

    try:
        peer, accepted = asyncio.run(scenario())
        assert peer is not None and accepted == 2
        assert state.peer_faults() == []
    finally:
        state.close()


class _Rebinding(EndpointPolicy):
    """Checks ``rebind.invalid`` as 127.0.0.1; a second lookup of the name would fail (it is an
    .invalid name), so a connection that works was made to the checked address."""

    async def resolve(self, host: str, port: int) -> list[str]:
        if host == "rebind.invalid":
            return await super().resolve("127.0.0.1", port)
        return await super().resolve(host, port)


def test_the_client_connects_to_the_checked_address_never_resolving_again(tmp_path: Path) -> None:
    client, state = _client(tmp_path, _Rebinding(LOOPBACK.allowed))

    async def scenario() -> int:
        async with _listener() as server:
            await client.fetch_blob(DIGEST, [f"http://rebind.invalid:{server.port}"])
            server.json = True
            assert await client.info(f"http://rebind.invalid:{server.port}") == {"address": "0x0"}
            await client.aclose()
            return server.accepted

    try:
        assert asyncio.run(scenario()) == 2
    finally:
        state.close()


def test_refused_urls_are_faults_and_the_next_peer_serves(tmp_path: Path) -> None:
    client, state = _client(tmp_path, EndpointPolicy.allowing(["127.0.0.1/32"]))

    async def scenario() -> tuple[bool, int, int]:
        async with _listener() as good, _listener("127.0.0.2") as bait:
            peers = [
                f"http://127.0.0.2:{bait.port}",  # loopback, but not in the allowed range
                f"http://user:pw@127.0.0.1:{good.port}",
                f"http://127.0.0.1:{good.port}/?x#",
                f"http://127.0.0.1:{good.port}",
            ]
            result = await client.fetch_blob(DIGEST, peers)
            await client.aclose()
            return result.peer == peers[-1], bait.accepted, good.accepted

    try:
        served_by_last, bait, good = asyncio.run(scenario())
        assert served_by_last
        assert (bait, good) == (0, 1)
        assert [f.kind for f in state.peer_faults()] == ["refused"] * 3
    finally:
        state.close()


# -- where endpoints are read: the directory, and the node's own registration --------------------


def _record(endpoint: str, registered: bool = True) -> Node:
    return Node(endpoint, 1, b"", 0, 0, 0, registered)


class _Registry:
    def __init__(self, records: dict[str, Node]) -> None:
        self.records = records

    def node(self, address: str) -> Node:
        return self.records[address]


def test_the_directory_skips_refused_endpoints_and_reports_each_once() -> None:
    registry = _Registry(
        {
            "a": _record("http://127.0.0.1:8470"),
            "b": _record("http://169.254.169.254/latest/meta-data/#"),
            "c": _record("http://10.0.0.1:9"),
            "d": _record("http://127.0.0.1:8471", registered=False),
            "e": _record("https://peer.example"),
        }
    )
    refused: list[tuple[str, str, str]] = []
    directory = PeerDirectory(
        registry,  # type: ignore[arg-type]
        policy=LOOPBACK,
        on_refused=lambda *fault: refused.append(fault),
    )

    async def scenario() -> list[str]:
        first = await directory.endpoints(["a", "b", "c", "d", "e"])
        assert await directory.endpoints(["b", "c"]) == []  # cached: not reported again
        return first

    assert asyncio.run(scenario()) == ["http://127.0.0.1:8470", "https://peer.example"]
    assert [(endpoint, kind) for endpoint, kind, _ in refused] == [
        ("http://169.254.169.254/latest/meta-data/#", "refused"),
        ("http://10.0.0.1:9", "refused"),
    ]
    assert "fragment" in refused[0][2] and "private" in refused[1][2]


def test_a_node_refuses_to_register_an_endpoint_its_own_policy_refuses() -> None:
    config = parse_config({"chain": {"offline": True}, "node": {"port": 8470}})
    chain = SimpleNamespace(registry=None, client=None)  # never reached
    ctx = SimpleNamespace(chain=chain, config=config, address="0x0")
    with pytest.raises(ConfigError, match=r"127\.0\.0\.1:8470.*allow_endpoint_ranges"):
        register_node(ctx)  # type: ignore[arg-type]
