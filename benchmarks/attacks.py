"""Byzantine trainers for the robustness benchmark: sign flip, label flip, ALIE, IPM and a scaled
model replacement.

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
- ``model_replacement`` (backdoor by model replacement, Bagdasaryan et al., 2020): train a
  *target* model on a poisoned objective (every example of class ``BACKDOOR_SOURCE`` labelled
  ``BACKDOOR_TARGET``, for ``BACKDOOR_EPOCHS`` local epochs), submit
  ``global + boost * (target - global)`` with ``boost = n / f``. The ``f`` attackers' boosted
  deltas then carry the weight of all ``n`` trainers, so under FedAvg the new global model is
  the target plus the honest trainers' (down-weighted) progress.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import torch
from torch import Tensor

from allmende.learn.task import LocalData

State = dict[str, Tensor]

SIGN_FLIP_SCALE = 1.0
IPM_EPSILON = 0.1
BACKDOOR_SOURCE = 7
"""The class whose examples the model-replacement attacker relabels ..."""
BACKDOOR_TARGET = 1
"""... as this class: a 7 should read as a 1."""
BACKDOOR_EPOCHS = 5
"""The attacker trains its target this many local epochs (the job's is 1), so the target
really has learnt the backdoor before it is boosted."""
ATTACKS = ("sign_flip", "label_flip", "alie", "ipm", "model_replacement")

Labels = Literal["true", "flipped", "backdoor"]


@dataclass(frozen=True)
class Attack:
    """How an attacker deviates: does it train (and on which labels), and what does it submit."""

    name: str
    trains: bool
    labels: Labels = "true"
    epochs: int | None = None
    """Local epochs of the attacker's own training; None: the job's."""


_ATTACKS = {
    "sign_flip": Attack("sign_flip", trains=True),
    "label_flip": Attack("label_flip", trains=True, labels="flipped"),
    "alie": Attack("alie", trains=False),
    "ipm": Attack("ipm", trains=False),
    "model_replacement": Attack(
        "model_replacement", trains=True, labels="backdoor", epochs=BACKDOOR_EPOCHS
    ),
}


def get_attack(name: str) -> Attack:
    """The attack called ``name``; ``ValueError`` naming the known ones otherwise."""
    if name not in _ATTACKS:
        raise ValueError(f"Unknown attack '{name}'; choose one of: {', '.join(ATTACKS)}.")
    return _ATTACKS[name]


def flip_labels(data: LocalData, *, num_classes: int) -> LocalData:
    """The same inputs with every label ``y`` replaced by ``num_classes - 1 - y``."""
    return LocalData(inputs=data.inputs, targets=(num_classes - 1) - data.targets)


def backdoor_labels(data: LocalData) -> LocalData:
    """The same inputs with every label ``BACKDOOR_SOURCE`` replaced by ``BACKDOOR_TARGET``."""
    targets = data.targets.clone()
    targets[targets == BACKDOOR_SOURCE] = BACKDOOR_TARGET
    return LocalData(inputs=data.inputs, targets=targets)


def attacker_data(attack: Attack, data: LocalData, *, num_classes: int) -> LocalData:
    """What an attacker that trains trains on: its own data, with the attack's labels."""
    if attack.labels == "flipped":
        return flip_labels(data, num_classes=num_classes)
    if attack.labels == "backdoor":
        return backdoor_labels(data)
    return data


def sign_flip(global_state: State, trained: State) -> State:
    """``global - SIGN_FLIP_SCALE * (trained - global)`` per floating entry."""
    flipped: State = {}
    for key, ref in global_state.items():
        if ref.is_floating_point():
            flipped[key] = ref - SIGN_FLIP_SCALE * (trained[key] - ref)
        else:
            flipped[key] = ref.clone()
    return flipped


def model_replacement(global_state: State, target: State, *, n: int, f: int) -> State:
    """``global + (n / f) * (target - global)`` per floating entry: the boosted backdoor."""
    boost = n / f
    replaced: State = {}
    for key, ref in global_state.items():
        if ref.is_floating_point():
            replaced[key] = ref + boost * (target[key] - ref)
        else:
            replaced[key] = ref.clone()
    return replaced


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
    if attack.name == "model_replacement":
        if trained is None:
            raise ValueError("model_replacement needs the model trained on backdoored labels.")
        if f < 1:
            raise ValueError("model_replacement needs f >= 1 attackers to boost by n / f.")
        return model_replacement(global_state, trained, n=n, f=f)
    if len(honest) < 2:
        raise ValueError(f"{attack.name} needs at least two honest models to estimate from.")
    if attack.name == "alie":
        return alie(global_state, honest, n=n, f=f)
    return ipm(global_state, honest)
