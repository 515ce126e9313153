"""Who may send this node messages: registered nodes (Registry), or a fixed list offline.

The Registry lookup is a chain call, so answers are cached briefly: a node that registers is
accepted within ``cache_seconds``, and a flood of messages from one sender costs one call.
Part of the signed-message plane (:mod:`allmende.net.messages`), kept for secure aggregation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Protocol

import anyio.to_thread

from allmende.chain.addresses import to_checksum_address

# How long a "registered" answer from the Registry is trusted; a node that deregistered or was
# slashed out is still accepted this long. "Not registered" is trusted only NEGATIVE_CACHE_SECONDS
# so a node that has just registered is not refused for long.
DEFAULT_SIGNER_CACHE_SECONDS = 10.0
NEGATIVE_CACHE_SECONDS = 1.0


class SignerCheck(Protocol):
    """Decides whether an address may send signed messages to this node."""

    async def is_registered(self, address: str) -> bool:
        """True when ``address`` (checksummed) is a node this one talks to."""
        ...


class StaticSigners:
    """A fixed set of addresses (offline mode, no chain)."""

    def __init__(self, addresses: Iterable[str]) -> None:
        self._addresses = {to_checksum_address(a) for a in addresses}

    async def is_registered(self, address: str) -> bool:
        return to_checksum_address(address) in self._addresses


class RegistrySigners:
    """Registered nodes according to ``lookup(address) -> bool`` (``Registry.node(a).registered``).

    ``lookup`` is a blocking chain call and runs in a worker thread. A failing lookup propagates
    (the API answers 503: the node cannot decide now), and is not cached.
    """

    def __init__(
        self,
        lookup: Callable[[str], bool],
        *,
        cache_seconds: float = DEFAULT_SIGNER_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[str, tuple[bool, float]] = {}

    async def is_registered(self, address: str) -> bool:
        address = to_checksum_address(address)
        now = self._clock()
        cached = self._cache.get(address)
        if cached is not None and now < cached[1]:
            return cached[0]
        registered = bool(await anyio.to_thread.run_sync(self._lookup, address))
        ttl = self._cache_seconds
        if not registered:
            ttl = min(ttl, NEGATIVE_CACHE_SECONDS)
        self._cache[address] = (registered, now + ttl)
        return registered
