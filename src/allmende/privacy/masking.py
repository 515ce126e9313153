"""Fixed-point values in the ring Z_{2^b} and the ChaCha20 masks over them.

A trainer's weighted update ``w * d`` (``d`` clipped to ``[-clip, clip]`` a coordinate) becomes
``round(w * d * 2^f) mod 2^b`` (:func:`encode`); masks are ChaCha20 keystreams (the cipher run
over zero bytes, key = a 32-byte seed, nonce 0) read as little-endian ``b``-bit words
(:func:`prg`). Ring arithmetic is numpy's unsigned wrap-around, so it is the same bits on every
machine. :func:`decode` reads a sum back as signed integers over ``2^f``; the ring bound in
:mod:`allmende.privacy.params` keeps it from wrapping.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

_NONCE = bytes(16)  # cryptography's ChaCha20 nonce: 4-byte counter || 12-byte nonce, all zero


@dataclass(frozen=True)
class Ring:
    """``Z_{2^bits}`` with ``scale_bits`` fraction bits; values are clipped to ``[-clip, clip]``."""

    bits: int
    scale_bits: int
    clip: float

    @property
    def dtype(self) -> type[np.unsignedinteger]:
        return np.uint64 if self.bits == 64 else np.uint32

    @property
    def signed(self) -> type[np.signedinteger]:
        return np.int64 if self.bits == 64 else np.int32

    def zeros(self, dim: int) -> np.ndarray:
        return np.zeros(dim, dtype=self.dtype)


def clip(values: np.ndarray, bound: float) -> tuple[np.ndarray, int]:
    """``values`` clipped to ``[-bound, bound]`` and how many coordinates were clipped."""
    clipped = int(np.count_nonzero(np.abs(values) > bound))
    return np.clip(values, -bound, bound), clipped


def encode(values: np.ndarray, weight: int, ring: Ring) -> tuple[np.ndarray, int]:
    """``round(weight * clip(values) * 2^f)`` in the ring (shape ``(dim,)``), and the number
    of clipped coordinates. Rounding is numpy's round-half-to-even in float64."""
    clipped, count = clip(np.asarray(values, dtype=np.float64), ring.clip)
    scaled = np.rint(clipped * float(weight) * 2.0**ring.scale_bits)  # (dim,) integer-valued
    return scaled.astype(np.int64).astype(ring.signed).view(ring.dtype), count


def decode(total: np.ndarray, ring: Ring) -> np.ndarray:
    """A ring sum as float64: the signed integers over ``2^f`` (shape ``(dim,)``)."""
    return total.view(ring.signed).astype(np.float64) / 2.0**ring.scale_bits


def prg(seed: bytes, dim: int, ring: Ring) -> np.ndarray:
    """The mask for ``seed``: ``dim`` ring words of the ChaCha20 keystream under ``seed``."""
    if len(seed) != 32:
        raise ValueError("a mask seed is 32 bytes")
    encryptor = Cipher(algorithms.ChaCha20(seed, _NONCE), mode=None).encryptor()
    stream = encryptor.update(bytes(dim * ring.bits // 8))
    return np.frombuffer(stream, dtype=np.dtype(ring.dtype).newbyteorder("<")).astype(ring.dtype)
