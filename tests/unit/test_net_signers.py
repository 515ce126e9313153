"""Who may send messages: the Registry lookup and its brief cache, and the offline list."""

from __future__ import annotations

import asyncio

import pytest

from allmende.errors import ChainError
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
