"""The robustness table's cells run Allmende's real training and aggregation with attackers in."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from allmende.learn.rules import RULES, rule_params
from allmende.node.jobspec import DEFAULT_AGGREGATION
from report import robustness_summary
from robustness import (
    GOAL_POINTS,
    ROBUST_TRAINERS,
    ROWS_ATTACKS,
    RULE_PARAMS,
    robustness_job,
    run_cell,
    run_table,
)


def test_every_rule_has_valid_parameters_for_the_table() -> None:
    assert set(RULE_PARAMS) == set(RULES)
    for rule, params in RULE_PARAMS.items():
        rule_params(rule, params)  # raises ConfigError if Allmende would refuse them
    # the default rule is measured with exactly what a job without [aggregation] gets
    assert RULE_PARAMS[DEFAULT_AGGREGATION.rule] == DEFAULT_AGGREGATION.params
    assert "model_replacement" in ROWS_ATTACKS


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


def test_model_replacement_takes_over_fedavg_but_not_the_default_rule() -> None:
    job = robustness_job("iid", rounds=5)
    clean = run_cell(job, attack="none", rule="fedavg", num_classes=10)
    replaced = run_cell(job, attack="model_replacement", rule="fedavg", num_classes=10)
    robust = run_cell(
        job, attack="model_replacement", rule=DEFAULT_AGGREGATION.rule, num_classes=10
    )
    assert clean["backdoor"] == 0.0  # no clean model reads a 7 as a 1 ...
    # ... but after five rounds of boosted replacements most of FedAvg's 7s are 1s, while the
    # default rule clips the boosted updates to a typical update's length
    assert replaced["backdoor"] > 0.5
    assert robust["backdoor"] < replaced["backdoor"] / 2


def test_a_tiny_table_has_the_promised_shape_and_its_goal_follows_from_its_rows() -> None:
    rules = ("fedavg", DEFAULT_AGGREGATION.rule)
    table = run_table(rounds=1, rules=rules, partitions=("iid",), progress=lambda _: None)
    assert [set(row) for row in table["rows"]] == [{"partition", "attack", "rule", "accuracy"}] * (
        len(ROWS_ATTACKS) * len(rules)
    )
    assert {(row["attack"], row["rule"]) for row in table["rows"]} == {
        (attack, rule) for attack in ROWS_ATTACKS for rule in rules
    }
    clean = table["clean_fedavg"]["iid"]
    assert clean == next(
        row["accuracy"]
        for row in table["rows"]
        if row["attack"] == "none" and row["rule"] == "fedavg"
    )
    assert len(table["clean_fedavg_curve"]["iid"]) == 0  # one round: no 10th round to record
    assert table["default_rule"] == DEFAULT_AGGREGATION.rule
    assert (table["rounds"], table["lr"]) == (1, 0.5)
    holding = [
        rule
        for rule in rules
        if all(
            clean - row["accuracy"] <= GOAL_POINTS
            for row in table["rows"]
            if row["rule"] == rule and row["attack"] != "none"
        )
    ]
    assert table["goal"]["iid"]["holding"] == holding
    assert "fedavg" not in holding  # one round with boosted replacements wrecks FedAvg
    assert robustness_summary(table)[0].startswith(f"iid: clean FedAvg {clean:.3f}")


def test_an_unknown_attack_is_refused() -> None:
    with pytest.raises(ValueError, match="Unknown attack"):
        run_cell(robustness_job("iid", rounds=1), attack="noise", rule="median", num_classes=10)
