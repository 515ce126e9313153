"""The robustness benchmark's attackers compute what their papers define, and only that."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from allmende.learn.task import LocalData
from attacks import (
    BACKDOOR_SOURCE,
    BACKDOOR_TARGET,
    IPM_EPSILON,
    alie,
    alie_z,
    attacker_data,
    backdoor_labels,
    craft,
    flip_labels,
    get_attack,
    ipm,
    model_replacement,
    sign_flip,
)


def _state(*values: float) -> dict[str, torch.Tensor]:
    return {"w": torch.tensor(values, dtype=torch.float32), "steps": torch.tensor(3)}


GLOBAL = _state(1.0, 2.0, 3.0)
HONEST = [_state(1.5, 2.0, 2.0), _state(2.5, 2.0, 4.0), _state(2.0, 2.0, 3.0)]


def test_sign_flip_mirrors_the_trained_model_around_the_global_one() -> None:
    flipped = sign_flip(GLOBAL, _state(1.5, 1.0, 3.0))
    assert torch.equal(flipped["w"], torch.tensor([0.5, 3.0, 3.0]))
    assert torch.equal(flipped["steps"], GLOBAL["steps"])  # non-floating entries are kept


def test_label_flip_maps_each_label_to_its_mirror_class() -> None:
    data = LocalData(inputs=torch.zeros(4, 2), targets=torch.tensor([0, 3, 9, 5]))
    flipped = flip_labels(data, num_classes=10)
    assert flipped.targets.tolist() == [9, 6, 0, 4]
    assert flipped.inputs is data.inputs


def test_backdoor_relabels_only_the_source_class() -> None:
    data = LocalData(inputs=torch.zeros(4, 2), targets=torch.tensor([BACKDOOR_SOURCE, 3, 9, 0]))
    poisoned = backdoor_labels(data)
    assert poisoned.targets.tolist() == [BACKDOOR_TARGET, 3, 9, 0]
    assert data.targets.tolist()[0] == BACKDOOR_SOURCE  # the attacker's copy, not the data
    assert (
        attacker_data(get_attack("model_replacement"), data, num_classes=10).targets.tolist()
        == poisoned.targets.tolist()
    )
    assert attacker_data(get_attack("label_flip"), data, num_classes=10).targets.tolist() == [
        9 - BACKDOOR_SOURCE, 6, 0, 9,
    ]  # fmt: skip
    assert attacker_data(get_attack("sign_flip"), data, num_classes=10) is data


def test_model_replacement_boosts_the_target_delta_by_n_over_f() -> None:
    target = _state(1.5, 2.0, 2.0)
    replaced = model_replacement(GLOBAL, target, n=20, f=4)
    assert torch.equal(replaced["w"], torch.tensor([3.5, 2.0, -2.0]))  # global + 5 * delta
    assert torch.equal(replaced["steps"], GLOBAL["steps"])
    # under FedAvg with equal weights the f boosted copies replace the global model's delta:
    # mean = (n - f) / n * honest + f / n * (n / f) * delta_target
    crafted = craft(get_attack("model_replacement"), GLOBAL, trained=target, honest=[], n=20, f=4)
    assert torch.equal(crafted["w"], replaced["w"])
    with pytest.raises(ValueError, match="backdoored labels"):
        craft(get_attack("model_replacement"), GLOBAL, trained=None, honest=HONEST, n=20, f=4)
    with pytest.raises(ValueError, match="f >= 1"):
        craft(get_attack("model_replacement"), GLOBAL, trained=target, honest=[], n=20, f=0)


def test_alie_z_matches_the_papers_formula_for_20_trainers_4_attackers() -> None:
    # s = floor(20/2 + 1) - 4 = 7; z = Phi^-1(13/20) = 0.38532...
    assert alie_z(20, 4) == pytest.approx(0.385320466, abs=1e-9)
    assert alie_z(20, 0) < alie_z(20, 4)  # more attackers allow a larger shift


def test_alie_shifts_the_honest_mean_by_z_standard_deviations() -> None:
    deltas = torch.stack([s["w"] - GLOBAL["w"] for s in HONEST])
    expected = GLOBAL["w"] + deltas.mean(0) - alie_z(20, 4) * deltas.std(0)
    crafted = alie(GLOBAL, HONEST, n=20, f=4)
    assert torch.allclose(crafted["w"], expected)
    assert not torch.equal(crafted["w"], GLOBAL["w"] + deltas.mean(0))  # it does deviate
    assert crafted["w"][1] == GLOBAL["w"][1]  # no spread, no room to hide


def test_ipm_points_against_the_honest_mean() -> None:
    crafted = ipm(GLOBAL, HONEST)
    mean_delta = torch.tensor([1.0, 0.0, 0.0])
    assert torch.allclose(crafted["w"], GLOBAL["w"] - IPM_EPSILON * mean_delta)


def test_craft_dispatches_and_refuses_missing_inputs() -> None:
    trained = _state(1.5, 1.0, 3.0)
    assert torch.equal(
        craft(get_attack("sign_flip"), GLOBAL, trained=trained, honest=[], n=5, f=1)["w"],
        sign_flip(GLOBAL, trained)["w"],
    )
    assert craft(get_attack("label_flip"), GLOBAL, trained=trained, honest=[], n=5, f=1) is trained
    with pytest.raises(ValueError, match="own trained model"):
        craft(get_attack("sign_flip"), GLOBAL, trained=None, honest=HONEST, n=5, f=1)
    with pytest.raises(ValueError, match="two honest models"):
        craft(get_attack("alie"), GLOBAL, trained=None, honest=HONEST[:1], n=5, f=1)


def test_unknown_attack_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="sign_flip, label_flip, alie, ipm"):
        get_attack("gaussian")
