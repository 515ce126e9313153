"""``[aggregation.secure]`` in the job spec: what the validator refuses, and why."""

from __future__ import annotations

import pytest

from allmende.errors import ConfigError
from allmende.learn.rules import RULES
from allmende.node.jobspec import loads_jobspec

BASE = """
task = "digits"
rounds = 2
min_trainers = {min_trainers}
max_trainers = {max_trainers}
quorum = 1
reward_per_round = 0
{extra}
[optimizer]
lr = 0.1

[aggregation]
rule = "{rule}"

[aggregation.secure]
{secure}
"""


def spec(
    *,
    rule: str = "fedavg",
    secure: str = "clip = 0.5",
    min_trainers: int = 4,
    max_trainers: int = 8,
    extra: str = "",
) -> str:
    return BASE.format(
        rule=rule,
        secure=secure,
        min_trainers=min_trainers,
        max_trainers=max_trainers,
        extra=extra,
    )


def test_a_secure_fedavg_spec_is_accepted_and_published_with_its_settings() -> None:
    job = loads_jobspec(spec(secure="clip = 0.5\ndropout = 0.34\nring_bits = 32"), source="j.toml")
    assert job.aggregation.secure is not None and job.aggregation.secure.ring_bits == 32
    published = b'"secure":{"clip":0.5,"degree":null,"dropout":0.34,"ring_bits":32}'
    assert published in job.canonical_bytes()


def test_a_spec_without_secure_aggregation_hashes_as_before() -> None:
    text = spec().replace("[aggregation.secure]\nclip = 0.5\n", "")
    assert b"secure" not in loads_jobspec(text, source="j.toml").canonical_bytes()


@pytest.mark.parametrize("rule", sorted(set(RULES) - {"fedavg"}))
def test_robust_rules_are_refused_with_secure_aggregation(rule: str) -> None:
    params = "\n[aggregation.params]\nf = 0\n" if "krum" in rule else ""
    with pytest.raises(
        ConfigError, match=f"'{rule}' needs each trainer's update.*see only their sum"
    ):
        loads_jobspec(spec(rule=rule) + params, source="j.toml")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_trainers": 3}, "min_trainers >= 4"),
        ({"secure": "clip = 0.5\ndropout = 0.25"}, "aggregation.secure.dropout"),
        ({"secure": "clip = 0.5\nring_bits = 16"}, "ring_bits must be 32 or 64"),
        ({"secure": "clip = 0.5\ndegree = 5"}, "degree must be even"),
        ({"secure": "clip = 0"}, "aggregation.secure.clip"),
        ({"secure": "clip = 0.5\ndropot = 0.4"}, "did you mean 'dropout'"),
        (
            {
                "secure": "clip = 100.0\nring_bits = 32",
                "max_trainers": 256,
                "extra": 'weighting = "declared"\nmax_weight = 1000',
            },
            "fraction bits",
        ),
    ],
)
def test_bad_secure_settings_are_refused_with_a_remedy(
    kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        loads_jobspec(spec(**kwargs), source="j.toml")  # type: ignore[arg-type]
