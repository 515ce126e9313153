"""Aggregation rules against straightforward references, determinism, and update validation."""

from __future__ import annotations

import math
import random
import statistics
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import allmende.learn.aggregate as aggregate_module
from allmende.errors import AggregationError, ConfigError
from allmende.learn.aggregate import (
    aggregate,
    check_norm,
    check_update,
    delta_norm,
    robust_delta,
)
from allmende.learn.rules import RULES, FedAvgParams, min_updates, rule_params

SHAPES = {"layer.weight": (2, 3), "layer.bias": (3,)}
ROBUST_PARAMS = {
    "trimmed_mean": {"beta": 0.25},
    "median": {},
    "krum": {"f": 2},
    "multi_krum": {"f": 2, "m": 3},
    "centered_clip": {"tau": 0.5, "iters": 3},
    "clipped_mean": {"scale": 1.0, "iters": 3},
}
ALL_PARAMS = {"fedavg": {}, **ROBUST_PARAMS}
DIM_CLIP = 4


def random_state(gen: torch.Generator, scale: float = 1.0) -> dict[str, torch.Tensor]:
    return {key: torch.randn(shape, generator=gen) * scale for key, shape in SHAPES.items()}


def make_round(n: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    global_state = random_state(gen)
    updates = []
    for i in range(n):
        state = {k: v + 0.1 * torch.randn(v.shape, generator=gen) for k, v in global_state.items()}
        updates.append((f"0x{(i + 1) * 17:040x}", state, 10 + 7 * i))
    return global_state, updates


def flat(state: dict[str, torch.Tensor], keys=tuple(SHAPES)) -> np.ndarray:
    return np.concatenate([state[k].double().numpy().ravel() for k in keys])


def unflat(global_state, vector: np.ndarray) -> dict[str, torch.Tensor]:
    """Reference ``global + delta`` in float64, cast to float32."""
    out, offset = {}, 0
    for key, ref in global_state.items():
        size = ref.numel()
        piece = torch.from_numpy(vector[offset : offset + size].copy()).view(ref.shape)
        out[key] = (ref.double() + piece).float()
        offset += size
    return out


def deltas_of(global_state, updates) -> list[list[float]]:
    base = flat(global_state)
    ordered = sorted(updates, key=lambda u: u[0].lower())
    return [list(flat(state) - base) for _, state, _ in ordered]


def assert_states_close(actual, expected, atol=1e-6):
    assert list(actual) == list(expected)
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=atol)


# --- fedavg -----------------------------------------------------------------------------------


def test_fedavg_equals_plain_pytorch_loop_bit_for_bit():
    global_state, updates = make_round(6, seed=3)
    ordered = sorted(updates, key=lambda u: u[0])
    total = sum(w for _, _, w in ordered)
    reference = {k: sum(w * s[k] for _, s, w in ordered) / total for k in global_state}
    result = aggregate("fedavg", global_state, updates, {})
    for key in global_state:
        assert result[key].dtype == torch.float32
        assert torch.equal(result[key], reference[key])


def test_fedavg_matches_float64_weighted_mean():
    global_state, updates = make_round(5, seed=4)
    weights = np.array([w for _, _, w in updates], dtype=np.float64)
    models = np.stack([flat(s) for _, s, _ in updates])
    expected = (weights[:, None] * models).sum(0) / weights.sum()
    np.testing.assert_allclose(
        flat(aggregate("fedavg", global_state, updates, {})), expected, rtol=0, atol=1e-6
    )


def test_fedavg_weights_matter():
    global_state, updates = make_round(3, seed=5)
    reweighted = [(a, s, 1 if i else 1000) for i, (a, s, _) in enumerate(updates)]
    a = aggregate("fedavg", global_state, updates, {})
    b = aggregate("fedavg", global_state, reweighted, {})
    assert not torch.equal(a["layer.weight"], b["layer.weight"])


def test_non_floating_entries_come_from_the_global_model():
    global_state, updates = make_round(3)
    global_state["steps"] = torch.tensor(7)
    for i, (_, state, _) in enumerate(updates):
        state["steps"] = torch.tensor(100 + i)
    for rule in ("fedavg", "median"):
        assert int(aggregate(rule, global_state, updates, ALL_PARAMS[rule])["steps"]) == 7


# --- robust rules against per-coordinate references ----------------------------------------------


def test_trimmed_mean_reference():
    global_state, updates = make_round(9, seed=6)
    rows = deltas_of(global_state, updates)
    k = math.floor(0.25 * len(rows))
    expected = [
        sum(sorted(col)[k : len(col) - k]) / (len(col) - 2 * k) for col in zip(*rows, strict=True)
    ]
    result = aggregate("trimmed_mean", global_state, updates, {"beta": 0.25})
    assert_states_close(result, unflat(global_state, np.array(expected)))


def test_trimmed_mean_with_beta_zero_is_the_plain_mean():
    global_state, updates = make_round(4, seed=7)
    rows = np.array(deltas_of(global_state, updates))
    result = aggregate("trimmed_mean", global_state, updates, {"beta": 0.0})
    assert_states_close(result, unflat(global_state, rows.mean(0)))


@pytest.mark.parametrize("n", [7, 8])
def test_median_reference(n):
    global_state, updates = make_round(n, seed=8)
    expected = [
        statistics.median(col) for col in zip(*deltas_of(global_state, updates), strict=True)
    ]
    result = aggregate("median", global_state, updates, {})
    assert_states_close(result, unflat(global_state, np.array(expected)))


def krum_reference(rows: list[list[float]], f: int) -> list[float]:
    n = len(rows)
    scores = []
    for i in range(n):
        dists = sorted(
            sum((a - b) ** 2 for a, b in zip(rows[i], rows[j], strict=True))
            for j in range(n)
            if j != i
        )
        scores.append(sum(dists[: n - f - 2]))
    return scores


def test_krum_reference_picks_the_most_central_update():
    global_state, updates = make_round(7, seed=9)
    updates[2] = (updates[2][0], {k: v + 5.0 for k, v in updates[2][1].items()}, 1)
    rows = deltas_of(global_state, updates)
    scores = krum_reference(rows, f=1)
    best = min(range(len(rows)), key=lambda i: scores[i])
    result = aggregate("krum", global_state, updates, {"f": 1})
    assert_states_close(result, unflat(global_state, np.array(rows[best])))


def test_multi_krum_reference_averages_the_m_best():
    global_state, updates = make_round(8, seed=10)
    rows = deltas_of(global_state, updates)
    scores = krum_reference(rows, f=2)
    best = sorted(sorted(range(len(rows)), key=lambda i: scores[i])[:3])
    expected = np.mean([rows[i] for i in best], axis=0)
    result = aggregate("multi_krum", global_state, updates, {"f": 2, "m": 3})
    assert_states_close(result, unflat(global_state, expected))


def test_centered_clip_reference():
    global_state, updates = make_round(6, seed=11)
    rows = np.array(deltas_of(global_state, updates))
    tau, iters = 0.2, 4
    center = np.zeros(rows.shape[1])
    for _ in range(iters):
        steps = []
        for row in rows:
            diff = row - center
            norm = float(np.sqrt((diff * diff).sum()))
            steps.append(diff * min(1.0, tau / norm))
        center = center + np.mean(steps, axis=0)
    result = aggregate("centered_clip", global_state, updates, {"tau": tau, "iters": iters})
    assert_states_close(result, unflat(global_state, center))


def clipped_mean_reference(rows: np.ndarray, scale: float, iters: int) -> np.ndarray:
    center = np.zeros(rows.shape[1])
    for _ in range(iters):
        diffs = rows - center
        norms = np.sqrt((diffs * diffs).sum(axis=1))
        tau = scale * float(np.median(norms))
        steps = [diff * min(1.0, tau / norm) for diff, norm in zip(diffs, norms, strict=True)]
        center = center + np.mean(steps, axis=0)
    return center


@pytest.mark.parametrize(("n", "scale", "iters"), [(7, 1.0, 1), (8, 1.0, 3), (9, 1.5, 4)])
def test_clipped_mean_reference(n, scale, iters):
    global_state, updates = make_round(n, seed=13)
    rows = np.array(deltas_of(global_state, updates))
    expected = clipped_mean_reference(rows, scale, iters)
    result = aggregate("clipped_mean", global_state, updates, {"scale": scale, "iters": iters})
    assert_states_close(result, unflat(global_state, expected))


def _rows_round(rows: list[list[float]]):
    global_state = {"w": torch.zeros(len(rows[0]))}
    updates = [
        (f"0x{i + 1:040x}", {"w": torch.tensor(row, dtype=torch.float32)}, 1)
        for i, row in enumerate(rows)
    ]
    return global_state, updates


def test_clipped_mean_small_example_by_hand():
    # norms 5, 1, 2: the radius is their median, 2; (3, 4) is scaled to (1.2, 1.6), and the
    # mean of (1.2, 1.6), (0, 1), (0, 2) is (0.4, 4.6 / 3)
    global_state, updates = _rows_round([[3.0, 4.0], [0.0, 1.0], [0.0, 2.0]])
    out = aggregate("clipped_mean", global_state, updates, {"iters": 1})["w"]
    torch.testing.assert_close(out, torch.tensor([0.4, 4.6 / 3]), rtol=0, atol=1e-7)
    # an even count takes the mean of the two middle norms: (1 + 2) / 2 = 1.5 for norms
    # 5, 1, 2, 0.5; so (3, 4) becomes (0.9, 1.2), (0, 2) becomes (0, 1.5)
    global_state, updates = _rows_round([[3.0, 4.0], [0.0, 1.0], [0.0, 2.0], [0.5, 0.0]])
    out = aggregate("clipped_mean", global_state, updates, {"iters": 1})["w"]
    torch.testing.assert_close(out, torch.tensor([1.4 / 4, 3.7 / 4]), rtol=0, atol=1e-7)
    # a boosted update counts like a typical one: four honest (1, 0) and one (64, 0) give (1, 0)
    global_state, updates = _rows_round([[1.0, 0.0]] * 4 + [[64.0, 0.0]])
    for iters in (1, 3):
        out = aggregate("clipped_mean", global_state, updates, {"iters": iters})["w"]
        assert out.tolist() == [1.0, 0.0]
    assert aggregate("fedavg", global_state, updates, {})["w"][0] == pytest.approx(13.6)


@settings(max_examples=40, deadline=None)
@given(
    honest=st.lists(
        st.lists(st.floats(-1, 1, width=32), min_size=DIM_CLIP, max_size=DIM_CLIP),
        min_size=5,
        max_size=5,
    ),
    order_seed=st.integers(0, 1000),
)
def test_clipped_mean_is_the_same_bytes_in_any_order(honest, order_seed):
    rows = [*honest, [1e4] * DIM_CLIP, [-3e3] * DIM_CLIP]
    global_state, updates = _rows_round(rows)
    first = aggregate("clipped_mean", global_state, updates, {})["w"]
    shuffled = list(updates)
    random.Random(order_seed).shuffle(shuffled)
    second = aggregate("clipped_mean", global_state, shuffled, {})["w"]
    assert first.numpy().tobytes() == second.numpy().tobytes()


# --- determinism -------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", RULES)
def test_order_and_address_case_do_not_change_a_single_bit(rule):
    global_state, updates = make_round(9, seed=12)
    first = aggregate(rule, global_state, updates, ALL_PARAMS[rule])
    shuffled = list(updates)
    random.Random(1).shuffle(shuffled)
    shuffled = [(a.upper().replace("0X", "0x"), s, w) for a, s, w in shuffled]
    second = aggregate(rule, global_state, shuffled, ALL_PARAMS[rule])
    for key in global_state:
        assert first[key].numpy().tobytes() == second[key].numpy().tobytes()


# --- robustness: a minority of huge updates cannot drag the result ---------------------------

N_HONEST, N_ATTACKERS, DIM = 7, 2, 5
honest_values = st.lists(
    st.lists(st.floats(-1, 1, allow_nan=False, width=32), min_size=DIM, max_size=DIM),
    min_size=N_HONEST,
    max_size=N_HONEST,
)
attack_values = st.lists(
    st.lists(
        st.one_of(st.floats(1e3, 1e6, width=32), st.floats(-1e6, -1e3, width=32)),
        min_size=DIM,
        max_size=DIM,
    ),
    min_size=N_ATTACKERS,
    max_size=N_ATTACKERS,
)


def attacked_round(honest, attackers, order_seed):
    global_state = {"w": torch.zeros(DIM)}
    rows = [(False, h) for h in honest] + [(True, a) for a in attackers]
    random.Random(order_seed).shuffle(rows)  # attackers anywhere in address order
    updates = [
        (f"0x{i + 1:040x}", {"w": torch.tensor(values, dtype=torch.float32)}, 1)
        for i, (_, values) in enumerate(rows)
    ]
    return global_state, updates, np.array(honest, dtype=np.float64)


@pytest.mark.parametrize("rule", ["trimmed_mean", "median", "krum", "multi_krum"])
@settings(max_examples=40, deadline=None)
@given(honest=honest_values, attackers=attack_values, order_seed=st.integers(0, 1000))
def test_robust_rule_stays_in_the_honest_bounding_box(rule, honest, attackers, order_seed):
    global_state, updates, honest_arr = attacked_round(honest, attackers, order_seed)
    params = {"trimmed_mean": {"beta": 0.25}, "krum": {"f": 2}, "multi_krum": {"f": 2, "m": 5}}
    out = aggregate(rule, global_state, updates, params.get(rule, {}))["w"].double().numpy()
    slack = 1e-6
    assert np.all(out >= honest_arr.min(0) - slack)
    assert np.all(out <= honest_arr.max(0) + slack)


@settings(max_examples=40, deadline=None)
@given(honest=honest_values, attackers=attack_values, order_seed=st.integers(0, 1000))
def test_centered_clip_moves_a_bounded_distance_from_the_honest_mean(honest, attackers, order_seed):
    tau, iters = 10.0, 3
    global_state, updates, honest_arr = attacked_round(honest, attackers, order_seed)
    out = aggregate("centered_clip", global_state, updates, {"tau": tau, "iters": iters})
    out_arr = out["w"].double().numpy()
    assert np.linalg.norm(out_arr) <= iters * tau + 1e-6  # never more than tau per iteration
    n, b = N_HONEST + N_ATTACKERS, N_ATTACKERS
    mean = honest_arr.mean(0)
    bound = (b / n) ** iters * np.linalg.norm(mean) + b * tau / (n - b)
    assert np.linalg.norm(out_arr - mean) <= bound + 1e-5


@pytest.mark.parametrize("iters", [1, 3])
@settings(max_examples=40, deadline=None)
@given(honest=honest_values, attackers=attack_values, order_seed=st.integers(0, 1000))
def test_clipped_mean_stays_near_the_honest_updates(iters, honest, attackers, order_seed):
    global_state, updates, honest_arr = attacked_round(honest, attackers, order_seed)
    out = aggregate("clipped_mean", global_state, updates, {"iters": iters})["w"].double().numpy()
    # the honest majority bounds each step's radius: step k moves at most 2**k * H, with H the
    # largest honest norm, so the result is within (2**iters - 1) * H of the global model
    largest = float(np.linalg.norm(honest_arr, axis=1).max())
    assert np.linalg.norm(out) <= (2**iters - 1) * largest + 1e-5


def test_plain_fedavg_is_dragged_by_an_attacker():
    """The counterpart: the non-robust rule really is moved, so the property tests can fail."""
    global_state, updates, _ = attacked_round([[0.0] * DIM] * N_HONEST, [[1e6] * DIM] * 2, 0)
    assert float(aggregate("fedavg", global_state, updates, {})["w"].min()) > 1e5


# --- validation --------------------------------------------------------------------------------


def test_check_update_returns_the_exact_delta_norm():
    global_state, updates = make_round(1)
    state = updates[0][1]
    expected = float(np.linalg.norm(flat(state) - flat(global_state)))
    norm = check_norm(state, global_state, norm_bound=expected * 1.0001)
    assert norm == pytest.approx(expected, rel=1e-12)
    assert delta_norm(state, global_state) == norm
    assert check_norm(state, global_state, norm_bound=None) is None  # no bound: not computed


def _broken(kind: str):
    global_state, updates = make_round(1)
    state = dict(updates[0][1])
    if kind == "nan":
        state["layer.bias"] = torch.tensor([0.0, float("nan"), 0.0])
    elif kind == "inf":
        state["layer.bias"] = torch.tensor([0.0, float("inf"), 0.0])
    elif kind == "shape":
        state["layer.bias"] = torch.zeros(4)
    elif kind == "dtype":
        state["layer.bias"] = torch.zeros(3, dtype=torch.float64)
    elif kind == "missing":
        del state["layer.bias"]
    elif kind == "extra":
        state["other"] = torch.zeros(1)
    elif kind == "norm":
        state["layer.bias"] = state["layer.bias"] + 1e4
    return state, global_state


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("nan", "NaN or infinite"),
        ("inf", "NaN or infinite"),
        ("shape", "shape (4,)"),
        ("dtype", "torch.float64"),
        ("missing", "missing: ['layer.bias']"),
        ("extra", "unexpected: ['other']"),
        ("norm", "norm bound"),
    ],
)
def test_check_update_rejects(kind, words):
    state, global_state = _broken(kind)
    with pytest.raises(
        AggregationError,
        match=words.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]"),
    ):
        check_update(state, global_state)
        check_norm(state, global_state, norm_bound=10.0)


def test_every_registered_robust_rule_has_its_arithmetic():
    deltas = torch.tensor([[0.0, 1.0], [1.0, 3.0], [2.0, 2.0], [9.0, -9.0], [1.5, 2.5]]).double()
    for rule, params in RULES.items():
        if params is FedAvgParams:
            continue
        result = robust_delta(deltas, rule_params(rule))  # defaults: Krum's f=1 needs 5
        assert result.shape == (2,) and bool(torch.isfinite(result).all()), rule


def test_parameters_of_no_robust_rule_are_refused():
    with pytest.raises(AggregationError, match="names no robust rule"):
        robust_delta(torch.zeros(3, 2, dtype=torch.float64), FedAvgParams())


@pytest.mark.parametrize("weight", [0, -3, True, 1.5, 2**60])
def test_aggregate_refuses_bad_weights(weight):
    global_state, updates = make_round(2)
    address, state, _ = updates[0]
    with pytest.raises(AggregationError, match="weight"):
        aggregate("fedavg", global_state, [(address, state, weight), updates[1]], {})


def test_aggregate_refuses_empty_and_duplicate_trainers():
    global_state, updates = make_round(2)
    with pytest.raises(AggregationError, match="no updates"):
        aggregate("median", global_state, [], {})
    duplicate = (updates[0][0].upper().replace("0X", "0x"), updates[1][1], 3)
    with pytest.raises(AggregationError, match="same trainer"):
        aggregate("median", global_state, [updates[0], duplicate], {})


def test_krum_needs_enough_updates():
    global_state, updates = make_round(6)
    with pytest.raises(AggregationError, match="at least 7"):
        aggregate("krum", global_state, updates, {"f": 2})
    aggregate("krum", global_state, updates, {"f": 1})  # 6 >= 2*1 + 3
    with pytest.raises(AggregationError, match="m=7"):
        aggregate("multi_krum", global_state, updates, {"f": 1, "m": 7})


@pytest.mark.parametrize(
    ("rule", "params", "words"),
    [
        ("fedavgg", {}, "Unknown aggregation rule 'fedavgg'"),
        ("trimmed_mean", {"beta": 0.5}, "'beta'"),
        ("trimmed_mean", {"beta": "0.1"}, "'beta'"),
        ("krum", {"f": -1}, "'f'"),
        ("multi_krum", {"f": 1, "m": 0}, "'m'"),
        ("centered_clip", {"tau": 0.0}, "'tau'"),
        ("centered_clip", {"tau": 1.0, "iters": 0}, "'iters'"),
        ("clipped_mean", {"scale": 0.0}, "'scale'"),
        ("clipped_mean", {"iters": 0}, "'iters'"),
        ("clipped_mean", {"iters": 101}, "'iters'"),
        ("clipped_mean", {"tau": 1.0}, "Unknown parameter 'tau'"),
        ("median", {"beta": 0.1}, "Unknown parameter 'beta'"),
    ],
)
def test_unknown_rule_and_bad_params_are_config_errors(rule, params, words):
    with pytest.raises(ConfigError, match=words):
        rule_params(rule, params)
    global_state, updates = make_round(9)
    with pytest.raises(ConfigError):
        aggregate(rule, global_state, updates, params)


def test_rule_params_accepts_good_params_and_defaults():
    assert rule_params("krum", {"f": 3}).f == 3  # type: ignore[attr-defined]
    assert rule_params("centered_clip").iters == 3  # type: ignore[attr-defined]
    defaults = rule_params("clipped_mean")
    assert (defaults.scale, defaults.iters) == (1.0, 3)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("rule", "params", "needed"),
    [
        ("fedavg", {}, 1),
        ("clipped_mean", {}, 1),
        ("trimmed_mean", {"beta": 0.4}, 1),
        ("krum", {"f": 2}, 7),
        ("multi_krum", {"f": 1, "m": 9}, 9),
        ("multi_krum", {"f": 3}, 9),
    ],
)
def test_min_updates_is_what_aggregate_needs(rule, params, needed):
    assert min_updates(rule_params(rule, params)) == needed
    global_state, updates = make_round(needed)
    aggregate(rule, global_state, updates, params)  # enough
    if needed > 1:
        with pytest.raises(AggregationError):
            aggregate(rule, global_state, updates[:-1], params)


def test_exact_sum_of_squares_is_exactly_rounded_and_order_free(monkeypatch):
    monkeypatch.setattr(aggregate_module, "SUM_CHUNK", 7)  # force many chunks
    gen = torch.Generator().manual_seed(0)
    values = torch.randn(100, generator=gen, dtype=torch.float64) * torch.logspace(-8, 8, 100)
    exact = float(sum(Fraction(v) ** 2 for v in values.tolist()))
    assert aggregate_module.exact_sum_of_squares(values) == exact
    shuffled = values[torch.randperm(100, generator=gen)]
    assert aggregate_module.exact_sum_of_squares(shuffled[:30], shuffled[30:]) == exact
