"""The consent policy: which jobs a node joins, and the [trainer]/[aggregator] config sections."""

from __future__ import annotations

import pytest

from allmende.errors import ConfigError
from allmende.node.config import ConsentPolicy, parse_config
from allmende.node.roles.policy import decide, decide_terms

OWNER = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
OTHER = "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65"
INSTALLED = ("digits-mlp",)


def job(policy: ConsentPolicy, *, task: str = "digits-mlp", owner: str = OWNER, reward: int = 10):
    return decide(policy, task=task, owner=owner, reward_per_round=reward, installed=INSTALLED)


def test_the_default_policy_accepts_any_installed_task_from_anyone() -> None:
    verdict = job(ConsentPolicy())
    assert verdict.accepted and verdict.reason == ""


def test_a_task_that_is_not_installed_is_refused_whatever_the_policy_allows() -> None:
    verdict = job(ConsentPolicy(allowed_tasks=["cifar-resnet"]), task="cifar-resnet")
    assert not verdict.accepted
    assert "task 'cifar-resnet' is not installed on this node" in verdict.reason
    assert "digits-mlp" in verdict.reason  # says what is installed


def test_allowed_tasks_limits_the_installed_ones() -> None:
    assert job(ConsentPolicy(allowed_tasks=["digits-mlp"])).accepted
    refused = job(ConsentPolicy(allowed_tasks=[]))
    assert not refused.accepted and "allowed_tasks" in refused.reason


def test_allowed_owners_is_checked_case_insensitively() -> None:
    assert job(ConsentPolicy(allowed_owners=[OWNER]), owner=OWNER.lower()).accepted
    refused = job(ConsentPolicy(allowed_owners=[OTHER]))
    assert not refused.accepted
    assert OWNER in refused.reason and "allowed_owners" in refused.reason


def test_minimum_reward_per_round() -> None:
    policy = ConsentPolicy(min_reward_per_round_wei=10)
    assert job(policy, reward=10).accepted
    refused = job(policy, reward=9)
    assert not refused.accepted and "9 wei" in refused.reason


def test_policy_rejects_malformed_owner_addresses() -> None:
    with pytest.raises(ValueError, match="not an Ethereum address"):
        ConsentPolicy(allowed_owners=["0x1234"])


def test_policy_checksums_owner_addresses() -> None:
    assert ConsentPolicy(allowed_owners=[OWNER.lower()]).allowed_owners == [OWNER]


def test_node_config_carries_the_role_sections() -> None:
    config = parse_config(
        {
            "chain": {"deployment": "deployment.json"},
            "trainer": {
                "allowed_owners": [OWNER],
                "min_reward_per_round_wei": 5,
                "dataset": {"partition": "dirichlet", "alpha": 0.5, "num_parts": 6, "part": 2},
            },
            "aggregator": {"allowed_tasks": ["digits-mlp"], "fetch_grace_seconds": 3.0},
        }
    )
    assert config.trainer.policy == ConsentPolicy(
        allowed_owners=[OWNER], min_reward_per_round_wei=5
    )
    assert config.trainer.dataset.part == 2 and config.trainer.dataset.partition == "dirichlet"
    assert config.aggregator.policy.allowed_tasks == ["digits-mlp"]
    assert config.aggregator.fetch_grace_seconds == 3.0


def test_defaults_when_the_sections_are_missing() -> None:
    config = parse_config({"chain": {"deployment": "deployment.json"}})
    assert config.trainer.policy == ConsentPolicy()
    assert config.trainer.dataset.num_parts == 1


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        ("trainer", {"allowed_owner": [OWNER]}, "trainer.allowed_owner"),
        ("trainer", {"dataset": {"part": 3, "num_parts": 2}}, "part 3 does not exist"),
        ("aggregator", {"poll_seconds": 0}, "aggregator.poll_seconds"),
        ("trainer", {"min_reward_per_round_wei": -1}, "trainer.min_reward_per_round_wei"),
    ],
)
def test_bad_role_sections_are_refused_naming_the_key(
    section: str, values: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"chain": {"deployment": "deployment.json"}, section: values})


def test_the_on_chain_terms_alone_refuse_owner_reward_and_stake() -> None:
    policy = ConsentPolicy(allowed_owners=[OWNER], min_reward_per_round_wei=10, max_stake_wei=5)
    assert decide_terms(policy, owner=OWNER, reward_per_round=10, stake_wei=5).accepted
    owner = decide_terms(policy, owner=OTHER, reward_per_round=10, stake_wei=0)
    assert not owner.accepted and "allowed_owners" in owner.reason
    reward = decide_terms(policy, owner=OWNER, reward_per_round=9, stake_wei=0)
    assert not reward.accepted and "min_reward_per_round_wei" in reward.reason
    stake = decide_terms(policy, owner=OWNER, reward_per_round=10, stake_wei=6)
    assert not stake.accepted and "6 wei" in stake.reason and "max_stake_wei" in stake.reason
    assert decide_terms(ConsentPolicy(), owner=OTHER, reward_per_round=0, stake_wei=10**30).accepted


def test_decide_checks_the_stake_too() -> None:
    policy = ConsentPolicy(max_stake_wei=5)
    refused = decide(
        policy, task="digits-mlp", owner=OWNER, reward_per_round=1, installed=INSTALLED,
        stake_wei=6,
    )  # fmt: skip
    assert not refused.accepted and "max_stake_wei" in refused.reason


def test_a_role_that_needs_named_tasks_refuses_until_its_operator_names_them() -> None:
    def trainer(policy: ConsentPolicy):
        return decide(
            policy, task="digits-mlp", owner=OWNER, reward_per_round=10, installed=INSTALLED,
            tasks_named=True,
        )  # fmt: skip

    for policy in (ConsentPolicy(), ConsentPolicy(allowed_tasks=[])):
        refused = trainer(policy)
        assert not refused.accepted
        assert "allows no task yet" in refused.reason
        assert 'allowed_tasks = ["digits-mlp"]' in refused.reason
        assert "--allow-task digits-mlp" in refused.reason
    assert trainer(ConsentPolicy(allowed_tasks=["digits-mlp"])).accepted


def test_the_trainer_role_needs_named_tasks_and_the_aggregator_does_not() -> None:
    from allmende.node.roles.aggregator import AggregatorRole
    from allmende.node.roles.trainer import TrainerRole

    assert TrainerRole.tasks_named and not AggregatorRole.tasks_named
