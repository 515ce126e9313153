"""Who may send this node messages: registered nodes (Registry), or a fixed list offline.

The Registry lookup is a chain call, so answers are cached briefly: a node that registers is
accepted within ``cache_seconds``, and a flood of messages from one sender costs one call (calls
for one address in flight at once are shared). Anyone can make fresh keys, so what strangers cost
is bounded: at most ``max_cached`` "registered" and ``max_strangers`` "not registered" answers
are kept (least recently used go first, so a flood of random keys evicts only other strangers),
and at most ``lookups_per_second`` lookups of addresses not in the cache are made (a burst of as
many is allowed); past that a sender is told to retry (the API answers 503) and no call is made.
Part of the signed-message plane (:mod:`allmende.net.messages`), kept for secure aggregation.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Protocol

import anyio.to_thread

from allmende.chain.addresses import to_checksum_address
from allmende.errors import MessageError

# How long a "registered" answer from the Registry is trusted; a node that deregistered or was
# slashed out is still accepted this long. "Not registered" is trusted only NEGATIVE_CACHE_SECONDS
# so a node that has just registered is not refused for long.
DEFAULT_SIGNER_CACHE_SECONDS = 10.0
NEGATIVE_CACHE_SECONDS = 1.0
# Answers kept: registered nodes (raise it past the number of nodes this one talks to, symptom:
# allmende_messages{outcome="registry_unavailable"} while the chain is fine), and strangers.
MAX_CACHED_SIGNERS = 4096
MAX_CACHED_STRANGERS = 1024
# Registry lookups of uncached addresses a second, and the burst allowed.
MAX_LOOKUPS_PER_SECOND = 20.0


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
    (the API answers 503: the node cannot decide now), and is not cached; so does
    :class:`~allmende.errors.MessageError` when over ``lookups_per_second``.
    """

    def __init__(
        self,
        lookup: Callable[[str], bool],
        *,
        cache_seconds: float = DEFAULT_SIGNER_CACHE_SECONDS,
        max_cached: int = MAX_CACHED_SIGNERS,
        max_strangers: int = MAX_CACHED_STRANGERS,
        lookups_per_second: float = MAX_LOOKUPS_PER_SECOND,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._cache_seconds = cache_seconds
        self._clock = clock
        # address -> expiry, least recently used first
        self._registered: OrderedDict[str, float] = OrderedDict()
        self._strangers: OrderedDict[str, float] = OrderedDict()
        self._limits = {True: max_cached, False: max_strangers}
        self._rate = lookups_per_second
        self._tokens = lookups_per_second
        self._refilled = clock()
        self._inflight: dict[str, asyncio.Future[bool]] = {}

    def cached(self) -> int:
        """How many answers are kept now (both kinds)."""
        return len(self._registered) + len(self._strangers)

    async def is_registered(self, address: str) -> bool:
        address = to_checksum_address(address)
        now = self._clock()
        for answer, cache in ((True, self._registered), (False, self._strangers)):
            expiry = cache.get(address)
            if expiry is not None:
                if now < expiry:
                    cache.move_to_end(address)
                    return answer
                del cache[address]
        pending = self._inflight.get(address)
        if pending is not None:
            return await asyncio.shield(pending)
        self._take_token(now)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._inflight[address] = future
        try:
            registered = bool(await anyio.to_thread.run_sync(self._lookup, address))
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # marked retrieved: maybe nobody else waits for it
            raise
        else:
            future.set_result(registered)
        finally:
            del self._inflight[address]
        self._remember(address, registered, now)
        return registered

    def _take_token(self, now: float) -> None:
        self._tokens = min(self._rate, self._tokens + (now - self._refilled) * self._rate)
        self._refilled = now
        if self._tokens < 1:
            raise MessageError(
                f"Too many messages from senders this node has not seen lately (over "
                f"{self._rate:g} Registry lookups a second); try again in a few seconds."
            )
        self._tokens -= 1

    def _remember(self, address: str, registered: bool, now: float) -> None:
        ttl = self._cache_seconds
        if not registered:
            ttl = min(ttl, NEGATIVE_CACHE_SECONDS)
        cache = self._registered if registered else self._strangers
        cache[address] = now + ttl
        cache.move_to_end(address)
        while len(cache) > self._limits[registered]:
            cache.popitem(last=False)
