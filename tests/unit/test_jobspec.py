"""Job specs: TOML in, canonical JSON out, one clear line for every mistake."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from allmende.errors import ConfigError
from allmende.node.jobspec import (
    DEFAULT_AGGREGATION,
    JobSpec,
    load_jobspec,
    parse_jobspec,
    parse_wei,
)

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples" / "jobs").glob("*.toml"))

MINIMAL = """
task = "digits-mlp"
rounds = 3
min_trainers = 2
max_trainers = 4
quorum = 1
reward_per_round = 1000
[optimizer]
lr = 0.05
[aggregation]
rule = "fedavg"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_every_example_spec_loads_and_names_its_rule():
    rules = {load_jobspec(path).aggregation.rule for path in EXAMPLES}
    assert rules == {
        "fedavg", "trimmed_mean", "median", "krum", "multi_krum", "centered_clip", "clipped_mean",
    }  # fmt: skip


def test_the_open_job_examples_use_the_robust_default():
    # every job admits trainers nobody vetted; only the FedAvg example asks for the plain mean
    for path in EXAMPLES:
        text = path.read_text()
        spec = load_jobspec(path)
        if not re.search(r"^\[aggregation\]", text, re.M):
            assert spec.aggregation == DEFAULT_AGGREGATION, path.name
    defaults = [p.name for p in EXAMPLES if not re.search(r"^\[aggregation\]", p.read_text(), re.M)]
    assert {"federated-demo.toml", "digits-3-nodes.toml"} <= set(defaults)
    assert load_jobspec(EXAMPLES[0].parent / "digits-fedavg.toml").aggregation.rule == "fedavg"


NO_RULE = MINIMAL.replace('[aggregation]\nrule = "fedavg"\n', "")


def test_a_spec_without_aggregation_gets_the_robust_default_and_publishes_it(tmp_path):
    assert "[aggregation]" not in NO_RULE
    spec = load_jobspec(write(tmp_path, NO_RULE))
    assert spec.aggregation == DEFAULT_AGGREGATION
    assert DEFAULT_AGGREGATION.rule != "fedavg"
    published = json.loads(spec.canonical_bytes())
    assert published["aggregation"] == {
        "rule": DEFAULT_AGGREGATION.rule, "params": dict(DEFAULT_AGGREGATION.params),
    }  # fmt: skip
    # FedAvg stays available by name
    assert load_jobspec(write(tmp_path, MINIMAL)).aggregation.rule == "fedavg"


@pytest.mark.parametrize(
    ("rule", "min_trainers", "message"),
    [
        (
            '"krum"\nparams = { f = 2 }',
            6,
            "aggregation rule 'krum' (f=2) needs at least 7 "
            "updates a round, but 'min_trainers' is 6",
        ),
        ('"multi_krum"\nparams = { f = 1, m = 8 }', 7, "raise min_trainers to 8"),
    ],
)
def test_a_rule_that_cannot_aggregate_min_trainers_updates_is_refused(
    tmp_path, rule, min_trainers, message
):
    text = MINIMAL.replace('"fedavg"', rule).replace("max_trainers = 4", "max_trainers = 9")
    with pytest.raises(ConfigError) as info:
        load_jobspec(
            write(tmp_path, text.replace("min_trainers = 2", f"min_trainers = {min_trainers}"))
        )
    assert message in str(info.value) and "\n" not in str(info.value)
    assert str(info.value).startswith("job spec: ")
    enough = text.replace("min_trainers = 2", f"min_trainers = {min_trainers + 1}")
    assert load_jobspec(write(tmp_path, enough)).min_trainers == min_trainers + 1


def test_minimal_spec_gets_the_documented_defaults(tmp_path):
    spec = load_jobspec(write(tmp_path, MINIMAL))
    assert (spec.task, spec.rounds, spec.reward_per_round) == ("digits-mlp", 3, 1000)
    assert (spec.local_epochs, spec.batch_size, spec.seed) == (1, 32, 0)
    assert spec.optimizer.name == "sgd" and spec.optimizer.momentum == 0.0
    assert spec.aggregation.params == {}


def test_canonical_bytes_are_sorted_compact_json_and_round_trip(tmp_path):
    spec = load_jobspec(write(tmp_path, MINIMAL))
    blob = spec.canonical_bytes()
    decoded = json.loads(blob)
    assert blob == json.dumps(decoded, sort_keys=True, separators=(",", ":")).encode()
    assert list(decoded) == sorted(decoded)
    assert JobSpec.from_bytes(blob) == spec
    assert JobSpec.from_bytes(blob).canonical_bytes() == blob


def test_key_order_in_the_toml_does_not_change_the_blob(tmp_path):
    lines = MINIMAL.strip().splitlines()
    reordered = "\n".join(lines[5::-1] + lines[6:])  # top-level keys reversed
    a = load_jobspec(write(tmp_path, MINIMAL)).canonical_bytes()
    b = load_jobspec(write(tmp_path, reordered)).canonical_bytes()
    assert a == b


ROUNDS_RULE = "job spec: 'rounds' must be an integer between 1 and 10000"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.01 ether", 10**16),
        ("5 gwei", 5 * 10**9),
        ("123 wei", 123),
        ("42", 42),
        ("1.5 Ether", 15 * 10**17),
    ],
)
def test_reward_amounts_in_units(tmp_path, text, expected):
    assert parse_wei(text) == expected
    spec = load_jobspec(write(tmp_path, MINIMAL.replace("1000", f'"{text}"')))
    assert spec.reward_per_round == expected


@pytest.mark.parametrize("text", ["0.1 wei", "ten ether", "1 btc", "-1 ether", "1 2 ether", ""])
def test_bad_amounts_are_refused(text):
    with pytest.raises(ValueError):
        parse_wei(text)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("rounds = 3", "roundz = 3"),
            "job spec: unknown key 'roundz' at top level; did you mean 'rounds'?",
        ),
        (("rounds = 3", "rounds = 0"), ROUNDS_RULE + " (got 0)"),
        (("rounds = 3", 'rounds = "3"'), ROUNDS_RULE),
        (("rounds = 3", "rounds = true"), ROUNDS_RULE),
        (("rounds = 3\n", ""), "job spec: missing key 'rounds' at top level"),
        (
            ("lr = 0.05", "lr = 0.05\nlrr = 1"),
            "job spec: unknown key 'lrr' in [optimizer]; did you mean 'lr'?",
        ),
        (("lr = 0.05", "lr = -1.0"), "job spec: 'optimizer.lr' must be a number > 0"),
        (("lr = 0.05", 'lr = 0.05\nname = "sgdd"'), "'optimizer.name' must be 'sgd' or 'adam'"),
        (('"fedavg"', '"fedsum"'), "job spec: Unknown aggregation rule 'fedsum'"),
        (('"fedavg"', '"krum"\nparams = { f = -1 }'), "Bad parameter 'f' for aggregation rule"),
        (('"fedavg"', '"median"\nparams = { f = 1 }'), "Unknown parameter 'f' for aggregation"),
        (("quorum = 1", "quorum = 1\nbanana = 2"), "unknown key 'banana' at top level; remove it."),
        (("quorum = 1", "quorum = 17"), "'quorum' must be an integer between 1 and 16"),
        (("max_trainers = 4", "max_trainers = 1"), "'max_trainers' (1) must be >= 'min_trainers'"),
        (("= 1000", '= "lots"'), "'reward_per_round' must be an integer number of wei"),
        (("= 1000", "= -1"), "'reward_per_round' must be an integer number of wei"),
        (("quorum = 1", "quorum = 1\nnorm_bound = 0"), "'norm_bound' must be a number > 0"),
        (("quorum = 1", "quorum = 1\nseed = -2"), "'seed' must be an integer >= 0"),
        (("[optimizer]\nlr = 0.05", "optimizer = 3"), "'optimizer' must be a table"),
        (("rounds = 3", "rounds = = 3"), "is not valid TOML"),
    ],
)
def test_mistakes_give_one_line_naming_the_field(tmp_path, change, message):
    old, new = change
    assert old in MINIMAL
    with pytest.raises(ConfigError) as info:
        load_jobspec(write(tmp_path, MINIMAL.replace(old, new, 1)))
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_jobspec(tmp_path / "absent.toml")


@pytest.mark.parametrize(
    "blob",
    [b"\xff\xfe", b"not json", b"[1, 2]", b'{"task": "digits-mlp"}'],
)
def test_untrusted_blobs_are_config_errors(blob):
    with pytest.raises(ConfigError, match="job spec: "):
        JobSpec.from_bytes(blob)


def test_parse_jobspec_takes_decoded_mappings(tmp_path):
    spec = load_jobspec(write(tmp_path, MINIMAL))
    assert parse_jobspec(json.loads(spec.canonical_bytes())) == spec


def test_training_settings_are_the_specs_hyper_parameters() -> None:
    from allmende.node.jobspec import parse_jobspec

    spec = parse_jobspec(
        {
            "task": "digits-mlp", "rounds": 2, "local_epochs": 3, "batch_size": 16,
            "min_trainers": 1, "max_trainers": 2, "quorum": 1, "reward_per_round": 1,
            "optimizer": {"name": "sgd", "lr": 0.25, "momentum": 0.5, "weight_decay": 0.01},
            "aggregation": {"rule": "fedavg", "params": {}},
        }
    )  # fmt: skip
    assert spec.training_settings() == {
        "epochs": 3, "batch_size": 16, "lr": 0.25, "optimizer": "sgd",
        "momentum": 0.5, "weight_decay": 0.01,
    }  # fmt: skip


# -- who aggregates, what is at stake, how trainers weigh --------------------------------------

A1, A2, A3 = ("0x" + c * 40 for c in "abc")


def spec_with(tmp_path: Path, extra: str, *, quorum: int = 1) -> JobSpec:
    text = MINIMAL.replace("quorum = 1", f"quorum = {quorum}").replace(
        "[optimizer]", extra + "\n[optimizer]"
    )
    return load_jobspec(write(tmp_path, text))


def test_by_default_the_committee_is_open_and_the_smallest_with_a_majority_quorum(tmp_path):
    spec = spec_with(tmp_path, "", quorum=2)
    assert not spec.committee.named and spec.committee_size == 3
    assert spec.committee.signup_seconds == 30
    assert (spec.weighting, spec.weight_cap, spec.weight_of(480)) == ("equal", 0, 1)
    assert spec.aggregator_stake == 2 * 10**17 and spec.trainer_stake == 0


@pytest.mark.parametrize(("size", "quorum"), [(2, 1), (3, 1), (4, 2), (16, 8)])
def test_an_open_committee_refuses_a_quorum_that_is_no_strict_majority(tmp_path, size, quorum):
    with pytest.raises(ConfigError, match="needs a strict-majority quorum") as info:
        spec_with(tmp_path, f"committee = {{ size = {size} }}", quorum=quorum)
    assert f"raise quorum to {size // 2 + 1}" in str(info.value)


def test_a_named_committee_takes_any_quorum_up_to_its_size(tmp_path):
    members = f'committee = {{ members = ["{A1}", "{A2}", "{A3}"] }}'
    spec = spec_with(tmp_path, members, quorum=1)  # owner-run aggregation: any quorum
    assert spec.committee.named and spec.committee_size == 3
    with pytest.raises(ConfigError, match="exceeds the committee's 3 aggregators"):
        spec_with(tmp_path, members, quorum=4)


@pytest.mark.parametrize(
    ("committee", "message"),
    [
        (f'{{ members = ["{A1}", "{A1.upper().replace("X", "x")}"] }}', "names a member twice"),
        ('{ members = ["0x1234"] }', "is not a 0x-prefixed address"),
        (f'{{ members = ["{A1}"], size = 2 }}', "either members or a size"),
        ("{ size = 17 }", "'committee.size' must be an integer between 1 and 16"),
        ("{ size = 1, signup_seconds = 0 }", "'committee.signup_seconds' must be"),
    ],
)
def test_committee_mistakes_are_one_line(tmp_path, committee, message):
    with pytest.raises(ConfigError, match=message):
        spec_with(tmp_path, f"committee = {committee}")


def test_declared_weights_need_a_cap_and_are_capped(tmp_path):
    spec = spec_with(tmp_path, 'weighting = "declared"\nmax_weight = 100')
    assert spec.weight_cap == 100
    assert [spec.weight_of(n) for n in (0, 7, 100, 10**9)] == [1, 7, 100, 100]
    with pytest.raises(ConfigError, match="'max_weight' goes with weighting = 'declared'"):
        spec_with(tmp_path, 'weighting = "declared"')
    with pytest.raises(ConfigError, match="'max_weight' goes with"):
        spec_with(tmp_path, "max_weight = 5")


def test_stakes_read_as_amounts_and_deadlines_are_bounded(tmp_path):
    spec = spec_with(tmp_path, 'trainer_stake = "0.05 ether"\naggregator_stake = "1 ether"')
    assert (spec.trainer_stake, spec.aggregator_stake) == (5 * 10**16, 10**18)
    with pytest.raises(ConfigError, match="'round_deadline' must be an integer number of seconds"):
        spec_with(tmp_path, "round_deadline = 2592001")
