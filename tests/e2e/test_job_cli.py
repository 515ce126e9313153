"""`allmende job submit` refusals, before any ether is escrowed."""

from __future__ import annotations

from pathlib import Path

from e2e_nodes import CLI_TIMEOUT, init_node
from nodes import allmende

SPEC = """
task = "digits-mlp"
rounds = 2
min_trainers = 1
max_trainers = 2
quorum = 1
reward_per_round = "0.01 ether"
[optimizer]
name = "sgd"
lr = 0.1
[aggregation]
rule = "fedavg"
"""


def test_submit_refuses_until_the_owners_node_is_registered(devnet, tmp_path: Path) -> None:
    home = init_node(
        tmp_path / "owner", deployment=devnet.devnet.deployment_path, key=devnet.new_key(),
        roles=["aggregator"],
    )  # fmt: skip
    spec = tmp_path / "job.toml"
    spec.write_text(SPEC)
    jobs = devnet.contracts().jobs
    before = jobs.next_job_id()

    result = allmende("job", "submit", str(spec), "--home", str(home), timeout=CLI_TIMEOUT)

    assert result.returncode == 1
    assert "is not registered, so nobody could fetch the job's spec" in result.stderr
    assert "allmende node run" in result.stderr
    assert jobs.next_job_id() == before  # nothing was created, nothing escrowed


def test_submit_refuses_a_malformed_spec(devnet, tmp_path: Path) -> None:
    home = init_node(
        tmp_path / "owner", deployment=devnet.devnet.deployment_path, key=devnet.new_key(),
        roles=["aggregator"],
    )  # fmt: skip
    spec = tmp_path / "job.toml"
    spec.write_text(SPEC.replace("rounds = 2", "rouns = 2"))

    result = allmende("job", "submit", str(spec), "--home", str(home), timeout=CLI_TIMEOUT)

    assert result.returncode == 2
    assert "did you mean 'rounds'" in result.stderr
