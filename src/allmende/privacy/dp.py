"""Client-level differential privacy on the trainer: clip the update, add Gaussian noise.

This is DP-FedAvg (McMahan et al. 2018, "Learning Differentially Private Recurrent Language
Models"): the unit of privacy is a whole trainer, i.e. everything in one node's dataset. For a
round, with the global model ``g`` and the locally trained model ``w``::

    delta   = w - g                                  # every floating tensor, flattened
    delta  *= min(1, C / ||delta||_2)                # L2 over all tensors together: ||delta|| <= C
    delta  += N(0, sigma^2 I)                        # sigma = noise_share_std(z, C, shares)
    update  = g + delta                              # what leaves the node

Where the noise goes, and what it protects (``shares``):

- ``shares = 1`` (a job's ``noise = "per_update"``, the default): every update carries the whole
  noise ``z * C``. Each update on its own is a Gaussian mechanism with sensitivity ``C`` and
  noise multiplier ``z``, so the guarantee holds against the aggregators, who see each update,
  and against everyone who sees the models. The FedAvg mean of ``n`` updates then carries noise
  of std ``z * C / sqrt(n)`` per coordinate, more than the aggregate needs.
- ``shares = m`` (``noise = "split"``): each trainer adds ``N(0, (z*C)^2 / m)``, so the sum of
  ``m`` honest updates carries ``N(0, (z*C)^2)``, the noise of the central mechanism on the sum
  (sensitivity ``C``), and the FedAvg mean ``sum / n`` carries std ``z * C / n``. That protects
  what the aggregate reveals (the models of every round), against whoever only sees them. An
  aggregator that sees one update in the clear sees only its share: against it, the multiplier
  is ``z / sqrt(m)``. Secure aggregation (:mod:`allmende.privacy.secagg`) is what hides the
  single updates; this module gives each trainer its share through :func:`noise_share_std`.

Assumptions: the ``m`` trainers of a round add their noise honestly (a trainer that adds none
weakens everyone's guarantee, never its own). If only ``h < m`` of the included trainers add
their share, the sum carries std ``z * C * sqrt(h / m)``: the round is then a Gaussian
mechanism with multiplier ``z * sqrt(h / m)``, and
:func:`~allmende.privacy.accountant.epsilon_spent`
with that multiplier says what ε holds. A job sets ``m`` to its ``min_trainers``: a round is
never final with fewer included updates, so with honest trainers the sum carries at least the
calibrated noise (more trainers add more noise, never less).

The noise comes from a torch generator seeded by :func:`noise_generator` from the node's own
secret (32 bytes from ``os.urandom``, kept in its state database), never from the job's seed:
an aggregator that knew the seed could regenerate the noise and subtract it. With the secret
the noise is still reproducible *by this node*, so a node that crashed between committing an
update and serving it trains again and gets the same bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import math

import torch
from torch import Tensor

State = dict[str, Tensor]

NOISE_DOMAIN = b"allmende-dp-noise/v1"


def delta_of(update: State, global_state: State) -> State:
    """``update - global_state`` for every floating tensor (others are left out)."""
    return {
        key: update[key].double() - ref.double()
        for key, ref in global_state.items()
        if ref.is_floating_point()
    }


def l2_norm(delta: State) -> float:
    """The L2 norm of all tensors of ``delta`` together, as one vector."""
    return math.sqrt(math.fsum(float((value * value).sum()) for value in delta.values()))


def clip(delta: State, clip_norm: float) -> tuple[State, float]:
    """``delta`` scaled to L2 norm at most ``clip_norm`` (over all tensors together), and its
    norm before clipping. A delta inside the ball is returned unchanged."""
    if not clip_norm > 0:
        raise ValueError(f"clip_norm must be > 0, got {clip_norm!r}")
    norm = l2_norm(delta)
    scale = min(1.0, clip_norm / norm) if norm > 0 else 1.0
    return {key: value * scale for key, value in delta.items()}, norm


def noise_share_std(noise_multiplier: float, clip_norm: float, shares: int) -> float:
    """The std of the Gaussian noise each of ``shares`` trainers adds to every coordinate, so
    that the sum of their updates carries std ``noise_multiplier * clip_norm``:
    ``z * C / sqrt(shares)``. ``shares = 1``: each update carries the whole noise.

    This is the seam for distributed noise under secure aggregation: a job whose aggregators
    see only the sum of ``m`` updates gives each trainer ``shares = m``.
    """
    if shares < 1:
        raise ValueError(f"shares must be >= 1, got {shares!r}")
    if noise_multiplier < 0 or clip_norm <= 0:
        raise ValueError("noise_multiplier must be >= 0 and clip_norm > 0")
    return noise_multiplier * clip_norm / math.sqrt(shares)


def noise_generator(secret: bytes, *, job: str, round_: int) -> torch.Generator:
    """A CPU generator for the noise of ``job``'s round ``round_``, seeded by HMAC-SHA256 of
    the node's secret: unpredictable to anyone without the secret, reproducible with it."""
    if len(secret) < 16:
        raise ValueError("the noise secret must have at least 16 bytes")
    message = NOISE_DOMAIN + b"|" + job.encode() + b"|" + str(round_).encode()
    seed = int.from_bytes(hmac.new(secret, message, hashlib.sha256).digest()[:8], "big")
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed)
    return generator


def privatize(
    update: State,
    global_state: State,
    *,
    clip_norm: float,
    noise_std: float,
    generator: torch.Generator,
) -> tuple[State, float]:
    """The update that leaves the node: ``global + clip(update - global) + N(0, noise_std^2)``
    on every floating tensor, in each tensor's dtype; and the norm of the delta before clipping
    (for the log). Non-floating tensors (counters) are the global model's, so they carry nothing
    of the local data. Keys are visited in sorted order, so the noise is the same on every run
    with the same generator."""
    clipped, norm = clip(delta_of(update, global_state), clip_norm)
    out: State = {}
    for key in sorted(global_state):
        ref = global_state[key]
        if key not in clipped:
            out[key] = ref.clone()
            continue
        noise = torch.normal(
            0.0, noise_std, size=tuple(ref.shape), generator=generator, dtype=torch.float64
        )  # (same shape as the tensor)
        out[key] = (ref.double() + clipped[key] + noise).to(ref.dtype).contiguous()
    return out, norm
