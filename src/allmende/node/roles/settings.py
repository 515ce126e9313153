"""The roles' sections of ``node.toml``: ``[trainer]`` and ``[aggregator]``.

Example::

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

Leaving ``allowed_tasks`` or ``allowed_owners`` out means "any" (any *installed* task: a node
never runs a task that is not installed on it, whatever its policy says).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from allmende.chain.addresses import is_address, to_checksum_address
from allmende.learn.dataset import DatasetDecl

DEFAULT_POLL_SECONDS = 0.3
DEFAULT_REFRESH_SECONDS = 2.0
DEFAULT_FETCH_GRACE_SECONDS = 10.0


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConsentPolicy(_Section):
    """Which jobs this node agrees to work on; checked before it joins a job.

    ``allowed_tasks``: task names (None: every installed task). ``allowed_owners``: job owner
    addresses (None: anyone). ``min_reward_per_round_wei``: the job's whole per-round reward must
    be at least this (the node's own share depends on how many others join, so it is not known
    before joining). Peers need not agree on any of it.
    """

    allowed_tasks: list[str] | None = None
    allowed_owners: list[str] | None = None
    min_reward_per_round_wei: int = Field(default=0, ge=0)

    @field_validator("allowed_owners")
    @classmethod
    def _addresses(cls, values: list[str] | None) -> list[str] | None:
        if values is None:
            return None
        for value in values:
            if not is_address(value):
                raise ValueError(f"{value!r} is not an Ethereum address")
        return [to_checksum_address(value) for value in values]


class _RoleSection(ConsentPolicy):
    """Consent policy plus how often the role looks at the chain.

    ``poll_seconds``: pause between polls of the chain's events; lower reacts faster and costs
    more RPC calls. ``refresh_seconds``: longest pause between two looks at a job even when no
    event arrived (deadlines pass without events). Neither needs to agree between peers.
    """

    poll_seconds: float = Field(default=DEFAULT_POLL_SECONDS, gt=0)
    refresh_seconds: float = Field(default=DEFAULT_REFRESH_SECONDS, gt=0)

    @property
    def policy(self) -> ConsentPolicy:
        """The consent part of this section."""
        return ConsentPolicy(
            allowed_tasks=self.allowed_tasks,
            allowed_owners=self.allowed_owners,
            min_reward_per_round_wei=self.min_reward_per_round_wei,
        )


class TrainerSection(_RoleSection):
    """``[trainer]``: consent policy and the local dataset declaration (``[trainer.dataset]``).

    The dataset picks this node's part of the task's training data; the nodes of one network must
    agree on ``partition``, ``alpha``, ``num_parts`` and ``seed`` and each pick another ``part``
    (symptom of a mistake: overlapping data, an accuracy that does not improve with more nodes).
    """

    dataset: DatasetDecl = DatasetDecl()


class AggregatorSection(_RoleSection):
    """``[aggregator]``: consent policy and fetch patience.

    ``fetch_grace_seconds``: after a round's deadline, how long to keep asking peers for a
    committed update that nobody serves before leaving it out. Aggregators that leave out
    different updates disagree and the minority is slashed, so raise it on slow networks.
    """

    fetch_grace_seconds: float = Field(default=DEFAULT_FETCH_GRACE_SECONDS, ge=0)
