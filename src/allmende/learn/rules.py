"""The aggregation rules a job can name and their parameters: pydantic only, no torch.

:data:`RULES` is the one registry of rules: name -> parameter model. A job spec is checked
against it (``allmende job submit`` and every node that reads a spec) without importing torch;
:func:`allmende.learn.aggregate.robust_delta` then picks each rule's arithmetic by the type of
its validated parameters, so a rule is added in two places that the type checker ties together.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from allmende.errors import ConfigError


class RuleParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class FedAvgParams(RuleParams):
    """Weighted mean of the models, weight = examples trained on. Takes no parameters."""


class TrimmedMeanParams(RuleParams):
    """Per coordinate, drop the ``floor(beta * n)`` lowest and highest values, average the rest.

    Raise ``beta`` when more trainers may be malicious; all aggregators must agree on it.
    """

    beta: float = Field(default=0.1, ge=0.0, lt=0.5)


class MedianParams(RuleParams):
    """Coordinate-wise median (mean of the two middle values when n is even)."""


class KrumParams(RuleParams):
    """Pick the update closest to its ``n - f - 2`` nearest neighbours; needs n >= 2f + 3."""

    f: int = Field(default=1, ge=0)


class MultiKrumParams(RuleParams):
    """Average the ``m`` updates with the best Krum scores; needs n >= 2f + 3 and m <= n."""

    f: int = Field(default=1, ge=0)
    m: int = Field(default=2, ge=1)


class CenteredClipParams(RuleParams):
    """Centered clipping: ``v += mean_i clip(d_i - v, tau)``, ``iters`` times from ``v = 0``.

    One step moves the model by at most ``tau``; lower ``tau`` if attackers still pull it,
    raise it if honest training is slowed.
    """

    tau: float = Field(default=1.0, gt=0.0)
    iters: int = Field(default=3, ge=1)


RULES: dict[str, type[RuleParams]] = {
    "fedavg": FedAvgParams,
    "trimmed_mean": TrimmedMeanParams,
    "median": MedianParams,
    "krum": KrumParams,
    "multi_krum": MultiKrumParams,
    "centered_clip": CenteredClipParams,
}


def rule_params(rule: str, params: dict[str, object] | None = None) -> RuleParams:
    """The validated parameters of ``rule``; :class:`ConfigError` for an unknown rule or bad
    parameters."""
    if rule not in RULES:
        raise ConfigError(f"Unknown aggregation rule '{rule}'; use one of: {', '.join(RULES)}.")
    try:
        return RULES[rule].model_validate(params or {})
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "params"
        if error["type"] == "extra_forbidden":
            known = ", ".join(RULES[rule].model_fields) or "none"
            raise ConfigError(
                f"Unknown parameter '{where}' for aggregation rule '{rule}' (it takes: {known}); "
                "fix the rule's params in the job spec."
            ) from None
        raise ConfigError(
            f"Bad parameter '{where}' for aggregation rule '{rule}': {error['msg']} "
            f"(got {error.get('input')!r}); fix the rule's params in the job spec."
        ) from None
