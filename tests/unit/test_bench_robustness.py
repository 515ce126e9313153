"""The robustness table's cells run Allmende's real training and aggregation with attackers in."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from allmende.learn.rules import RULES, rule_params
from robustness import ROBUST_TRAINERS, RULE_PARAMS, robustness_job, run_cell


def test_every_rule_has_valid_parameters_for_the_table() -> None:
    assert set(RULE_PARAMS) == set(RULES)
    for rule, params in RULE_PARAMS.items():
        rule_params(rule, params)  # raises ConfigError if Allmende would refuse them


@pytest.mark.parametrize("partition", ["iid", "dirichlet"])
def test_a_one_round_cell_trains_repeatably_and_an_attack_makes_it_worse(partition: str) -> None:
    job = robustness_job(partition, rounds=1)
    assert job.trainers == ROBUST_TRAINERS
    honest = run_cell(job, attack="none", rule="fedavg", num_classes=10)
    assert run_cell(job, attack="none", rule="fedavg", num_classes=10) == honest  # seeded
    # one round of honest training brings the test loss below that of a uniform guess ...
    assert honest["loss"] < math.log(10)
    # ... and sign-flipping attackers averaged in by FedAvg push it back up
    flipped = run_cell(job, attack="sign_flip", rule="fedavg", num_classes=10)
    assert flipped["loss"] > honest["loss"]


def test_an_unknown_attack_is_refused() -> None:
    with pytest.raises(ValueError, match="Unknown attack"):
        run_cell(robustness_job("iid", rounds=1), attack="noise", rule="median", num_classes=10)
