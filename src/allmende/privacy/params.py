"""Secure aggregation's parameters: the spec table, the ring bound and the SecAgg+ graph size.

Pure arithmetic (no crypto, no numpy), so the job spec validator can use it.

**Ring bound.** Each trainer clips every coordinate of its update ``d = model - global`` to
``[-clip, clip]`` (a value outside is clipped on the trainer, and counted in its log; nothing is
capped silently elsewhere), multiplies it by its weight ``w <= W`` and rounds ``w * d * 2^f`` to
an integer in the ring ``Z_{2^b}``. The sum of ``n`` such integers has magnitude at most
``n * (W * clip * 2^f + 1/2)``; :func:`scale_bits` picks the largest ``f`` with
``n * (W * clip * 2^f + 1) <= 2^(b-1) - 1``, so the sum, read as a signed ``b``-bit number, never
wraps. The spec validator refuses parameters that leave fewer than :data:`MIN_SCALE_BITS`
fraction bits. The mean then differs from the exact mean of the clipped updates by at most
``2^-(f+1)`` per coordinate (``n`` roundings of at most half a unit, divided by ``sum w >= n``).

**Graph and threshold.** With ``n`` trainers and a tolerated dropout fraction ``delta``, at
most ``D = floor(delta * n)`` trainers may drop after the keys are exchanged. SecAgg+ (Bell et
al. 2020) pairs each trainer with only ``k`` neighbours on a random k-regular graph (a Harary
graph over a permutation of the roster seeded by the job and round); a trainer's seeds are
shared ``t``-out-of-``k`` among its neighbours, with ``t = k // 2 + 1``. :func:`graph_size`
takes the smallest even ``k`` for which the chance that some trainer keeps fewer than ``t``
surviving neighbours, for ``D`` dropouts that do not depend on the graph, is at most
:data:`FAILURE_BOUND` (a union bound over the hypergeometric tail). When no ``k < n - 1`` meets
it — below a few hundred trainers at ``delta = 1/3`` — the graph is complete (plain SecAgg,
Bonawitz et al. 2017) and ``t = n - 1 - D``: then any ``D`` dropouts are recovered, always.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

MIN_DROPOUT = 1 / 3
MIN_SCALE_BITS = 16  # fixed-point resolution: mean error at most 2^-17 ~ 7.6e-6 a coordinate
FAILURE_BOUND = 2.0**-20  # SecAgg+ graphs: chance a round's dropouts cannot be recovered
MIN_SECURE_TRAINERS = 4  # fewer cannot have a majority threshold that survives a dropout


class SecureSpec(BaseModel):
    """``[aggregation.secure]``: aggregators see only the sum of the trainers' masked updates.

    ``clip``: each coordinate of a trainer's update (``model - global``) is clipped to
    ``[-clip, clip]`` on the trainer before masking; raise it if the trainers' logs report many
    clipped values, lower it to gain fixed-point precision. ``dropout``: the fraction of
    trainers that may drop after exchanging keys and still be recovered within the round
    (at least a third); raising it raises the graph degree. ``ring_bits``: the ring ``Z_2^b``
    of the masked values (32 halves the bytes sent; 64 allows larger clip ranges and weights).
    ``degree``: force a SecAgg+ graph degree (even) instead of the computed one. Every
    participant must agree on all of them: they are part of the job spec.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    clip: float = Field(gt=0.0, le=1e6)
    dropout: float = Field(default=MIN_DROPOUT, ge=MIN_DROPOUT, lt=0.5)
    ring_bits: int = Field(default=64)
    degree: int | None = Field(default=None, ge=2)


@dataclass(frozen=True)
class GraphSize:
    """The SecAgg(+) graph for ``n`` trainers: degree ``k``, share threshold ``t``, dropouts
    ``max_dropouts`` and the bound on the chance that they cannot be recovered (0: never)."""

    n: int
    k: int
    t: int
    max_dropouts: int
    failure_bound: float

    @property
    def complete(self) -> bool:
        return self.k == self.n - 1


def max_dropouts(n: int, dropout: float) -> int:
    return math.floor(dropout * n + 1e-9)


def _tail(population: int, bad: int, draws: int, at_least: int) -> float:
    """P[X >= at_least] for X hypergeometric: ``draws`` of ``population`` with ``bad`` bad."""
    total = math.comb(population, draws)
    return (
        sum(
            math.comb(bad, i) * math.comb(population - bad, draws - i)
            for i in range(at_least, min(bad, draws) + 1)
        )
        / total
    )


def graph_size(n: int, dropout: float, *, degree: int | None = None) -> GraphSize:
    """The graph degree and threshold for ``n`` trainers; :class:`ValueError` saying why if
    secure aggregation cannot run with them."""
    if n < MIN_SECURE_TRAINERS:
        raise ValueError(
            f"secure aggregation needs at least {MIN_SECURE_TRAINERS} trainers, not {n}"
        )
    dropped = max_dropouts(n, dropout)
    candidates = [degree] if degree is not None else list(range(2, n - 1, 2))
    for k in candidates:
        if k >= n - 1:
            break
        if k % 2:
            raise ValueError(f"a SecAgg+ degree must be even, not {k}")
        t = k // 2 + 1
        bound = min(1.0, n * _tail(n - 1, dropped, k, k - t + 1))
        if bound <= FAILURE_BOUND or degree is not None:
            return GraphSize(n=n, k=k, t=t, max_dropouts=dropped, failure_bound=bound)
    k = n - 1
    t = k - dropped
    if 2 * t <= k:
        raise ValueError(
            f"with {n} trainers and dropout {dropout:.3g} ({dropped} may drop) the share "
            f"threshold would be {t} of {k}, not a majority; add trainers or lower dropout"
        )
    return GraphSize(n=n, k=k, t=t, max_dropouts=dropped, failure_bound=0.0)


def scale_bits(*, trainers: int, max_weight: int, clip: float, ring_bits: int) -> int:
    """The largest ``f`` with ``trainers * (max_weight * clip * 2^f + 1) <= 2^(b-1) - 1``."""
    room = (2 ** (ring_bits - 1) - 1) / trainers - 1  # what one trainer's |value| may reach
    if room < max_weight * clip:
        return -1
    return math.floor(math.log2(room / (max_weight * clip)))


def check_secure(
    spec: SecureSpec, *, min_trainers: int, max_trainers: int, max_weight: int
) -> None:
    """Raise :class:`ValueError` (one sentence and its remedy) if the spec could wrap the ring
    or leave a roster size whose dropouts cannot be recovered."""
    if spec.ring_bits not in (32, 64):
        raise ValueError(f"ring_bits must be 32 or 64, not {spec.ring_bits}")
    f = scale_bits(
        trainers=max_trainers, max_weight=max_weight, clip=spec.clip, ring_bits=spec.ring_bits
    )
    if f < MIN_SCALE_BITS:
        raise ValueError(
            f"the sum of {max_trainers} updates of weight up to {max_weight} clipped to "
            f"±{spec.clip:g} leaves {max(f, 0)} fraction bits in a {spec.ring_bits}-bit ring "
            f"(the bound n × weight × clip × 2^f < 2^{spec.ring_bits - 1} needs f >= "
            f"{MIN_SCALE_BITS}); use ring_bits = 64, lower clip, max_trainers or max_weight"
        )
    if min_trainers < MIN_SECURE_TRAINERS:
        raise ValueError(
            f"secure aggregation needs min_trainers >= {MIN_SECURE_TRAINERS} (a majority share "
            f"threshold that survives a dropout), not {min_trainers}; raise min_trainers"
        )
    if spec.degree is not None and spec.degree % 2:
        raise ValueError(f"a SecAgg+ degree must be even, not {spec.degree}")
    for n in range(min_trainers, max_trainers + 1):
        dropped = max_dropouts(n, spec.dropout)  # the complete graph is the fallback: check it
        if 2 * (n - 1 - dropped) <= n - 1:
            raise ValueError(
                f"with {n} trainers and dropout {spec.dropout:.3g} ({dropped} may drop) the "
                f"share threshold would not be a majority; raise min_trainers or lower dropout"
            )
