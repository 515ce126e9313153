"""The accountant against Google's dp-accounting called directly."""

from __future__ import annotations

import math

import pytest
from dp_accounting import dp_event, pld, rdp

from allmende.privacy.accountant import MULTIPLIER_STEP, epsilon_spent, noise_multiplier_for


def _direct(z: float, steps: int, delta: float, q: float = 1.0) -> float:
    accountant = rdp.RdpAccountant()
    event: dp_event.DpEvent = dp_event.GaussianDpEvent(z)
    if q < 1:
        event = dp_event.PoissonSampledDpEvent(q, event)
    accountant.compose(event, steps)
    return float(accountant.get_epsilon(delta))


@pytest.mark.parametrize(
    ("z", "steps", "delta", "q"),
    [(1.0, 10, 1e-5, 1.0), (2.5, 40, 1e-6, 1.0), (0.8, 100, 1e-5, 0.1), (4.0, 1, 1e-3, 1.0)],
)
def test_epsilon_spent_is_dp_accountings(z: float, steps: int, delta: float, q: float) -> None:
    assert epsilon_spent(z, delta=delta, steps=steps, sample_rate=q) == _direct(z, steps, delta, q)


def test_rdp_is_close_to_the_tighter_pld_bound() -> None:
    """A check that the events are the intended ones: RDP is an upper bound on the PLD ε,
    and not a loose one, for 20 Gaussian rounds."""
    accountant = pld.PLDAccountant()
    accountant.compose(dp_event.GaussianDpEvent(2.0), 20)
    tight = accountant.get_epsilon(1e-5)
    assert tight <= epsilon_spent(2.0, delta=1e-5, steps=20) <= 1.3 * tight


@pytest.mark.parametrize("epsilon", [1.0, 2.0, 4.0, 8.0])
def test_the_noise_multiplier_is_the_smallest_that_meets_the_target(epsilon: float) -> None:
    z = noise_multiplier_for(epsilon, delta=1e-5, steps=10)
    assert _direct(z, 10, 1e-5) <= epsilon < _direct(z - MULTIPLIER_STEP, 10, 1e-5)


def test_more_epsilon_means_less_noise_and_more_rounds_more() -> None:
    zs = [noise_multiplier_for(e, delta=1e-5, steps=10) for e in (1.0, 2.0, 4.0, 8.0)]
    assert zs == sorted(zs, reverse=True)
    assert noise_multiplier_for(4.0, delta=1e-5, steps=20) > zs[2]


def test_edge_cases() -> None:
    assert epsilon_spent(1.0, delta=1e-5, steps=0) == 0.0
    assert epsilon_spent(0.0, delta=1e-5, steps=3) == math.inf
    with pytest.raises(ValueError):
        epsilon_spent(1.0, delta=0.0, steps=3)
    with pytest.raises(ValueError, match="raise epsilon"):
        noise_multiplier_for(1e-6, delta=1e-9, steps=10_000)
