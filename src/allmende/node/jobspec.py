"""The job spec: what a model builder asks the network to train, and how.

Written by the job owner as TOML (see ``examples/jobs/``), published as a blob of canonical JSON
(:meth:`JobSpec.canonical_bytes`, sorted keys) whose SHA-256 is the ``spec_hash`` on chain. Every
node of a job reads the same blob, so every setting here is one that all peers agree on.

Example::

    task = "digits-mlp"
    rounds = 20
    [optimizer]
    name = "sgd"
    lr = 0.1
    [aggregation]
    rule = "trimmed_mean"
    params = { beta = 0.2 }
    [committee]
    size = 3              # an open committee: three aggregators drawn from the volunteers
    signup_seconds = 30   # (or ``members = ["0x...", ...]``: aggregators the owner names)

Without ``[aggregation]`` a job gets :data:`DEFAULT_AGGREGATION`, a robust rule: any staked
node may join a job as a trainer. Who may aggregate, and how much each participant puts at
risk, are part of the spec too: an open committee needs a strict-majority ``quorum``;
``aggregator_stake`` and ``trainer_stake`` are locked on the Registry from joining until the
job ends (plus the challenge window); trainers weigh equally unless ``weighting = "declared"``
with a ``max_weight`` the contract enforces.
"""

from __future__ import annotations

import difflib
import json
import re
import tomllib
from decimal import Decimal, DecimalException, InvalidOperation
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from allmende._json import UntrustedJSONError, loads_untrusted
from allmende.errors import ConfigError
from allmende.learn.rules import min_updates, rule_params
from allmende.privacy.spec import REQUIREMENTS as PRIVACY_REQUIREMENTS
from allmende.privacy.spec import PrivacySpec

MAX_TRAINERS = 256  # the Jobs contract's bound
MAX_AGGREGATORS = 16  # the Jobs contract's bound on a committee, and so the largest quorum
MAX_ROUNDS = 10_000  # the Jobs contract's bound
MAX_PERIOD = 2_592_000  # 30 days: the Jobs contract's bound on a round deadline and a signup
MAX_WEIGHT = 2**64 - 1  # the Jobs contract's bound on a declared weight
DEFAULT_SIGNUP_SECONDS = 30
DEFAULT_AGGREGATOR_STAKE = 2 * 10**17  # 0.2 ether: more than one slash takes (0.1 by default)
DEFAULT_LOCAL_EPOCHS = 1
DEFAULT_BATCH_SIZE = 32
DEFAULT_ROUND_DEADLINE = 300
DEFAULT_NORM_BOUND = 100.0
WEI_PER_UNIT = {"wei": 1, "gwei": 10**9, "ether": 10**18}
MAX_WEI = 2**256 - 1  # the contracts' uint256
# A spec nests three deep ({"aggregation": {"params": {...}}}); a spec blob nested deeper than
# this is refused before it is parsed (a peer's [[[[... would overflow the JSON parser's stack).
MAX_SPEC_DEPTH = 8

# What each setting must be, for one-line error messages ("job spec: 'rounds' must be ...").
REQUIREMENTS = {
    "task": "the name of an installed task (a non-empty string)",
    "rounds": f"an integer between 1 and {MAX_ROUNDS}",
    "local_epochs": "an integer >= 1",
    "batch_size": "an integer >= 1",
    "optimizer": "a table with name and lr",
    "optimizer.name": "'sgd' or 'adam'",
    "optimizer.lr": "a number > 0",
    "optimizer.momentum": "a number >= 0 and < 1",
    "optimizer.weight_decay": "a number >= 0",
    "aggregation": "a table with rule and params",
    "aggregation.rule": "the name of an aggregation rule (a string)",
    "aggregation.params": "a table of the rule's parameters",
    "min_trainers": f"an integer between 1 and {MAX_TRAINERS}",
    "max_trainers": f"an integer between 1 and {MAX_TRAINERS}",
    "quorum": f"an integer between 1 and {MAX_AGGREGATORS}",
    "reward_per_round": (
        "an integer number of wei between 0 and 2**256 - 1, or a string like '0.01 ether'"
    ),
    "round_deadline": f"an integer number of seconds between 1 and {MAX_PERIOD}",
    "committee": "a table with members (named aggregators) or size and signup_seconds",
    "committee.members": "a list of distinct 0x-prefixed addresses",
    "committee.size": f"an integer between 1 and {MAX_AGGREGATORS}",
    "committee.signup_seconds": f"an integer number of seconds between 1 and {MAX_PERIOD}",
    "trainer_stake": "an integer number of wei >= 0, or a string like '0.1 ether'",
    "aggregator_stake": "an integer number of wei >= 0, or a string like '0.1 ether'",
    "weighting": "'equal' or 'declared'",
    "max_weight": f"an integer between 1 and {MAX_WEIGHT}",
    "norm_bound": "a number > 0",
    "seed": "an integer >= 0",
    "data": "a table of the task's data options (see the task's documentation)",
    **PRIVACY_REQUIREMENTS,
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class OptimizerSpec(_Strict):
    """The trainers' local optimizer; a fresh one every round."""

    name: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(gt=0.0)
    momentum: float = Field(default=0.0, ge=0.0, lt=1.0)
    weight_decay: float = Field(default=0.0, ge=0.0)


class AggregationSpec(_Strict):
    """The rule aggregators apply (see :mod:`allmende.learn.aggregate`) and its parameters."""

    rule: str
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_rule(self) -> AggregationSpec:
        rule_params(self.rule, self.params)  # raises ConfigError, reported as it is
        return self


DEFAULT_AGGREGATION = AggregationSpec(rule="clipped_mean", params={"scale": 1.0, "iters": 3})
"""The rule of a job whose spec has no ``[aggregation]``. Every job admits trainers nobody
vetted (any registered, staked node with the trainer role may join, up to ``max_trainers``), so
the default is robust; ``benchmarks/robustness.py`` measured the choice. Name ``rule =
"fedavg"`` to get the plain weighted mean (e.g. to reproduce a single-process FedAvg exactly).
The published spec blob always names the rule, so nodes never rely on each other's default."""


ADDRESS = r"^0x[0-9a-fA-F]{40}$"


class CommitteeSpec(_Strict):
    """The job's aggregators, fixed before round 0.

    Named (``members``): the owner names them, e.g. its own nodes (owner-run aggregation); any
    quorum up to their number. Open (no members): volunteers sign up for ``signup_seconds``
    after the job is created, and ``size`` of them are drawn on chain, weighted by stake; the
    quorum must then be a strict majority of ``size``.
    """

    members: tuple[str, ...] = ()
    size: int | None = Field(default=None, ge=1, le=MAX_AGGREGATORS)
    signup_seconds: int = Field(default=DEFAULT_SIGNUP_SECONDS, ge=1, le=MAX_PERIOD)

    @field_validator("members", mode="before")
    @classmethod
    def _listed(cls, value: object) -> object:
        return tuple(value) if isinstance(value, list) else value

    @model_validator(mode="after")
    def _members(self) -> CommitteeSpec:
        if len(self.members) > MAX_AGGREGATORS:
            raise ValueError(f"a named committee has at most {MAX_AGGREGATORS} members")
        bad = [m for m in self.members if not re.fullmatch(ADDRESS, m)]
        if bad:
            raise ValueError(f"committee member {bad[0]!r} is not a 0x-prefixed address")
        if len({m.lower() for m in self.members}) != len(self.members):
            raise ValueError("the committee names a member twice; list each address once")
        if self.members and self.size is not None and self.size != len(self.members):
            raise ValueError(
                "give the committee either members or a size, not both; a named committee's "
                "size is its number of members"
            )
        return self

    @property
    def named(self) -> bool:
        return bool(self.members)


class JobSpec(_Strict):
    """A training job. All fields are public and identical for every participant."""

    task: str = Field(min_length=1)
    rounds: int = Field(ge=1, le=MAX_ROUNDS)
    local_epochs: int = Field(default=DEFAULT_LOCAL_EPOCHS, ge=1)
    batch_size: int = Field(default=DEFAULT_BATCH_SIZE, ge=1)
    optimizer: OptimizerSpec
    aggregation: AggregationSpec = DEFAULT_AGGREGATION
    """How the round's updates become the next model; by default :data:`DEFAULT_AGGREGATION`."""
    min_trainers: int = Field(ge=1, le=MAX_TRAINERS)
    """Fewest updates a round may aggregate; a round with fewer commits stalls at its deadline."""
    max_trainers: int = Field(ge=1, le=MAX_TRAINERS)
    quorum: int = Field(ge=1, le=MAX_AGGREGATORS)
    """Aggregators that must propose the same model before a round is final."""
    reward_per_round: int = Field(ge=0, le=MAX_WEI)
    """Wei paid per round; the owner escrows ``rounds * reward_per_round``."""
    round_deadline: int = Field(default=DEFAULT_ROUND_DEADLINE, ge=1, le=MAX_PERIOD)
    """Seconds a round stays open for commits; raise it if slow trainers keep missing rounds."""
    committee: CommitteeSpec = Field(default_factory=CommitteeSpec)
    """The aggregators; by default an open committee of ``2 * quorum - 1`` drawn from volunteers."""
    trainer_stake: int = Field(default=0, ge=0, le=MAX_WEI)
    """Wei each trainer locks on the Registry for the job (its bond, lost when evicted)."""
    aggregator_stake: int = Field(default=DEFAULT_AGGREGATOR_STAKE, ge=0, le=MAX_WEI)
    """Wei each aggregator locks for the job; a provably wrong vote is slashed from it."""
    weighting: Literal["equal", "declared"] = "equal"
    """``equal``: every included update counts once, in the aggregate and in the pay;
    ``declared``: each trainer declares its number of examples, capped at ``max_weight``."""
    max_weight: int | None = Field(default=None, ge=1, le=MAX_WEIGHT)
    norm_bound: float = Field(default=DEFAULT_NORM_BOUND, gt=0.0)
    """Largest L2 norm of ``update - global`` an aggregator accepts; larger ones are excluded."""
    seed: int = Field(default=0, ge=0)
    """Seeds the initial model and, with the round and address, each trainer's shuffle."""
    data: dict[str, Any] = Field(default_factory=dict)
    """The task's options (``[data]``): what the job asks of the trainers' data and the model,
    e.g. a table's feature columns and classes. The task validates them (its ``Options``);
    every peer of the job reads the same, so all trainers see their data the same way."""
    privacy: PrivacySpec | None = None
    """Client-level differential privacy (``[privacy]``, see :mod:`allmende.privacy.spec`):
    every trainer clips its update and adds noise before it leaves the node. Left out: none."""

    @field_validator("reward_per_round", "trainer_stake", "aggregator_stake", mode="before")
    @classmethod
    def _parse_amount(cls, value: object) -> object:
        return parse_wei(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _trainer_range(self) -> JobSpec:
        if self.max_trainers < self.min_trainers:
            raise ValueError(
                f"'max_trainers' ({self.max_trainers}) must be >= 'min_trainers' "
                f"({self.min_trainers}); raise max_trainers or lower min_trainers."
            )
        needed = min_updates(rule_params(self.aggregation.rule, self.aggregation.params))
        if self.min_trainers < needed:
            params = ", ".join(f"{k}={v}" for k, v in sorted(self.aggregation.params.items()))
            raise ValueError(
                f"aggregation rule '{self.aggregation.rule}' ({params}) needs at least {needed} "
                f"updates a round, but 'min_trainers' is {self.min_trainers}, so a round with "
                f"fewer could never be aggregated; raise min_trainers to {needed} or change "
                "the rule's params."
            )
        size = self.committee_size
        if self.quorum > size:
            raise ValueError(
                f"'quorum' ({self.quorum}) exceeds the committee's {size} aggregators; lower it "
                "or enlarge the committee."
            )
        if not self.committee.named and 2 * self.quorum <= size:
            raise ValueError(
                f"an open committee needs a strict-majority quorum: 'quorum' {self.quorum} of "
                f"{size} lets a minority finalize; raise quorum to {size // 2 + 1}."
            )
        if (self.weighting == "declared") != (self.max_weight is not None):
            raise ValueError(
                "'max_weight' goes with weighting = 'declared' (the cap on each trainer's "
                "declared weight), and only with it."
            )
        if self.privacy is not None:
            self._check_privacy(self.privacy)
        return self

    def _check_privacy(self, privacy: PrivacySpec) -> None:
        if self.weighting != "equal":
            raise ValueError(
                "[privacy] needs weighting = 'equal': a declared weight scales one trainer's "
                "share of the average beyond its clip norm, which the noise is calibrated for; "
                "remove weighting and max_weight."
            )
        try:
            privacy.noise_multiplier(self.rounds)
        except ValueError as exc:
            raise ValueError(f"[privacy]: {exc}.") from None

    @property
    def committee_size(self) -> int:
        """How many aggregators the job has: the named members, or the open committee's size."""
        if self.committee.named:
            return len(self.committee.members)
        return self.committee.size if self.committee.size is not None else 2 * self.quorum - 1

    @property
    def weight_cap(self) -> int:
        """The contract's ``weight_cap``: 0 for equal weights, else the declared-weight cap."""
        return self.max_weight or 0

    def weight_of(self, examples: int) -> int:
        """The weight a trainer with ``examples`` local examples commits under this spec."""
        return 1 if self.max_weight is None else max(1, min(examples, self.max_weight))

    def training_settings(self) -> dict[str, Any]:
        """The keyword arguments of ``learn.train.train_local`` that this spec fixes."""
        return {
            "epochs": self.local_epochs,
            "batch_size": self.batch_size,
            "lr": self.optimizer.lr,
            "optimizer": self.optimizer.name,
            "momentum": self.optimizer.momentum,
            "weight_decay": self.optimizer.weight_decay,
        }

    def canonical_bytes(self) -> bytes:
        """The spec as canonical JSON (sorted keys, no spaces): the published spec blob.

        An empty ``data`` table and a missing ``[privacy]`` are left out, so a spec without
        them hashes as it did before they existed."""
        fields = self.model_dump(mode="json")
        if not fields["data"]:
            del fields["data"]
        if fields["privacy"] is None:  # likewise a spec without [privacy]
            del fields["privacy"]
        return json.dumps(
            fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")

    @classmethod
    def from_bytes(cls, blob: bytes) -> JobSpec:
        """Parse a spec blob (untrusted bytes from a peer); :class:`ConfigError` if malformed,
        whatever the bytes are."""
        try:
            raw = loads_untrusted(blob, max_depth=MAX_SPEC_DEPTH)
        except UntrustedJSONError as exc:
            raise ConfigError(
                f"job spec: the blob is refused, {exc}; the job's owner published a broken spec."
            ) from None
        return parse_jobspec(raw)


def parse_wei(text: str) -> int:
    """``"0.01 ether"``, ``"5 gwei"``, ``"123 wei"`` or ``"123"`` as an integer number of wei."""
    parts = text.split()
    unit = parts[1].lower() if len(parts) == 2 else "wei"
    try:
        if len(parts) not in (1, 2) or unit not in WEI_PER_UNIT:
            raise InvalidOperation
        amount = Decimal(parts[0]) * WEI_PER_UNIT[unit]
    except DecimalException:  # not a number, or one past Decimal's exponent range
        raise ValueError(f"cannot read {text!r} as an amount") from None
    if not amount.is_finite() or amount != amount.to_integral_value() or amount < 0:
        raise ValueError(f"{text!r} is not a whole, non-negative number of wei")
    if amount > MAX_WEI:
        raise ValueError(f"{text!r} is more wei than the contracts can hold (2**256 - 1)")
    return int(amount)


def parse_jobspec(raw: object) -> JobSpec:
    """Validate a decoded spec (TOML or JSON) into a :class:`JobSpec`, or one-line ConfigError."""
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        typos = [error for error in errors if error["type"] == "extra_forbidden"]
        raise ConfigError(f"job spec: {_describe((typos or errors)[0])}") from None


def load_jobspec(path: str | Path) -> JobSpec:
    """Read a TOML job spec; :class:`ConfigError` with one line naming the bad field."""
    return loads_jobspec(read_jobspec_text(path), source=str(path))


def read_jobspec_text(path: str | Path) -> str:
    """The text of the job spec file ``path``; :class:`ConfigError` when it cannot be read."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"job spec: cannot read {path} ({exc}); check the path.") from None


def loads_jobspec(text: str, *, source: str) -> JobSpec:
    """Parse the TOML text of a job spec; ``source`` names it in the error."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"job spec: {source} is not valid TOML ({exc}).") from None
    return parse_jobspec(raw)


def _describe(error: Any) -> str:
    """One pydantic error as a sentence that names the field."""
    loc = [str(part) for part in error["loc"]]
    field = ".".join(loc)
    where = f"in [{'.'.join(loc[:-1])}]" if len(loc) > 1 else "at top level"
    if error["type"] == "extra_forbidden":
        hint = _closest_field(loc)
        return f"unknown key '{loc[-1]}' {where}; {hint or 'remove it'}."
    if error["type"] == "missing":
        return f"missing key '{loc[-1]}' {where}; add it."
    if error["type"] == "model_type" and not loc:
        return "the spec must be a table (mapping) of settings at top level."
    if not loc or (error["type"] == "value_error" and field in ("aggregation", "committee")):
        # a check across fields, or the aggregation rule's or the committee's own message
        message = str(error["msg"]).removeprefix("Value error, ")
        return f"[{field}]: {message}." if field == "committee" else message
    requirement = REQUIREMENTS.get(field)
    got = error.get("input")
    if requirement is None:
        return f"'{field}' is invalid: {error['msg']} (got {got!r})."
    return f"'{field}' must be {requirement} (got {got!r})."


def _closest_field(loc: list[str]) -> str:
    """``did you mean 'rounds'?`` for a misspelt key, or ``""``."""
    model: type[BaseModel] = JobSpec
    for part in loc[:-1]:
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        members = [a for a in get_args(annotation) if a is not type(None)]
        annotation = members[0] if len(members) == 1 else annotation  # X | None: X
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    match = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1)
    return f"did you mean '{match[0]}'?" if match else ""
