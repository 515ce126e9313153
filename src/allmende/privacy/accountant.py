"""The privacy accountant: noise multiplier for a target (ε, δ), and ε spent after k rounds.

Both are Google's ``dp-accounting`` RDP accountant over the composition of ``steps`` Gaussian
mechanisms (sensitivity 1, std ``noise_multiplier``), each one Poisson-subsampled at
``sample_rate`` when it is below 1 (amplification by sampling).

Amplification needs the sample to be secret from the adversary. Allmende's trainer sampling
(:mod:`allmende.privacy.sampling`) is public on purpose, so aggregators can check it; a job
therefore accounts each trainer's *contributions* with ``sample_rate = 1``: a trainer that
contributed to ``k`` rounds has spent :func:`epsilon_spent` ``(z, delta, k)``. Sampling lowers
how many rounds a trainer contributes to (and so what it spends), not the ε of a contribution.

Multipliers are rounded up to :data:`MULTIPLIER_STEP`, so every node of a job gets the same
value from the same spec (an upward rounding only adds noise).
"""

from __future__ import annotations

import functools
import math

import dp_accounting
from dp_accounting import dp_event, rdp

MULTIPLIER_STEP = 1e-4
MAX_MULTIPLIER = 1e4  # a target that needs more is refused (the model would be pure noise)


def _event(noise_multiplier: float, sample_rate: float) -> dp_event.DpEvent:
    gaussian = dp_event.GaussianDpEvent(noise_multiplier)
    if sample_rate >= 1.0:
        return gaussian
    return dp_event.PoissonSampledDpEvent(sample_rate, gaussian)


def _check(delta: float, steps: int, sample_rate: float) -> None:
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps!r}")
    if not 0.0 < sample_rate <= 1.0:
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate!r}")


def epsilon_spent(
    noise_multiplier: float, *, delta: float, steps: int, sample_rate: float = 1.0
) -> float:
    """ε after ``steps`` rounds at ``noise_multiplier`` (δ fixed), by the RDP accountant.
    0 for no steps; infinite for no noise."""
    _check(delta, steps, sample_rate)
    if steps == 0:
        return 0.0
    if noise_multiplier <= 0:
        return math.inf
    accountant = rdp.RdpAccountant()
    accountant.compose(_event(noise_multiplier, sample_rate), steps)
    return float(accountant.get_epsilon(delta))


@functools.lru_cache(maxsize=256)
def noise_multiplier_for(
    epsilon: float, *, delta: float, steps: int, sample_rate: float = 1.0
) -> float:
    """The smallest noise multiplier (rounded up to :data:`MULTIPLIER_STEP`) whose ``steps``
    rounds spend at most ``epsilon`` at ``delta``. ValueError when even
    :data:`MAX_MULTIPLIER` does not reach it."""
    _check(delta, steps, sample_rate)
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon!r}")
    if steps == 0:
        return 0.0
    if epsilon_spent(MAX_MULTIPLIER, delta=delta, steps=steps, sample_rate=sample_rate) > epsilon:
        raise ValueError(
            f"epsilon {epsilon:g} over {steps} rounds needs a noise multiplier above "
            f"{MAX_MULTIPLIER:g}; raise epsilon or lower the rounds"
        )
    # Searched over whole steps of MULTIPLIER_STEP (``discrete``): the smallest one that meets
    # the target, exactly, so every node finds the same value.
    steps_of_multiplier = dp_accounting.calibrate_dp_mechanism(
        rdp.RdpAccountant,
        lambda k: _composed(k * MULTIPLIER_STEP, sample_rate, steps),
        epsilon,
        delta,
        bracket_interval=dp_accounting.ExplicitBracketInterval(1, _MAX_STEPS),
        discrete=True,
    )
    return round(int(steps_of_multiplier) * MULTIPLIER_STEP, 4)


_MAX_STEPS = round(MAX_MULTIPLIER / MULTIPLIER_STEP)


def _composed(noise_multiplier: float, sample_rate: float, steps: int) -> dp_event.DpEvent:
    return dp_event.SelfComposedDpEvent(_event(noise_multiplier, sample_rate), steps)
