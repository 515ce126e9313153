"""Malformed job specs and node configs, through the real ``allmende`` command.

Every mistake must end in exactly one line on stderr that names the offending field, a non-zero
exit code, and no traceback. The cases run as concurrent subprocesses (the command's start-up
dominates), once per module; each case is still its own test.
"""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from fault_nodes import run_cli

from allmende.chain import ROLE_TRAINER
from allmende.node.config import parse_config
from allmende.node.jobspec import parse_jobspec

VALID_SPEC = """\
task = "digits-mlp"
rounds = 2
min_trainers = 1
max_trainers = 2
quorum = 1
reward_per_round = "0.001 ether"
round_deadline = 60

[optimizer]
name = "sgd"
lr = 0.1

[aggregation]
rule = "fedavg"
"""

VALID_CONFIG = """\
[node]
host = "127.0.0.1"
port = 18999
roles = ["trainer"]

[chain]
offline = true
"""


def edit(text: str, old: str, new: str) -> str:
    """``text`` with ``old`` replaced once; fails loudly if ``old`` is not there."""
    assert old in text, old
    return text.replace(old, new, 1)


@dataclass(frozen=True)
class Case:
    """A malformed input, the command it is fed to, and what the error line must name."""

    name: str
    kind: str  # "spec" or "config"
    text: str
    names: tuple[str, ...]  # every one of these must appear in the error line


SPEC_CASES = [
    Case("unknown-key", "spec", "roundz = 3\n" + VALID_SPEC, ("roundz", "rounds")),
    Case("wrong-type", "spec", edit(VALID_SPEC, "rounds = 2", 'rounds = "two"'), ("rounds",)),
    Case(
        "missing-field",
        "spec",
        edit(VALID_SPEC, '[optimizer]\nname = "sgd"\nlr = 0.1\n', ""),
        ("optimizer",),
    ),
    Case(
        "nested-wrong-type", "spec", edit(VALID_SPEC, "lr = 0.1", 'lr = "fast"'), ("optimizer.lr",)
    ),
    Case(
        "nested-unknown-key",
        "spec",
        edit(VALID_SPEC, "lr = 0.1", "lr = 0.1\nmomentun = 0.9"),
        ("momentun", "[optimizer]", "momentum"),
    ),
    Case(
        "unknown-rule",
        "spec",
        edit(VALID_SPEC, 'rule = "fedavg"', 'rule = "fedmagic"'),
        ("fedmagic",),
    ),
]

CONFIG_CASES = [
    Case("unknown-key", "config", edit(VALID_CONFIG, "port = 18999", "prot = 18999"), ("prot",)),
    Case(
        "wrong-type", "config", edit(VALID_CONFIG, "port = 18999", 'port = "high"'), ("node.port",)
    ),
    Case("missing-section", "config", VALID_CONFIG.split("[chain]")[0], ("chain",)),
    Case(
        "unknown-role",
        "config",
        edit(VALID_CONFIG, 'roles = ["trainer"]', 'roles = ["miner"]'),
        ("node.roles",),
    ),
    Case(
        "nested-wrong-type",
        "config",
        VALID_CONFIG + '[trainer.dataset]\nalpha = "skewed"\n',
        ("trainer.dataset.alpha",),
    ),
]

CASES = SPEC_CASES + CONFIG_CASES


def command_for(case: Case, folder: Path) -> tuple[str, ...]:
    """Write the case's file under ``folder``; the ``allmende`` arguments that read it."""
    folder.mkdir(parents=True)
    if case.kind == "spec":
        spec = folder / "job.toml"
        spec.write_text(case.text)
        return ("job", "submit", str(spec), "--home", str(folder / "no-home"))
    (folder / "node.toml").write_text(case.text)
    return ("node", "run", str(folder))


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess]:
    """Every case run through the CLI, concurrently; by ``kind/name``."""
    root = tmp_path_factory.mktemp("bad-input")
    commands = {
        f"{case.kind}/{case.name}": command_for(case, root / case.kind / case.name)
        for case in CASES
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {key: pool.submit(run_cli, *args) for key, args in commands.items()}
        return {key: future.result() for key, future in futures.items()}


def assert_one_clear_line(done: subprocess.CompletedProcess, names: tuple[str, ...]) -> str:
    """A non-zero exit, no traceback, one non-empty stderr line naming every one of ``names``."""
    assert done.returncode != 0
    assert "Traceback" not in done.stderr + done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got {len(lines)}:\n{done.stderr}"
    line = lines[0]
    assert line.startswith("error:"), line
    for name in names:
        assert name in line, f"{name!r} not named in: {line}"
    return line


@pytest.mark.parametrize("case", SPEC_CASES, ids=lambda c: c.name)
def test_malformed_job_spec_is_one_clear_line(case: Case, outcomes) -> None:
    done = outcomes[f"spec/{case.name}"]
    line = assert_one_clear_line(done, case.names)
    assert done.returncode == 2  # bad configuration or input
    assert "job spec" in line


@pytest.mark.parametrize("case", CONFIG_CASES, ids=lambda c: c.name)
def test_malformed_node_config_is_one_clear_line(case: Case, outcomes) -> None:
    done = outcomes[f"config/{case.name}"]
    line = assert_one_clear_line(done, case.names)
    assert done.returncode == 2
    assert "node.toml" in line


def test_the_valid_inputs_pass_the_same_checks() -> None:
    """The bases of the cases are valid, so each failure above is the one edit's doing."""
    import tomllib

    assert parse_jobspec(tomllib.loads(VALID_SPEC)).rounds == 2
    assert parse_config(tomllib.loads(VALID_CONFIG)).node.port == 18999


def test_valid_spec_gets_past_the_spec_check(tmp_path: Path) -> None:
    """Negative control through the CLI: a valid spec fails only on the missing node home."""
    spec = tmp_path / "job.toml"
    spec.write_text(VALID_SPEC)
    done = run_cli("job", "submit", str(spec), "--home", str(tmp_path / "no-home"))
    line = assert_one_clear_line(done, ("node config",))
    assert "job spec" not in line


def test_unknown_task_is_refused_before_any_escrow(devnet, nodes, tmp_path: Path) -> None:
    """A spec naming a task nobody installed: one line naming the task, no job on chain."""
    key = devnet.new_key()
    owner = nodes("owner", deployment=devnet.devnet.deployment_path, key=key)
    contracts = devnet.contracts(key)
    contracts.registry.register(owner.url, ROLE_TRAINER)
    jobs_before = contracts.jobs.next_job_id()
    balance_before = contracts.client.balance(contracts.client.address)
    spec = tmp_path / "job.toml"
    spec.write_text(edit(VALID_SPEC, '"digits-mlp"', '"imagenet-vit"'))
    done = run_cli("job", "submit", str(spec), "--home", str(owner.home), env=owner.env)
    assert_one_clear_line(done, ("imagenet-vit", "Task"))
    assert contracts.jobs.next_job_id() == jobs_before
    assert contracts.client.balance(contracts.client.address) == balance_before
