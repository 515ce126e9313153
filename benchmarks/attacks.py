"""Byzantine trainers for the robustness benchmark: sign flip, label flip, ALIE and IPM.

These behaviours live here (and in tests), never in a node's configuration: an Allmende node has
no switch to misbehave. Each attack turns what an attacker *could* compute in a round into the
model state it submits. The omniscient attacks (ALIE, IPM) see the honest trainers' models of the
round, the strongest and usual assumption in the papers that define them.

All arithmetic is on deltas ``d = model - global`` per state entry, in the entry's dtype:

- ``sign_flip``: train honestly, submit ``global - SIGN_FLIP_SCALE * d``.
- ``label_flip``: train on labels ``C - 1 - y`` (``C`` classes), submit the result.
- ``alie`` ("A Little Is Enough", Baruch et al., 2019): submit ``global + mu - z * sigma``, with
  ``mu``, ``sigma`` the coordinate-wise mean and standard deviation of the honest deltas and
  ``z = Phi^-1((n - s) / n)``, ``s = floor(n / 2 + 1) - f``: the largest shift that still hides
  inside the honest spread.
- ``ipm`` (inner-product manipulation, Xie et al., 2019): submit ``global - IPM_EPSILON * mu``,
  so the mean points against the honest direction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import torch
from torch import Tensor

from allmende.learn.task import LocalData

State = dict[str, Tensor]

SIGN_FLIP_SCALE = 1.0
IPM_EPSILON = 0.1
ATTACKS = ("sign_flip", "label_flip", "alie", "ipm")


@dataclass(frozen=True)
class Attack:
    """How an attacker deviates: does it train (and on what labels), and what does it submit."""

    name: str
    trains: bool
    flips_labels: bool


_ATTACKS = {
    "sign_flip": Attack("sign_flip", trains=True, flips_labels=False),
    "label_flip": Attack("label_flip", trains=True, flips_labels=True),
    "alie": Attack("alie", trains=False, flips_labels=False),
    "ipm": Attack("ipm", trains=False, flips_labels=False),
}


def get_attack(name: str) -> Attack:
    """The attack called ``name``; ``ValueError`` naming the known ones otherwise."""
    if name not in _ATTACKS:
        raise ValueError(f"Unknown attack '{name}'; choose one of: {', '.join(ATTACKS)}.")
    return _ATTACKS[name]


def flip_labels(data: LocalData, *, num_classes: int) -> LocalData:
    """The same inputs with every label ``y`` replaced by ``num_classes - 1 - y``."""
    return LocalData(inputs=data.inputs, targets=(num_classes - 1) - data.targets)


def sign_flip(global_state: State, trained: State) -> State:
    """``global - SIGN_FLIP_SCALE * (trained - global)`` per floating entry."""
    flipped: State = {}
    for key, ref in global_state.items():
        if ref.is_floating_point():
            flipped[key] = ref - SIGN_FLIP_SCALE * (trained[key] - ref)
        else:
            flipped[key] = ref.clone()
    return flipped


def alie_z(n: int, f: int) -> float:
    """ALIE's shift in standard deviations for ``n`` trainers of which ``f`` attack."""
    supporters = math.floor(n / 2 + 1) - f  # honest trainers the attackers need on their side
    return NormalDist().inv_cdf((n - supporters) / n)


def honest_delta_stats(global_state: State, honest: list[State], key: str) -> tuple[Tensor, Tensor]:
    """Coordinate-wise mean and (unbiased) standard deviation of the honest deltas of ``key``."""
    deltas = torch.stack([state[key] - global_state[key] for state in honest])  # (h, *shape)
    return deltas.mean(dim=0), deltas.std(dim=0)


def alie(global_state: State, honest: list[State], *, n: int, f: int) -> State:
    """``global + mu - z * sigma`` per floating entry (see :func:`alie_z`)."""
    z = alie_z(n, f)
    crafted: State = {}
    for key, ref in global_state.items():
        if not ref.is_floating_point():
            crafted[key] = ref.clone()
            continue
        mu, sigma = honest_delta_stats(global_state, honest, key)
        crafted[key] = ref + mu - z * sigma
    return crafted


def ipm(global_state: State, honest: list[State]) -> State:
    """``global - IPM_EPSILON * mu`` per floating entry, ``mu`` the honest mean delta."""
    crafted: State = {}
    for key, ref in global_state.items():
        if not ref.is_floating_point():
            crafted[key] = ref.clone()
            continue
        mu, _ = honest_delta_stats(global_state, honest, key)
        crafted[key] = ref - IPM_EPSILON * mu
    return crafted


def craft(
    attack: Attack,
    global_state: State,
    *,
    trained: State | None,
    honest: list[State],
    n: int,
    f: int,
) -> State:
    """The state an attacker submits. ``trained`` is its own model when ``attack.trains``."""
    if attack.name == "sign_flip":
        if trained is None:
            raise ValueError("sign_flip needs the attacker's own trained model.")
        return sign_flip(global_state, trained)
    if attack.name == "label_flip":
        if trained is None:
            raise ValueError("label_flip needs the model trained on flipped labels.")
        return trained
    if len(honest) < 2:
        raise ValueError(f"{attack.name} needs at least two honest models to estimate from.")
    if attack.name == "alie":
        return alie(global_state, honest, n=n, f=f)
    return ipm(global_state, honest)
