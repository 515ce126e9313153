"""A job's ``[privacy]`` section: the target (ε, δ), the clip norm, and the trainer sampling.

Example (in a job spec)::

    [privacy]
    epsilon = 4.0        # per trainer (its whole dataset), over the whole job
    delta = 1e-5
    clip_norm = 1.0      # L2 bound of each trainer's update - global, over all tensors
    sample_rate = 1.0    # the share of trainers drawn into each round (allmende.privacy.sampling)
    noise = "per_update" # or "split": each trainer adds its 1/m share (with secure aggregation)

Every peer of a job reads the same spec, so they agree on all of it; the noise multiplier is
derived from it (:meth:`PrivacySpec.noise_multiplier`), the same on every node. The
accountant and torch are imported only when a method needs them, so reading a spec stays cheap.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_EPSILON = 100.0

REQUIREMENTS = {
    "privacy": "a table with epsilon, delta and clip_norm",
    "privacy.epsilon": f"a number > 0 and <= {MAX_EPSILON:g} (the job's ε per trainer)",
    "privacy.delta": "a number > 0 and < 1, well below 1 / (number of trainers), e.g. 1e-5",
    "privacy.clip_norm": "a number > 0 (the L2 bound of each update's change to the model)",
    "privacy.sample_rate": "a number > 0 and <= 1 (the share of trainers drawn each round)",
    "privacy.noise": "'per_update' or 'split'",
}


class PrivacySpec(BaseModel):
    """Client-level differential privacy for a job (DP-FedAvg, see :mod:`allmende.privacy.dp`).

    ``epsilon``, ``delta``: what each trainer's dataset may spend on the whole job. Lower ε
    means more noise (symptom of too little: the accuracy does not rise over the rounds).
    ``clip_norm``: each update's change to the model is scaled down to this L2 norm; too low
    slows training, too high needs more noise for the same ε. ``sample_rate``: the share of
    trainers drawn into each round; a trainer contributes to at most
    :meth:`max_contributions` rounds. ``noise``: ``"per_update"`` puts the whole noise on every
    update (private against the aggregators too); ``"split"`` gives each trainer a
    ``1 / min_trainers`` share, private for what the models reveal, and against the aggregators
    only when secure aggregation hides the single updates.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    epsilon: float = Field(gt=0.0, le=MAX_EPSILON)
    delta: float = Field(gt=0.0, lt=1.0)
    clip_norm: float = Field(gt=0.0)
    sample_rate: float = Field(default=1.0, gt=0.0, le=1.0)
    noise: Literal["per_update", "split"] = "per_update"

    def max_contributions(self, rounds: int) -> int:
        """The most rounds of a ``rounds``-round job one trainer contributes to:
        ``ceil(sample_rate * rounds)``. A trainer drawn more often sits out the rest."""
        return max(1, math.ceil(self.sample_rate * rounds - 1e-9))

    def noise_multiplier(self, rounds: int) -> float:
        """``z``: the noise std over the clip norm that makes :meth:`max_contributions`
        contributions spend at most ``epsilon`` (RDP, no amplification: the sample is public)."""
        from allmende.privacy.accountant import noise_multiplier_for  # scipy: imported late

        return noise_multiplier_for(
            self.epsilon, delta=self.delta, steps=self.max_contributions(rounds)
        )

    def noise_shares(self, min_trainers: int) -> int:
        """How many trainers' noise adds up to the whole: 1 per update, or ``min_trainers``."""
        return 1 if self.noise == "per_update" else min_trainers

    def noise_std(self, *, rounds: int, min_trainers: int) -> float:
        """The std of the noise each trainer adds to every coordinate."""
        from allmende.privacy.dp import noise_share_std  # torch: imported late

        return noise_share_std(
            self.noise_multiplier(rounds), self.clip_norm, self.noise_shares(min_trainers)
        )

    def epsilon_after(self, contributions: int, *, rounds: int) -> float:
        """ε a trainer has spent on the job after ``contributions`` rounds."""
        from allmende.privacy.accountant import epsilon_spent

        return epsilon_spent(self.noise_multiplier(rounds), delta=self.delta, steps=contributions)
