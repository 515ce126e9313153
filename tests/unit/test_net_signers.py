"""Who may send messages: the Registry lookup and its brief cache, and the offline list."""

from __future__ import annotations

import asyncio
import threading

import pytest

from allmende.chain.addresses import to_checksum_address
from allmende.errors import ChainError, MessageError
from allmende.net.signers import RegistrySigners, StaticSigners

A = "0x" + "aa" * 20
B = "0x" + "bb" * 20


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_registry_answers_are_cached_briefly() -> None:
    calls: list[str] = []
    registered = {A}

    def lookup(address: str) -> bool:
        calls.append(address)
        return address.lower() in {a.lower() for a in registered}

    clock = _Clock()
    signers = RegistrySigners(lookup, cache_seconds=10, clock=clock)

    async def scenario() -> None:
        assert await signers.is_registered(A)
        assert await signers.is_registered(A.upper().replace("0X", "0x"))
        assert len(calls) == 1  # cached, case-insensitive
        assert not await signers.is_registered(B)
        registered.add(B)
        clock.now = 0.5
        assert not await signers.is_registered(B)  # negative answer still cached
        clock.now = 1.5
        assert await signers.is_registered(B)  # negative cache is short
        registered.discard(A)
        clock.now = 9.0
        assert await signers.is_registered(A)  # positive cache still valid
        clock.now = 11.0
        assert not await signers.is_registered(A)

    asyncio.run(scenario())


def test_a_failing_lookup_propagates_and_is_not_cached() -> None:
    answers = [ChainError("down"), True]

    def lookup(address: str) -> bool:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    signers = RegistrySigners(lookup)

    async def scenario() -> None:
        with pytest.raises(ChainError):
            await signers.is_registered(A)
        assert await signers.is_registered(A)

    asyncio.run(scenario())


def test_static_signers() -> None:
    signers = StaticSigners([A])
    assert asyncio.run(signers.is_registered(A.upper().replace("0X", "0x")))
    assert not asyncio.run(signers.is_registered(B))


def _address(i: int) -> str:
    return "0x" + f"{i:040x}"


def test_a_flood_of_random_keys_stays_within_the_caches_and_the_lookup_rate() -> None:
    calls: list[str] = []

    def lookup(address: str) -> bool:
        calls.append(address)
        return address == to_checksum_address(A)

    clock = _Clock()
    signers = RegistrySigners(
        lookup, max_cached=2, max_strangers=3, lookups_per_second=5, clock=clock
    )

    async def scenario() -> None:
        assert await signers.is_registered(A)
        refused = 0
        for i in range(1, 200):  # strangers, 0.01 s apart: 2 s of flood
            clock.now += 0.01
            try:
                assert not await signers.is_registered(_address(i))
            except MessageError as exc:
                assert "try again" in str(exc)
                refused += 1
        # a burst of 5, then 5 a second: at most 5 + 2 * 5 lookups, the rest refused uncalled
        assert 1 + 10 <= len(calls) <= 1 + 15
        assert refused == 199 - (len(calls) - 1)
        assert signers.cached() <= 2 + 3
        # the registered node was not evicted by the strangers, and costs no lookup
        before = len(calls)
        assert await signers.is_registered(A)
        assert len(calls) == before

    asyncio.run(scenario())


def test_registered_answers_are_evicted_least_recently_used_first() -> None:
    calls: list[str] = []

    def lookup(address: str) -> bool:
        calls.append(address)
        return True

    signers = RegistrySigners(lookup, max_cached=2, lookups_per_second=100, clock=_Clock())
    first, second, third = (_address(i) for i in (1, 2, 3))

    async def scenario() -> None:
        for address in (first, second, first, third):  # `second` is least recently used
            await signers.is_registered(address)
        assert len(calls) == 3
        await signers.is_registered(first)
        assert len(calls) == 3
        await signers.is_registered(second)
        assert len(calls) == 4

    asyncio.run(scenario())


def test_concurrent_messages_from_one_new_sender_cost_one_lookup() -> None:
    calls: list[str] = []
    release = threading.Event()

    def lookup(address: str) -> bool:
        calls.append(address)
        release.wait(5)
        return True

    signers = RegistrySigners(lookup)

    async def scenario() -> None:
        waiting = [asyncio.create_task(signers.is_registered(A)) for _ in range(20)]
        await asyncio.sleep(0.05)
        release.set()
        assert await asyncio.gather(*waiting) == [True] * 20
        assert len(calls) == 1

    asyncio.run(scenario())
