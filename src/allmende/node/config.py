"""The node's config file, ``<home>/node.toml``: one nested pydantic model per component.

Every section rejects unknown keys and wrong types, naming the key (``node.prot: Extra inputs are
not permitted``). A component adds its settings as a new section: a model with
``extra="forbid"`` and defaults, and one field on :class:`NodeConfig`. Relative paths are relative
to the node home.

Example::

    [node]
    host = "127.0.0.1"
    port = 8470
    roles = ["trainer", "aggregator"]

    [chain]
    deployment = "../.devnet/deployment.json"

    [stake]
    amount_wei = 1000000000000000000

    [store]
    max_blob_bytes = 4294967296

    [net]
    allow_endpoint_ranges = ["127.0.0.0/8", "::1/128"]  # a devnet: every node on loopback

    [trainer]
    allowed_tasks = ["digits-mlp"]
    allowed_owners = ["0x90F79bf6EB2c4f870365E785982E1f101E93b906"]
    min_reward_per_round_wei = 1000000000000000

    [trainer.dataset]
    partition = "dirichlet"
    alpha = 0.5
    num_parts = 6
    part = 2
    seed = 7

    [aggregator]
    poll_seconds = 0.3

The roles' sections (``[trainer]``, ``[aggregator]``) carry the consent policy. A trainer
trains only for the tasks its ``allowed_tasks`` names (left out: none, so a new node trains for
nobody until its operator chooses); an aggregator left without ``allowed_tasks`` aggregates for
any *installed* task. Leaving ``allowed_owners`` out means any owner. A node never runs a task
that is not installed on it, whatever its policy says.

``[trainer.dataset]`` may instead name the operator's own files (see
:mod:`allmende.learn.dataset`)::

    [trainer.dataset]
    kind = "table"
    path = "data/patients.csv"   # relative to the node home
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from allmende.chain.addresses import is_address, to_checksum_address
from allmende.chain.roles import ROLE_AGGREGATOR, ROLE_PROVIDER, ROLE_TRAINER, ROLE_VERIFIER
from allmende.errors import ConfigError
from allmende.learn.dataset import DATA_KINDS, DatasetDecl, DataSource
from allmende.net.endpoints import EndpointPolicy, parse_ranges
from allmende.net.limits import (
    DEFAULT_FETCH_DEADLINE_SECONDS,
    DEFAULT_FETCH_MIN_BYTES_PER_SECOND,
    DEFAULT_FETCH_RATE_WINDOW_SECONDS,
    DEFAULT_MAX_CONNECTIONS_PER_PEER,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_REQUESTS_PER_PEER,
    DEFAULT_SEND_TIMEOUT_SECONDS,
    MAX_MESSAGE_TTL_SECONDS,
)
from allmende.net.signers import DEFAULT_SIGNER_CACHE_SECONDS
from allmende.store.blobs import DEFAULT_GC_GRACE_SECONDS, DEFAULT_MAX_BLOB_BYTES

CONFIG_FILE = "node.toml"
BLOBS_DIR = "blobs"  # under the data directory, beside the state database
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8470
DEFAULT_PASSWORD_ENV = "ALLMENDE_KEY_PASSWORD"
# Connections (and requests in flight) the API serves at once; more get 503 until some finish.
DEFAULT_MAX_CONNECTIONS = 2048
# Chain ids of local development chains (Anvil, Hardhat, Ganache): the only ones where a
# plaintext key is allowed.
DEVNET_CHAIN_IDS = frozenset({31337, 1337})
DEFAULT_CHAIN_ID = 31337  # of an offline node's message domain

DEFAULT_POLL_SECONDS = 0.3
DEFAULT_MAX_CLOCK_LEAD_SECONDS = 300.0  # Hardhat runs 1 s a block ahead: minutes, not hours
DEFAULT_REFRESH_SECONDS = 2.0
DEFAULT_STEP_BUDGET_SECONDS = 900.0
DEFAULT_SPEC_FETCH_SECONDS = 60.0
DEFAULT_PARALLEL_CONSIDERS = 4
DEFAULT_FETCH_GRACE_SECONDS = 10.0

Role = Literal["trainer", "aggregator"]
DEFAULT_ROLES: tuple[Role, ...] = ("trainer", "aggregator")
# The Registry's role bitmask (contracts/README.md), by role name.
ROLE_BITS: dict[str, int] = {
    "trainer": ROLE_TRAINER,
    "aggregator": ROLE_AGGREGATOR,
    "verifier": ROLE_VERIFIER,
    "provider": ROLE_PROVIDER,
}
# Roles the Registry knows but no service of this release runs yet.
UNBUILT_ROLES = frozenset(ROLE_BITS) - {"trainer", "aggregator"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeSection(_Section):
    """Where the node listens and what it does.

    ``public_url`` is the endpoint registered on chain for peers to reach; it defaults to
    ``http://host:port`` (set it when the node is behind NAT or a proxy: the symptom is peers
    logging "unreachable" for this node). ``data_dir`` holds blobs and state.
    """

    host: str = DEFAULT_HOST
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    public_url: str | None = None
    roles: list[Role] = Field(default_factory=lambda: list(DEFAULT_ROLES))
    data_dir: Path = Path(".")
    key_file: Path = Path("key.json")
    password_env: str = DEFAULT_PASSWORD_ENV

    @field_validator("roles", mode="before")
    @classmethod
    def _built_roles(cls, values: object) -> object:
        unbuilt = sorted(set(values) & UNBUILT_ROLES) if isinstance(values, list) else []
        if unbuilt:
            raise ValueError(
                f"the role {unbuilt[0]!r} has no service in this release yet (a node can run "
                "'trainer' and 'aggregator'); remove it from node.roles"
            )
        return values

    @property
    def endpoint(self) -> str:
        """The URL peers use to reach this node."""
        return self.public_url or f"http://{self.host}:{self.port}"

    @property
    def role_bits(self) -> int:
        """The roles as the Registry's bitmask."""
        bits = 0
        for role in self.roles:
            bits |= ROLE_BITS[role]
        return bits


class ChainSection(_Section):
    """Which chain and contracts the node uses.

    Either ``deployment`` (the file ``allmende devnet up`` writes) or ``offline = true``: no chain,
    no registration, messages accepted only from ``trusted_signers``, and the message domain made
    of ``chain_id`` and ``registry`` (for benchmarks and tests of the data plane alone).
    ``rpc_url`` overrides the deployment file's. ``ws_url``: the websocket endpoint that
    announces new blocks, so the roles react at once instead of at their next poll; left out, it
    is the RPC URL with a ``ws://`` scheme (Anvil serves both on one port); ``""`` turns it off.
    ``signer_cache_seconds``: how long a "registered" answer is trusted; lower it if deregistered
    nodes must be refused sooner.
    """

    deployment: Path | None = None
    rpc_url: str | None = None
    ws_url: str | None = None
    offline: bool = False
    chain_id: int = Field(default=DEFAULT_CHAIN_ID, ge=1)
    registry: str = "0x" + "00" * 20
    trusted_signers: list[str] = Field(default_factory=list)
    signer_cache_seconds: float = Field(default=DEFAULT_SIGNER_CACHE_SECONDS, ge=0)

    @field_validator("trusted_signers")
    @classmethod
    def _addresses(cls, values: list[str]) -> list[str]:
        for value in values:
            if not is_address(value):
                raise ValueError(f"{value!r} is not an Ethereum address")
        return values

    @model_validator(mode="after")
    def _one_source(self) -> ChainSection:
        if not self.offline and self.deployment is None:
            raise ValueError("set chain.deployment to a deployment.json, or chain.offline = true")
        return self


class StakeSection(_Section):
    """Stake to keep on the Registry; ``node run`` tops it up to ``amount_wei`` (0: no staking)."""

    amount_wei: int = Field(default=0, ge=0)


class StoreSection(_Section):
    """Blob store limits; ``max_blob_bytes`` must be at least the largest model of any job."""

    max_blob_bytes: int = Field(default=DEFAULT_MAX_BLOB_BYTES, gt=0)
    gc_grace_seconds: float = Field(default=DEFAULT_GC_GRACE_SECONDS, ge=0)


class NetSection(_Section):
    """HTTP limits. Peers need clocks within a few seconds of each other for message expiry.

    ``fetch_timeout_seconds``: longest wait for the next bytes of a blob from a peer before trying
    the next one; raise it on slow links (symptom: "timed out" peer faults for healthy peers).
    ``max_connections``: connections and requests served at once; beyond it new requests get
    503 until others finish, which bounds the memory peers can tie up (each stalled download
    holds ~120 KiB). Raise it for a node many peers download from at once (symptom: peers log
    HTTP 503 from this node); the process's open-file limit must exceed it. Peers need not agree.

    Fair sharing, so one greedy peer (one IPv4 address or IPv6 /64) cannot starve the others;
    ``max_connections`` applies first. ``max_connections_per_peer`` (default 512): connections
    one peer may hold open. ``max_requests_per_peer`` (default 256): requests it may have in
    flight, stalled downloads included. Past either, its new requests get 503. Raise them when
    many honest nodes share one address, e.g. behind NAT or a fleet on one machine (symptom:
    their logs show HTTP 503 "This peer already ..." from this node). ``send_timeout_seconds``
    (default 30): a download whose reader took nothing for this long is dropped; raise it for
    peers on very slow links (symptom: their downloads from this node break off).

    Downloads from peers: ``fetch_deadline_seconds`` (default 600) is the longest one blob may
    take from one peer; ``fetch_min_bytes_per_second`` (default 8 KiB/s) the rate it must
    average over each ``fetch_rate_window_seconds`` (default 30; the first judged one window in).
    A peer too slow is recorded as a fault ("slow" or "timeout") and the next holder is tried;
    it is tried last for a while. Lower the rate or raise the deadline for big blobs on slow
    links (symptom: "slow" peer faults for healthy peers). None of these need peers to agree.

    ``allow_endpoint_ranges``: address ranges (CIDR) of peer endpoints this node contacts besides
    public addresses. Endpoints come from the chain, written by whoever registered, so by default
    loopback, link-local, private, multicast, reserved and unspecified addresses are refused
    (and URLs with userinfo, a query or a fragment always are); ``allmende node init`` on a
    devnet chain writes the loopback ranges here. A private network lists its range (e.g.
    ``"10.0.0.0/8"``); every node of it must, or it skips the others (symptom: ``refused`` peer
    faults naming the range). A node refuses to register an endpoint its own ranges refuse.
    """

    max_message_bytes: int = Field(default=DEFAULT_MAX_MESSAGE_BYTES, gt=0)
    max_message_ttl_seconds: int = Field(default=MAX_MESSAGE_TTL_SECONDS, gt=0)
    fetch_timeout_seconds: float = Field(default=30.0, gt=0)
    max_connections: int = Field(default=DEFAULT_MAX_CONNECTIONS, gt=0)
    max_connections_per_peer: int = Field(default=DEFAULT_MAX_CONNECTIONS_PER_PEER, gt=0)
    max_requests_per_peer: int = Field(default=DEFAULT_MAX_REQUESTS_PER_PEER, gt=0)
    send_timeout_seconds: float = Field(default=DEFAULT_SEND_TIMEOUT_SECONDS, gt=0)
    fetch_deadline_seconds: float = Field(default=DEFAULT_FETCH_DEADLINE_SECONDS, gt=0)
    fetch_min_bytes_per_second: int = Field(default=DEFAULT_FETCH_MIN_BYTES_PER_SECOND, ge=0)
    fetch_rate_window_seconds: float = Field(default=DEFAULT_FETCH_RATE_WINDOW_SECONDS, gt=0)
    allow_endpoint_ranges: list[str] = Field(default_factory=list)

    @field_validator("allow_endpoint_ranges")
    @classmethod
    def _ranges(cls, values: list[str]) -> list[str]:
        parse_ranges(values)
        return values

    @property
    def endpoint_policy(self) -> EndpointPolicy:
        """Which peer endpoints this node contacts."""
        return EndpointPolicy.allowing(self.allow_endpoint_ranges)


class ConsentPolicy(_Section):
    """Which jobs this node agrees to work on; checked before it joins a job.

    ``allowed_tasks``: task names (None: every installed task for an aggregator, none for a
    trainer, which trains only for tasks its operator named). ``allowed_owners``: job owner
    addresses (None: anyone). ``min_reward_per_round_wei``: the job's whole per-round reward must
    be at least this (the node's own share depends on how many others join, so it is not known
    before joining). ``max_stake_wei``: the most of its stake the node lets one job lock (None:
    any amount it has free). Owner, reward and stake are read from the chain and checked before
    the node fetches anything from the job's owner. Peers need not agree on any of it.
    """

    allowed_tasks: list[str] | None = None
    allowed_owners: list[str] | None = None
    min_reward_per_round_wei: int = Field(default=0, ge=0)
    max_stake_wei: int | None = Field(default=None, ge=0)

    @field_validator("allowed_owners")
    @classmethod
    def _addresses(cls, values: list[str] | None) -> list[str] | None:
        if values is None:
            return None
        for value in values:
            if not is_address(value):
                raise ValueError(f"{value!r} is not an Ethereum address")
        return [to_checksum_address(value) for value in values]


class RoleSection(ConsentPolicy):
    """Consent policy plus how often the role looks at the chain.

    ``poll_seconds``: pause between polls of the chain's events; lower reacts faster and costs
    more RPC calls. ``refresh_seconds``: longest pause between two looks at a job even when no
    event arrived (deadlines pass without events). Neither needs to agree between peers.

    Each job is stepped on its own: ``step_budget_seconds`` bounds one step of one job (a step
    over it is cancelled, and the job is looked at less often for a while); a job the node has
    not joined yet gets ``spec_fetch_seconds`` to serve its spec, and at most
    ``max_parallel_considers`` such jobs are looked at at once, so jobs whose owners serve their
    specs slowly never hold up the jobs the node works on.

    ``max_clock_lead_seconds``: how far ahead of this machine's clock the chain's may be taken
    to run (deadlines are judged in chain time); a newer block further ahead is believed only
    that far, so an endpoint sending far-future timestamps cannot make the node skip rounds.
    Unset, it is 300 s, except on a devnet chain id, whose clock is moved forward by hand (a
    test's ``advance_time``) and is believed however far ahead it runs.
    """

    poll_seconds: float = Field(default=DEFAULT_POLL_SECONDS, gt=0)
    refresh_seconds: float = Field(default=DEFAULT_REFRESH_SECONDS, gt=0)
    step_budget_seconds: float = Field(default=DEFAULT_STEP_BUDGET_SECONDS, gt=0)
    spec_fetch_seconds: float = Field(default=DEFAULT_SPEC_FETCH_SECONDS, gt=0)
    max_parallel_considers: int = Field(default=DEFAULT_PARALLEL_CONSIDERS, ge=1)
    max_clock_lead_seconds: float | None = Field(default=None, ge=0)

    def clock_lead_bound(self, chain_id: int) -> float:
        """The most the chain's clock is believed to run ahead on chain ``chain_id``."""
        if self.max_clock_lead_seconds is not None:
            return self.max_clock_lead_seconds
        return math.inf if chain_id in DEVNET_CHAIN_IDS else DEFAULT_MAX_CLOCK_LEAD_SECONDS

    @property
    def policy(self) -> ConsentPolicy:
        """The consent part of this section."""
        return ConsentPolicy(
            allowed_tasks=self.allowed_tasks,
            allowed_owners=self.allowed_owners,
            min_reward_per_round_wei=self.min_reward_per_round_wei,
            max_stake_wei=self.max_stake_wei,
        )


DEFAULT_MAX_JOB_DELTA = 1e-5


class TrainerPrivacy(_Section):
    """``[trainer.privacy]``: the data owner's privacy rules, enforced by this node.

    ``budget_epsilon``: the total ε the declared dataset may spend over all jobs (summed across
    jobs, see :mod:`allmende.privacy.budget`); the node refuses to join a job whose ε exceeds
    what is left, and stops contributing when the next round would pass it. ``max_job_epsilon``:
    the largest ε one job may have. With either set, every job must have a ``[privacy]`` section
    with ``delta`` at most ``max_job_delta``; a job without one is refused. Left out (the
    default): jobs without DP are accepted, and what DP jobs spend is still recorded
    (``allmende node privacy HOME``). Peers need not agree on any of it.
    """

    budget_epsilon: float | None = Field(default=None, gt=0)
    max_job_epsilon: float | None = Field(default=None, gt=0)
    max_job_delta: float = Field(default=DEFAULT_MAX_JOB_DELTA, gt=0, lt=1)

    @property
    def requires_dp(self) -> bool:
        return self.budget_epsilon is not None or self.max_job_epsilon is not None


class TrainerSection(RoleSection):
    """``[trainer]``: consent policy and the local dataset declaration (``[trainer.dataset]``).

    Consent by default: a trainer trains for nobody until ``allowed_tasks`` names the tasks it
    may run (left out, or empty, every job is refused, and the log says how to allow one).

    The dataset is the operator's own files (``kind = "table"``, ``"images"`` or ``"text"``, see
    :mod:`allmende.learn.dataset`), or this node's part of the data a task ships
    (``kind = "partition"``, the default): the nodes of one network must then agree on
    ``partition``, ``alpha``, ``num_parts`` and ``seed`` and each pick another ``part`` (symptom
    of a mistake: overlapping data, an accuracy that does not improve with more nodes).

    ``device``: where the node trains. ``"auto"`` (the default) takes a CUDA GPU where torch
    finds one, else the CPU; ``"cuda"`` refuses to start without a GPU; ``"cpu"`` never uses
    one. Peers need not agree on it (what holds bit for bit on which device:
    :mod:`allmende.learn.devices`).

    ``[trainer.privacy]``: the privacy budget and the DP this node requires
    (:class:`TrainerPrivacy`).
    """

    dataset: DataSource = DatasetDecl()
    device: Literal["auto", "cpu", "cuda"] = "auto"
    privacy: TrainerPrivacy = TrainerPrivacy()


class AggregatorSection(RoleSection):
    """``[aggregator]``: consent policy and fetch patience.

    ``fetch_grace_seconds``: after a round's deadline, how long to keep asking peers for a
    committed update that nobody serves before leaving it out. Aggregators that leave out
    different updates disagree and the minority is slashed, so raise it on slow networks.
    """

    fetch_grace_seconds: float = Field(default=DEFAULT_FETCH_GRACE_SECONDS, ge=0)


class NodeConfig(_Section):
    """The whole ``node.toml``; roles add their sections here."""

    node: NodeSection = NodeSection()
    chain: ChainSection
    stake: StakeSection = StakeSection()
    store: StoreSection = StoreSection()
    net: NetSection = NetSection()
    trainer: TrainerSection = TrainerSection()
    aggregator: AggregatorSection = AggregatorSection()


def load_config(home: Path) -> NodeConfig:
    """Read and validate ``<home>/node.toml``; :class:`ConfigError` names every bad key."""
    path = Path(home) / CONFIG_FILE
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"No node config at {path}; create a node home with `allmende node init {home}`."
        ) from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"The node config {path} is not valid TOML: {exc}.") from None
    config = parse_config(raw, source=str(path))
    dataset = config.trainer.dataset
    if isinstance(dataset, DatasetDecl) or dataset.path.is_absolute():
        return config
    trainer = config.trainer.model_copy(update={"dataset": dataset.resolved(Path(home))})
    return config.model_copy(update={"trainer": trainer})


def parse_config(raw: dict[str, Any], *, source: str = "the node config") -> NodeConfig:
    """Validate a config mapping; :class:`ConfigError` names every bad key."""
    try:
        return NodeConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(_key_path(err['loc'])) or '(top level)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"{source} is invalid: {problems}. Fix these keys and retry.") from None


def _key_path(loc: tuple[int | str, ...]) -> list[str]:
    """A pydantic error location as the keys of node.toml: the dataset's ``kind`` tag, which
    pydantic puts in the path of a tagged union (``trainer.dataset.table.path``), is left out."""
    keys = [str(part) for part in loc]
    for i in range(1, len(keys) - 1):
        if keys[i - 1] == "dataset" and keys[i] in DATA_KINDS:
            return keys[:i] + keys[i + 1 :]
    return keys


def resolve(home: Path, path: Path) -> Path:
    """``path`` made absolute against the node home."""
    return path if path.is_absolute() else (Path(home) / path).resolve()


def write_config(home: Path, config: NodeConfig) -> Path:
    """Write ``config`` as ``<home>/node.toml`` (defaults included, so every key is visible)."""
    path = Path(home) / CONFIG_FILE
    data = config.model_dump(mode="json", exclude_none=True)
    path.write_text(_to_toml(data))
    return path


def _to_toml(table: dict[str, Any], prefix: str = "") -> str:
    """Scalars and lists as ``key = value``, then nested tables as ``[prefix.name]``."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in table.items() if not isinstance(v, dict)]
    text = "\n".join(lines) + ("\n" if lines else "")
    for key, value in table.items():
        if isinstance(value, dict):
            name = f"{prefix}{key}"
            text += f"\n[{name}]\n" + _to_toml(value, prefix=f"{name}.")
    return text.lstrip("\n")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"Cannot write {type(value).__name__} to TOML.")


# TOML basic strings: these characters must be escaped; other control characters and DEL are
# written as \uXXXX, so any string (a path or URL with a newline, a quote or a backslash) reads
# back exactly.
_TOML_ESCAPES = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
                 "\r": "\\r"}  # fmt: skip


def _toml_string(value: str) -> str:
    out = []
    for char in value:
        if char in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'
