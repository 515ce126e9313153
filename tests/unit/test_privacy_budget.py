"""The privacy ledger, the trainer's privacy gate and the [privacy] spec section."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from allmende.errors import ConfigError, PrivacyError
from allmende.learn.dataset import DatasetDecl
from allmende.node.config import TrainerPrivacy
from allmende.node.jobspec import JobSpec, parse_jobspec
from allmende.node.roles.plan import make_plan
from allmende.node.roles.privacy import TrainerPrivacyGate, decide_privacy, drawn_trainers
from allmende.privacy.budget import PrivacyLedger
from allmende.privacy.sampling import is_sampled
from allmende.store.state import StateDB

BASE: dict[str, Any] = {
    "task": "digits-mlp", "rounds": 4, "optimizer": {"lr": 0.1}, "min_trainers": 2,
    "max_trainers": 4, "quorum": 1, "reward_per_round": 0, "aggregation": {"rule": "fedavg"},
    "norm_bound": 10_000.0,
}  # fmt: skip
ME = "0x" + "ab" * 20


def spec(epsilon: float = 2.0, **privacy: Any) -> JobSpec:
    section = {"epsilon": epsilon, "delta": 1e-5, "clip_norm": 1.0, **privacy}
    return parse_jobspec({**BASE, "privacy": section})


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[PrivacyLedger]:
    opened = PrivacyLedger.open(tmp_path / "state.sqlite")
    yield opened
    opened.close()


def test_charges_add_up_per_job_and_across_jobs(ledger: PrivacyLedger) -> None:
    assert ledger.charge("d", "J:1", 0, job_epsilon=1.0, delta=1e-5)
    assert ledger.charge("d", "J:1", 1, job_epsilon=1.5, delta=1e-5)
    assert ledger.charge("d", "J:2", 0, job_epsilon=2.0, delta=1e-5)
    assert ledger.charge("other", "J:2", 0, job_epsilon=9.0, delta=1e-5)
    assert ledger.job_spend("d", "J:1").contributions == 2
    assert ledger.spent("d") == pytest.approx(3.5)  # 1.5 for job 1 (its latest), 2 for job 2
    assert ledger.spent("other") == 9.0
    assert [s.dataset for s in ledger.datasets()] == ["d", "other"]


def test_a_round_is_charged_once(ledger: PrivacyLedger) -> None:
    assert ledger.charge("d", "J:1", 0, job_epsilon=1.0, delta=1e-5)
    assert not ledger.charge("d", "J:1", 0, job_epsilon=1.0, delta=1e-5)
    assert ledger.job_spend("d", "J:1").contributions == 1


def test_the_budget_is_checked_in_the_charge(ledger: PrivacyLedger) -> None:
    ledger.charge("d", "J:1", 0, job_epsilon=3.0, delta=1e-5, budget=5.0)
    with pytest.raises(PrivacyError, match="over the budget 5"):
        ledger.charge("d", "J:2", 0, job_epsilon=2.5, delta=1e-5, budget=5.0)
    assert ledger.spent("d") == 3.0  # nothing recorded for the refused charge
    assert ledger.charge("d", "J:2", 0, job_epsilon=2.0, delta=1e-5, budget=5.0)


def test_a_charge_is_visible_to_another_connection_at_once(tmp_path: Path) -> None:
    ledger = PrivacyLedger.open(tmp_path / "state.sqlite")
    ledger.charge("d", "J:1", 0, job_epsilon=1.25, delta=1e-5)
    other = sqlite3.connect(tmp_path / "state.sqlite")  # as a restarted process would read it
    assert other.execute("SELECT job_epsilon FROM privacy_charges").fetchall() == [(1.25,)]
    other.close()
    ledger.close()


def test_bad_charges_are_refused(ledger: PrivacyLedger) -> None:
    with pytest.raises(PrivacyError):
        ledger.charge("d", "J:1", 0, job_epsilon=float("nan"), delta=1e-5)


# -- consent ------------------------------------------------------------------------------------


def test_consent_requires_dp_and_bounds_epsilon_and_delta() -> None:
    plain = parse_jobspec(BASE)
    assert decide_privacy(TrainerPrivacy(), plain, spent=0).accepted
    refused = decide_privacy(TrainerPrivacy(max_job_epsilon=4), plain, spent=0)
    assert not refused.accepted and "max_job_epsilon" in refused.reason
    refused = decide_privacy(TrainerPrivacy(max_job_epsilon=4), spec(8.0), spent=0)
    assert (
        not refused.accepted and "8 is above [trainer.privacy] max_job_epsilon 4" in refused.reason
    )
    assert decide_privacy(TrainerPrivacy(max_job_epsilon=4), spec(4.0), spent=0).accepted
    loose = parse_jobspec({**BASE, "privacy": {"epsilon": 1.0, "delta": 1e-3, "clip_norm": 1.0}})
    refused = decide_privacy(TrainerPrivacy(max_job_epsilon=4), loose, spent=0)
    assert not refused.accepted and "max_job_delta" in refused.reason


def test_a_job_over_what_is_left_is_refused() -> None:
    policy = TrainerPrivacy(budget_epsilon=5.0)
    assert decide_privacy(policy, spec(2.0), spent=3.0).accepted
    refused = decide_privacy(policy, spec(2.0), spent=3.5)
    assert (
        not refused.accepted and "1.5 left of [trainer.privacy] budget_epsilon 5" in refused.reason
    )


# -- the gate over two jobs ------------------------------------------------------------------------


def _gate(tmp_path: Path, budget: float | None) -> TrainerPrivacyGate:
    gate = TrainerPrivacyGate(TrainerPrivacy(budget_epsilon=budget), DatasetDecl())
    gate.attach(StateDB.open(tmp_path / "state.sqlite"), jobs_address="0xJOBS")
    return gate


def test_the_budget_is_enforced_across_two_jobs(tmp_path: Path) -> None:
    """Job 1 (ε 2 over 4 rounds) fits a budget of 3; job 2 (ε 2) is refused at joining once
    job 1 spent, and a job 2 joined earlier stops contributing when the next round would pass
    the budget."""
    gate = _gate(tmp_path, budget=3.0)
    plan = make_plan(spec(2.0))
    assert gate.admits(plan.spec).accepted
    for round_ in range(4):
        assert gate.gate(plan, 1, round_, ME).accepted
        gate.charge(plan, 1, round_)
    assert gate.ledger.spent(gate.dataset) == pytest.approx(2.0, abs=1e-3)
    assert not gate.gate(plan, 1, 4, ME).accepted  # the job's contributions are all used
    assert not gate.admits(plan.spec).accepted  # 1 left, job 2 wants 2
    assert gate.gate(plan, 2, 0, ME).accepted  # a job 2 joined before: one round costs < 1
    gate.charge(plan, 2, 0)
    rounds = 1
    while (verdict := gate.gate(plan, 2, rounds, ME)).accepted:
        gate.charge(plan, 2, rounds)
        rounds += 1
    assert "over [trainer.privacy] budget_epsilon 3" in verdict.reason
    assert 1 <= rounds < 4
    assert gate.ledger.spent(gate.dataset) <= 3.0


def test_a_charged_round_passes_the_gate_again_and_is_not_charged_twice(tmp_path: Path) -> None:
    gate = _gate(tmp_path, budget=2.0)
    plan = make_plan(spec(2.0))
    for round_ in range(4):
        gate.charge(plan, 1, round_)
    spent = gate.ledger.spent(gate.dataset)
    assert gate.gate(plan, 1, 3, ME).accepted  # a crash after the charge: the update may go
    gate.charge(plan, 1, 3)
    assert gate.ledger.spent(gate.dataset) == spent
    assert gate.ledger.job_spend(gate.dataset, gate.job_key(1)).contributions == 4


def test_the_noise_secret_is_made_once_and_kept(tmp_path: Path) -> None:
    first = _gate(tmp_path, budget=None).secret()
    assert len(first) == 32 and first == _gate(tmp_path, budget=None).secret()
    (tmp_path / "other").mkdir()
    assert first != _gate(tmp_path / "other", budget=None).secret()  # each node its own


def test_a_norm_bound_too_low_for_the_noise_is_named(tmp_path: Path) -> None:
    gate = _gate(tmp_path, budget=None)
    tight = make_plan(parse_jobspec({**BASE, "norm_bound": 5.0, "privacy": {
        "epsilon": 2.0, "delta": 1e-5, "clip_norm": 1.0}}))  # fmt: skip
    verdict = gate.gate(tight, 1, 0, ME)
    assert not verdict.accepted and "needs norm_bound >=" in verdict.reason


# -- sampling -------------------------------------------------------------------------------------


def test_sampling_is_deterministic_and_near_its_rate() -> None:
    trainers = [f"0x{i:040x}" for i in range(2000)]
    s = spec(2.0, sample_rate=0.25)
    drawn = drawn_trainers(s, 7, 3, trainers)
    assert drawn == drawn_trainers(s, 7, 3, trainers)
    assert abs(len(drawn) / len(trainers) - 0.25) < 0.04  # 4 standard errors
    assert drawn != drawn_trainers(s, 7, 4, trainers)
    assert drawn_trainers(spec(2.0), 7, 3, trainers) == trainers
    assert is_sampled(seed=0, job_id=1, round_=2, address=ME.upper().replace("0X", "0x"),
                      sample_rate=0.5) == is_sampled(seed=0, job_id=1, round_=2, address=ME,
                                                     sample_rate=0.5)  # fmt: skip


def test_an_undrawn_trainer_sits_the_round_out(tmp_path: Path) -> None:
    gate = _gate(tmp_path, budget=None)
    plan = make_plan(spec(2.0, sample_rate=0.5))
    rounds = [r for r in range(40) if not is_sampled(
        seed=0, job_id=1, round_=r, address=ME, sample_rate=0.5)]  # fmt: skip
    verdict = gate.gate(plan, 1, rounds[0], ME)
    assert not verdict.accepted and "not drawn" in verdict.reason


# -- the spec ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"epsilon": 0.0, "delta": 1e-5, "clip_norm": 1.0}, "'privacy.epsilon' must be"),
        ({"epsilon": 1.0, "clip_norm": 1.0}, "missing key 'delta' in [privacy]"),
        ({"epsilon": 1.0, "delta": 1e-5, "clip_norm": 1.0, "clip": 1}, "did you mean 'clip_norm'"),
        ({"epsilon": 1.0, "delta": 1e-5, "clip_norm": -1.0}, "'privacy.clip_norm' must be"),
        ({"epsilon": 1.0, "delta": 1e-5, "clip_norm": 1.0, "sample_rate": 0.0}, "sample_rate"),
        ({"epsilon": 1.0, "delta": 1e-5, "clip_norm": 1.0, "noise": "x"}, "'per_update' or"),
        ({"epsilon": 1.0, "delta": 1e-5, "clip_norm": float("inf")}, "'privacy.clip_norm'"),
    ],
)
def test_bad_privacy_sections_get_one_line(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_jobspec({**BASE, "privacy": section})
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_declared_weights_are_refused_with_dp() -> None:
    with pytest.raises(ConfigError, match="needs weighting = 'equal'"):
        parse_jobspec({**BASE, "weighting": "declared", "max_weight": 9, "privacy": {
            "epsilon": 1.0, "delta": 1e-5, "clip_norm": 1.0}})  # fmt: skip


def test_a_spec_without_privacy_hashes_as_before() -> None:
    assert b"privacy" not in parse_jobspec(BASE).canonical_bytes()
    assert b'"privacy":{"clip_norm":1.0' in spec(2.0).canonical_bytes()
    assert spec(2.0, sample_rate=0.5).privacy.max_contributions(4) == 2  # type: ignore[union-attr]


def test_a_seed_that_draws_a_trainer_often_buys_no_more_than_the_cap(tmp_path: Path) -> None:
    """An owner may grind the seed to draw a node into many rounds; it contributes to at most
    ceil(sample_rate * rounds) of them, so it never spends more than the job's ε."""
    gate = _gate(tmp_path, budget=None)
    plan = make_plan(parse_jobspec({**BASE, "rounds": 40, "privacy": {
        "epsilon": 2.0, "delta": 1e-5, "clip_norm": 1.0, "sample_rate": 0.1}}))  # fmt: skip
    drawn = [r for r in range(40) if is_sampled(
        seed=0, job_id=1, round_=r, address=ME, sample_rate=0.1)]  # fmt: skip
    cap = plan.spec.privacy.max_contributions(40)  # type: ignore[union-attr]
    assert cap == 4 and len(drawn) > cap  # this seed draws the node more often than the cap
    for round_ in drawn[:cap]:
        assert gate.gate(plan, 1, round_, ME).accepted
        gate.charge(plan, 1, round_)
    verdict = gate.gate(plan, 1, drawn[cap], ME)
    assert not verdict.accepted and "sits out the rest" in verdict.reason
    assert gate.ledger.spent(gate.dataset) <= 2.0
