"""Shamir sharing, the ChaCha20 mask PRG, fixed-point encoding and the ring bound."""

from __future__ import annotations

import itertools
import math
import secrets

import numpy as np
import pytest

from allmende.privacy import shamir
from allmende.privacy.masking import Ring, decode, encode, prg
from allmende.privacy.params import (
    MIN_SCALE_BITS,
    SecureSpec,
    check_secure,
    graph_size,
    scale_bits,
)


def test_any_threshold_shares_recover_the_secret_and_fewer_do_not() -> None:
    secret = int.from_bytes(secrets.token_bytes(32), "big")
    shares = shamir.split(secret, [1, 2, 3, 4, 5, 6], 4)
    for subset in itertools.combinations(shares, 4):
        assert shamir.combine({x: shares[x] for x in subset}) == secret
    for subset in itertools.combinations(shares, 3):
        assert shamir.combine({x: shares[x] for x in subset}) != secret


def test_shares_of_the_same_secret_differ_between_dealings() -> None:
    first = shamir.split(42, [1, 2, 3], 2)
    second = shamir.split(42, [1, 2, 3], 2)
    assert first != second  # fresh random coefficients each time
    assert shamir.combine({1: first[1], 3: first[3]}) == 42


@pytest.mark.parametrize(
    ("secret", "xs", "threshold"),
    [(-1, [1, 2], 2), (shamir.PRIME, [1, 2], 2), (5, [1, 1], 2), (5, [0, 1], 2), (5, [1, 2], 3)],
)
def test_split_refuses_bad_arguments(secret: int, xs: list[int], threshold: int) -> None:
    with pytest.raises(ValueError):
        shamir.split(secret, xs, threshold)


def test_share_bytes_roundtrip_and_refuse_non_field_values() -> None:
    assert shamir.share_value(shamir.share_bytes(shamir.PRIME - 1)) == shamir.PRIME - 1
    with pytest.raises(ValueError):
        shamir.share_value(b"\xff" * shamir.SHARE_BYTES)
    with pytest.raises(ValueError):
        shamir.share_value(b"\x01" * 65)


RING64 = Ring(bits=64, scale_bits=40, clip=1.0)


def test_prg_is_the_chacha20_keystream() -> None:
    # RFC 7539 appendix A.1, test vector 1: all-zero key and nonce, block counter 0
    expected = bytes.fromhex(
        "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7"
        "da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586"
    )
    assert prg(bytes(32), 8, RING64).astype("<u8").tobytes() == expected
    ring32 = Ring(bits=32, scale_bits=10, clip=1.0)
    assert prg(bytes(32), 16, ring32).astype("<u4").tobytes() == expected
    assert not np.array_equal(prg(bytes(32), 8, RING64), prg(b"\x01" + bytes(31), 8, RING64))


def test_encoding_rounds_within_half_a_unit_and_clips_on_the_trainer() -> None:
    values = np.array([0.5, -0.25, 1e-13, -0.999, 3.0, -7.0])
    words, clipped = encode(values, 1, RING64)
    assert clipped == 2
    back = decode(words, RING64)
    assert np.all(np.abs(back - np.clip(values, -1, 1)) <= 2.0 ** -(RING64.scale_bits + 1))
    assert back[4] == 1.0 and back[5] == -1.0


def test_masks_cancel_in_the_ring() -> None:
    a, b = secrets.token_bytes(32), secrets.token_bytes(32)
    x, _ = encode(np.array([0.25, -0.5, 0.75]), 1, RING64)
    masked = x + prg(a, 3, RING64) - prg(b, 3, RING64)
    assert not np.array_equal(masked, x)
    assert np.array_equal(masked - prg(a, 3, RING64) + prg(b, 3, RING64), x)


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_the_sum_at_the_bound_does_not_wrap_and_one_more_bit_would(bits: int, sign: float) -> None:
    n, weight, clip = 64, 3, 0.5
    f = scale_bits(trainers=n, max_weight=weight, clip=clip, ring_bits=bits)
    ring = Ring(bits=bits, scale_bits=f, clip=clip)
    word, _ = encode(np.array([sign * clip]), weight, ring)
    total = ring.zeros(1)
    for _ in range(n):
        total = total + word
    assert decode(total, ring)[0] == pytest.approx(sign * n * weight * clip, rel=1e-6)
    wider = Ring(bits=bits, scale_bits=f + 1, clip=clip)  # past the bound: the sum wraps
    word, _ = encode(np.array([sign * clip]), weight, wider)
    total = wider.zeros(1)
    for _ in range(n):
        total = total + word
    assert decode(total, wider)[0] != pytest.approx(sign * n * weight * clip, rel=1e-6)


def test_the_validator_refuses_parameters_that_could_wrap() -> None:
    spec = SecureSpec(clip=1.0, ring_bits=32)
    check_secure(spec, min_trainers=4, max_trainers=32, max_weight=1)
    with pytest.raises(ValueError, match="fraction bits"):
        check_secure(spec, min_trainers=4, max_trainers=256, max_weight=10_000)
    assert scale_bits(trainers=256, max_weight=10_000, clip=1.0, ring_bits=32) < MIN_SCALE_BITS
    with pytest.raises(ValueError, match="ring_bits"):
        check_secure(
            SecureSpec(clip=1.0, ring_bits=48), min_trainers=4, max_trainers=8, max_weight=1
        )
    with pytest.raises(ValueError, match="min_trainers >= 4"):
        check_secure(SecureSpec(clip=1.0), min_trainers=3, max_trainers=8, max_weight=1)


def test_dropout_below_a_third_is_refused() -> None:
    with pytest.raises(ValueError):
        SecureSpec(clip=1.0, dropout=0.2)


@pytest.mark.parametrize("n", [4, 5, 8, 9, 16, 32, 64])
def test_the_graph_recovers_any_tolerated_dropouts_at_small_sizes(n: int) -> None:
    size = graph_size(n, 1 / 3)
    assert size.max_dropouts == math.floor(n / 3)
    assert 2 * size.t > size.k  # a majority of neighbours
    assert size.k - size.t >= size.max_dropouts  # any D dropouts leave t neighbours
    assert size.failure_bound == 0.0


def test_large_rosters_get_a_sparse_graph_with_a_stated_failure_bound() -> None:
    size = graph_size(256, 1 / 3)
    assert size.k < 255 and size.k % 2 == 0
    assert 0 < size.failure_bound <= 2.0**-20
    assert graph_size(32, 1 / 3).k < 31  # SecAgg+ already pairs with fewer than all at 32
