"""Shamir secret sharing over the prime field GF(2^521 - 1).

A secret is an integer below :data:`PRIME` (SecAgg shares 32-byte secrets: a trainer's self-mask
seed and its X25519 masking key). :func:`split` draws a random polynomial ``f`` of degree
``threshold - 1`` with ``f(0) = secret`` and hands out ``(x, f(x))`` for the given non-zero
``x`` (a trainer's 1-based index in the job's roster); any ``threshold`` shares give the secret
back by Lagrange interpolation at 0 (:func:`combine`), fewer say nothing about it.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

PRIME = 2**521 - 1  # a Mersenne prime: every 32-byte secret is one field element
SHARE_BYTES = 66  # ceil(521 / 8): a share's y value, big-endian


def split(secret: int, xs: Sequence[int], threshold: int) -> dict[int, int]:
    """Shares ``{x: f(x)}`` of ``secret`` for each x in ``xs``; any ``threshold`` recover it."""
    if not 0 <= secret < PRIME:
        raise ValueError("the secret must be a field element (0 <= secret < 2**521 - 1)")
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise ValueError("share points must be distinct and non-zero")
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold {threshold} must be between 1 and the {len(xs)} shares")
    coefficients = [secret] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    shares = {}
    for x in xs:
        y = 0
        for c in reversed(coefficients):  # Horner: f(x) = c0 + x (c1 + x (c2 + ...))
            y = (y * x + c) % PRIME
        shares[x] = y
    return shares


def combine(shares: dict[int, int]) -> int:
    """The secret ``f(0)`` from ``{x: f(x)}``: Lagrange interpolation over exactly these shares."""
    if not shares:
        raise ValueError("no shares to combine")
    secret = 0
    for xi, yi in shares.items():
        numerator, denominator = 1, 1
        for xj in shares:
            if xj != xi:
                numerator = numerator * (-xj) % PRIME
                denominator = denominator * (xi - xj) % PRIME
        secret = (secret + yi * numerator * pow(denominator, -1, PRIME)) % PRIME
    return secret


def share_bytes(y: int) -> bytes:
    """A share's y value as :data:`SHARE_BYTES` big-endian bytes."""
    return y.to_bytes(SHARE_BYTES, "big")


def share_value(raw: bytes) -> int:
    """A share's y value from its bytes; :class:`ValueError` if not a field element."""
    if len(raw) != SHARE_BYTES:
        raise ValueError(f"a share is {SHARE_BYTES} bytes, not {len(raw)}")
    y = int.from_bytes(raw, "big")
    if y >= PRIME:
        raise ValueError("the share is not a field element")
    return y
