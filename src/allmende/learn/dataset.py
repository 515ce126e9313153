"""The node operator's declaration of its local data: pydantic only, no torch.

Node configuration (``node.toml``) holds a :class:`DatasetDecl`, and reading it must stay cheap:
``allmende node init`` and the other light commands never import torch.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_ALPHA = 0.5
DEFAULT_PARTITION_SEED = 0


class DatasetDecl(BaseModel):
    """The node operator's declaration of which local data a task trains on.

    For the built-in tasks the node's data is one part of a seeded partition of the task's
    training set: ``part`` of ``num_parts``. Nodes of one demo network must agree on
    ``partition``, ``alpha``, ``num_parts`` and ``seed`` (otherwise their parts overlap), and
    each must pick a different ``part``.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    partition: Literal["iid", "dirichlet"] = "iid"
    alpha: float = Field(default=DEFAULT_ALPHA, gt=0.0)
    """Dirichlet concentration over labels; smaller means more skewed parts (non-IID)."""
    num_parts: int = Field(default=1, ge=1)
    part: int = Field(default=0, ge=0)
    seed: int = Field(default=DEFAULT_PARTITION_SEED, ge=0)

    @model_validator(mode="after")
    def _part_in_range(self) -> DatasetDecl:
        if self.part >= self.num_parts:
            raise ValueError(
                f"part {self.part} does not exist when num_parts is {self.num_parts}; "
                f"choose a part between 0 and {self.num_parts - 1}"
            )
        return self
