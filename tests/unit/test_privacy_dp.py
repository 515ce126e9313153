"""Clipping and the Gaussian noise of client-level DP (allmende.privacy.dp)."""

from __future__ import annotations

import math

import pytest
import torch

from allmende.privacy.dp import (
    clip,
    delta_of,
    l2_norm,
    noise_generator,
    noise_share_std,
    privatize,
)

SECRET = bytes(range(32))


def _state(seed: int, scale: float = 1.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "a.weight": torch.randn(64, 32, generator=g) * scale,
        "a.bias": torch.randn(32, generator=g) * scale,
        "steps": torch.tensor(7, dtype=torch.int64),
    }


def test_a_large_update_is_clipped_to_the_norm_over_all_tensors() -> None:
    base = _state(0)
    moved = {k: (v + 3.0 if v.is_floating_point() else v + 5) for k, v in base.items()}
    before = l2_norm(delta_of(moved, base))
    clipped, norm = clip(delta_of(moved, base), 2.5)
    assert norm == pytest.approx(before) and before > 2.5
    assert l2_norm(clipped) == pytest.approx(2.5, rel=1e-12)
    ratio = clipped["a.bias"] / delta_of(moved, base)["a.bias"]  # one scale for every tensor
    assert torch.allclose(ratio, torch.full_like(ratio, 2.5 / before))


def test_a_small_update_is_left_as_it_is() -> None:
    base = _state(0)
    moved = {k: (v + 1e-3 if v.is_floating_point() else v) for k, v in base.items()}
    delta = delta_of(moved, base)
    clipped, _ = clip(delta, 10.0)
    assert all(torch.equal(clipped[k], delta[k]) for k in delta)


def test_without_noise_the_update_is_global_plus_clipped_delta_and_counters_are_global() -> None:
    base = _state(0)
    moved = {k: (v * 2 if v.is_floating_point() else v + 5) for k, v in base.items()}
    out, _ = privatize(moved, base, clip_norm=1.0, noise_std=0.0, generator=torch.Generator())
    assert l2_norm(delta_of(out, base)) == pytest.approx(1.0, rel=1e-6)
    assert out["steps"].item() == 7  # a counter carries nothing of the local data
    assert out["a.weight"].dtype == torch.float32


def test_the_noise_has_the_calibrated_scale() -> None:
    """Over ~200k draws the sample std is within 1% of z*C/sqrt(m) (its standard error is
    0.16%), the mean within 6 standard errors of 0, and 68.3% of draws within one std."""
    z, c, m = 1.3, 0.7, 4
    sigma = noise_share_std(z, c, m)
    assert sigma == pytest.approx(z * c / 2)
    base = {"w": torch.zeros(200_000)}
    out, _ = privatize(
        base,
        base,
        clip_norm=c,
        noise_std=sigma,
        generator=noise_generator(SECRET, job="j", round_=0),
    )
    noise = out["w"].double()
    n = noise.numel()
    assert abs(float(noise.std()) / sigma - 1) < 0.01
    assert abs(float(noise.mean())) < 6 * sigma / math.sqrt(n)
    within = float((noise.abs() <= sigma).double().mean())
    assert abs(within - 0.6827) < 0.005


def test_the_shares_of_m_trainers_sum_to_the_whole_noise() -> None:
    z, c, m = 2.0, 1.0, 10
    base = {"w": torch.zeros(50_000)}
    total = torch.zeros(50_000, dtype=torch.float64)
    for trainer in range(m):
        secret = bytes([trainer]) * 32  # each trainer its own secret
        out, _ = privatize(
            base, base, clip_norm=c, noise_std=noise_share_std(z, c, m),
            generator=noise_generator(secret, job="j", round_=3),
        )  # fmt: skip
        total += out["w"].double()
    assert abs(float(total.std()) / (z * c) - 1) < 0.02  # std error of the estimate: 0.3%


def test_the_noise_comes_from_the_node_secret_not_the_torch_seed() -> None:
    base = {"w": torch.zeros(1000)}

    def draw(secret: bytes, job: str = "j", round_: int = 1, torch_seed: int = 0) -> torch.Tensor:
        torch.manual_seed(torch_seed)  # what a job seed could set: no effect
        out, _ = privatize(
            base, base, clip_norm=1.0, noise_std=1.0,
            generator=noise_generator(secret, job=job, round_=round_),
        )  # fmt: skip
        return out["w"]

    assert torch.equal(draw(SECRET), draw(SECRET, torch_seed=99))  # reproducible by the node
    assert not torch.equal(draw(SECRET), draw(bytes(32)))
    assert not torch.equal(draw(SECRET), draw(SECRET, round_=2))
    assert not torch.equal(draw(SECRET), draw(SECRET, job="k"))


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        noise_share_std(1.0, 1.0, 0)
    with pytest.raises(ValueError):
        clip({"w": torch.ones(3, dtype=torch.float64)}, 0.0)
    with pytest.raises(ValueError):
        noise_generator(b"short", job="j", round_=0)
