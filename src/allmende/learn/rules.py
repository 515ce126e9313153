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


class ClippedMeanParams(RuleParams):
    """Mean of the updates, each clipped to a radius the round's updates set themselves.

    Each of ``iters`` steps clips every update's distance from the running center ``v``
    (the global model at first) to ``tau = scale * median_i ||d_i - v||`` and moves ``v`` by
    the mean of the clipped distances: with ``iters = 1`` a norm-bounded mean, with more a
    centered clipping whose radius needs no tuning to the model. Fewer than half the
    trainers cannot raise the radius, so a boosted update moves the model no more than a
    typical honest one. Raise ``iters`` if attackers who send large updates still pull the
    model; ``scale`` above 1 lets more honest updates through unclipped (faster on a clean
    run, weaker against attackers). All aggregators must agree on both.
    """

    scale: float = Field(default=1.0, gt=0.0, le=100.0)
    iters: int = Field(default=3, ge=1, le=100)


RULES: dict[str, type[RuleParams]] = {
    "fedavg": FedAvgParams,
    "trimmed_mean": TrimmedMeanParams,
    "median": MedianParams,
    "krum": KrumParams,
    "multi_krum": MultiKrumParams,
    "centered_clip": CenteredClipParams,
    "clipped_mean": ClippedMeanParams,
}


def min_updates(config: RuleParams) -> int:
    """The fewest updates a round must have for the rule with these parameters to aggregate
    them (:mod:`allmende.learn.aggregate` refuses fewer): Krum's ``2f + 3``, Multi-Krum's
    larger of that and ``m``; 1 for the others."""
    if isinstance(config, KrumParams):
        return 2 * config.f + 3
    if isinstance(config, MultiKrumParams):
        return max(2 * config.f + 3, config.m)
    return 1


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
