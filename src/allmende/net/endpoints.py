"""Which peer endpoints this node contacts: public http(s) addresses, unless its config allows more.

An endpoint comes from the Registry, so anyone who registered wrote it, and every participant of
a job fetches from it: ``http://169.254.169.254/latest/meta-data/`` would make every node read
its cloud's metadata service, ``http://10.0.0.1/`` probe its operator's network. An
:class:`EndpointPolicy` refuses, with the reason:

- a URL that is not ``http://`` or ``https://``, has no host, has userinfo (``user:pw@``), a
  query or a fragment, or holds whitespace or control characters;
- an address in a loopback, link-local, private, shared (CGNAT), multicast, reserved or
  unspecified range, or any other that is not globally routable (IPv4-mapped IPv6 addresses are
  judged as their IPv4 address) — unless it lies in one of the ranges the node allows
  (``[net] allow_endpoint_ranges``; a devnet allows loopback).

A URL's host may be a name, so the check is made twice: :meth:`EndpointPolicy.url_problem` when
the endpoint is read, and :meth:`EndpointPolicy.resolve` when the peer client connects, which
resolves the name, refuses it if any address it resolves to is refused, and hands back the
checked addresses to connect to — the client connects to those, never resolves again, so a name
that changes its answer between check and connect (DNS rebinding) gains nothing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from allmende.errors import ConfigError, PeerError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# What a devnet, a test network or a benchmark on one machine allows: every node is on loopback.
LOOPBACK_RANGES = ("127.0.0.0/8", "::1/128")


class EndpointRefused(PeerError):
    """A peer's endpoint is refused by this node's endpoint policy (nothing was sent to it)."""


def parse_ranges(ranges: Iterable[str]) -> tuple[IPNetwork, ...]:
    """``ranges`` (CIDR strings such as ``10.0.0.0/8``) as networks; :class:`ConfigError` names
    a bad one."""
    networks = []
    for text in ranges:
        try:
            networks.append(ipaddress.ip_network(text, strict=True))
        except ValueError as exc:
            raise ConfigError(
                f"{text!r} is not an address range ({exc}); write it as CIDR, e.g. "
                "'10.0.0.0/8' or '::1/128'."
            ) from None
    return tuple(networks)


def address_kind(address: IPAddress) -> str | None:
    """Why ``address`` is not a public unicast address (``"loopback"``, ``"private"``, ...),
    or None when it is one."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address_kind(address.ipv4_mapped)
    for kind, flag in (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
    ):
        if flag:
            return kind
    return None if address.is_global else "not globally routable"


@dataclass(frozen=True)
class EndpointPolicy:
    """Refuses peer endpoints outside public address space, except the ``allowed`` ranges."""

    allowed: tuple[IPNetwork, ...] = ()

    @classmethod
    def allowing(cls, ranges: Iterable[str]) -> EndpointPolicy:
        """A policy that also allows ``ranges`` (CIDR strings)."""
        return cls(parse_ranges(ranges))

    def address_problem(self, address: IPAddress) -> str | None:
        """Why ``address`` may not be contacted, or None when it may."""
        if any(address in network for network in self.allowed):
            return None
        mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
        if mapped is not None and any(mapped in network for network in self.allowed):
            return None
        kind = address_kind(address)
        if kind is None:
            return None
        return (
            f"its address {address} is {kind}; nodes contact only public addresses unless "
            "[net] allow_endpoint_ranges names the range"
        )

    def url_problem(self, url: str) -> str | None:
        """Why the endpoint ``url`` may not be contacted, or None when it may (a host name is
        judged only once resolved, by :meth:`resolve`)."""
        if not url.isprintable() or any(char.isspace() for char in url) or not url.isascii():
            return "it holds whitespace, control or non-ASCII characters"
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            return "it is not an http:// or https:// URL"
        if "@" in parts.netloc:
            return "it carries a user name or password (user:pw@host)"
        if "?" in url:
            return "it has a query (?...)"
        if "#" in url:
            return "it has a fragment (#...)"
        try:
            host, _ = parts.hostname, parts.port
        except ValueError:
            return "its port is not a number from 0 to 65535"
        if not host:
            return "it names no host"
        address = _literal(host)
        return None if address is None else self.address_problem(address)

    def check_url(self, url: str) -> str:
        """``url`` when it may be contacted; :class:`EndpointRefused` saying why not."""
        problem = self.url_problem(url)
        if problem is not None:
            raise EndpointRefused(f"The endpoint {url!r} is refused: {problem}.")
        return url

    async def resolve(self, host: str, port: int) -> list[str]:
        """The addresses to connect to for ``host``, all checked; :class:`EndpointRefused` when
        it resolves to a refused address (or to none)."""
        literal = _literal(host)
        if literal is not None:
            addresses = [literal]
        else:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host, port, type=socket.SOCK_STREAM
                )
            except OSError as exc:
                raise EndpointRefused(f"The host {host!r} does not resolve: {exc}.") from None
            addresses = []
            for info in infos:
                address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
                if address not in addresses:
                    addresses.append(address)
        for address in addresses:
            problem = self.address_problem(address)
            if problem is not None:
                raise EndpointRefused(f"The host {host!r} is refused: {problem}.")
        if not addresses:
            raise EndpointRefused(f"The host {host!r} resolves to no address.")
        return [str(address) for address in addresses]


def _literal(host: str) -> IPAddress | None:
    """``host`` as an address when it is one (IPv6 without brackets, as urlsplit gives it)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None
