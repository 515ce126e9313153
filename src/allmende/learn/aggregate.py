"""Aggregation rules: many trainers' models in, one model out, bit-for-bit reproducible.

An *update* is ``(trainer address, model state, weight)``: the trainer's new model after local
training and its number of examples. Every rule first sorts the updates by address (lower-cased),
so the order they arrived in never matters, and every sum runs in that fixed order.

Two conventions, one per family of rules:

``fedavg`` works on models, in float32, exactly like a plain single-process PyTorch loop::

    new[k] = sum(w_i * model_i[k] for i in address order) / sum(w_i)

i.e. ``acc = 0``; ``acc = acc + w_i * model_i[k]`` (float32 tensor ops, ``w_i`` a Python int);
``new[k] = acc / W`` with ``W`` the exact integer total. Each step is an element-wise IEEE
operation, so the result does not depend on threads or vector width.

The robust rules (``trimmed_mean``, ``median``, ``krum``, ``multi_krum``, ``centered_clip``,
``clipped_mean``) work
on *deltas* ``d_i = model_i - global`` flattened to float64 vectors ``(n, p)``; they ignore the
weights (a trainer declares its own weight, so a liar could claim any). Means are running sums
over rows in address order, sorts are over values only, and every norm or distance is summed
with :func:`math.fsum` (exactly rounded, hence independent of summation order). The aggregated
delta is added to the global model in float64 and cast back to the parameter dtype.

Non-floating entries of a state (e.g. a BatchNorm step counter) are copied from the global model.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from allmende.errors import AggregationError
from allmende.learn.rules import (
    CenteredClipParams,
    ClippedMeanParams,
    FedAvgParams,
    KrumParams,
    MedianParams,
    MultiKrumParams,
    RuleParams,
    TrimmedMeanParams,
    rule_params,
)
from allmende.learn.train import TORCH_LOCK
from allmende.store.codec import all_finite

State = dict[str, Tensor]
Update = tuple[str, State, int]

MAX_WEIGHT = 2**53  # weights above this are not exact in float arithmetic
SUM_CHUNK = 1 << 16  # values converted to Python floats at a time by exact sums


# ---------------------------------------------------------------------------------------------
# validation


def check_update(update: State, reference_state: State) -> None:
    """Check an untrusted model or update against the reference model of its task: the same
    keys, shapes and dtypes, and all values finite. Raises :class:`AggregationError` naming the
    first problem. Run once, where the bytes were decoded (:mod:`allmende.node.jobdata`)."""
    missing = sorted(set(reference_state) - set(update))
    extra = sorted(set(update) - set(reference_state))
    if missing or extra:
        raise AggregationError(
            f"The update's keys differ from the model's (missing: {missing}, unexpected: "
            f"{extra}); it was trained for another model and must be excluded."
        )
    for key, ref in reference_state.items():
        value = update[key]
        if not isinstance(value, Tensor):
            raise AggregationError(f"Entry '{key}' of the update is not a tensor; exclude it.")
        if value.shape != ref.shape or value.dtype != ref.dtype:
            raise AggregationError(
                f"Entry '{key}' of the update has shape {tuple(value.shape)} and dtype "
                f"{value.dtype}, the model has {tuple(ref.shape)} and {ref.dtype}; exclude it."
            )
        if value.is_floating_point() and not all_finite(value):
            raise AggregationError(
                f"Entry '{key}' of the update holds NaN or infinite values; exclude it."
            )


def check_norm(update: State, global_state: State, *, norm_bound: float | None) -> float | None:
    """With a ``norm_bound``, the L2 norm of ``update - global_state`` if it is at most the
    bound, else :class:`AggregationError`; None without a bound (the exact norm is costly, so
    it is not computed). ``update`` must have passed :func:`check_update`."""
    if norm_bound is None:
        return None
    norm = delta_norm(update, global_state)
    if not norm <= norm_bound:
        raise AggregationError(
            f"The update moves the model by {norm:.6g} (L2), more than the job's norm bound "
            f"{norm_bound:.6g}; exclude it (or raise norm_bound in the job spec)."
        )
    return norm


def delta_norm(state: State, reference_state: State) -> float:
    """Exactly rounded L2 norm of ``state - reference_state`` over the floating entries."""
    deltas = (
        (state[key].double() - ref.double()).flatten()
        for key, ref in reference_state.items()
        if ref.is_floating_point()
    )
    return math.sqrt(exact_sum_of_squares(*deltas))


def exact_sum_of_squares(*vectors: Tensor) -> float:
    """``sum(x * x)`` over float64 vectors, exactly rounded (:func:`math.fsum`), so the order of
    summation, the thread count and the vector width cannot change a single bit. Works through
    the vectors ``SUM_CHUNK`` values at a time, so memory stays bounded for large models."""
    squares = ((chunk * chunk).tolist() for vector in vectors for chunk in vector.split(SUM_CHUNK))
    return math.fsum(itertools.chain.from_iterable(squares))


# ---------------------------------------------------------------------------------------------
# the entry point


def aggregate(
    rule: str, global_state: State, updates: Sequence[Update], params: dict[str, object]
) -> State:
    """Aggregate ``updates`` (address, model state, weight) into the next global model.

    The states must have passed :func:`check_update` against ``global_state`` where their bytes
    entered (a node checks each update once, when it decodes it); this function trusts their
    keys, shapes and values. Raises :class:`ConfigError` for an unknown rule or bad parameters
    and :class:`AggregationError` when the updates cannot be aggregated (none, duplicate
    addresses, bad weights, too few for the rule). Holds :data:`TORCH_LOCK` while it computes.
    """
    config = rule_params(rule, params)
    if not updates:
        raise AggregationError("There are no updates to aggregate; wait for trainers to commit.")
    ordered = sorted(updates, key=lambda update: update[0].lower())
    addresses = [address.lower() for address, _, _ in ordered]
    if len(set(addresses)) != len(addresses):
        raise AggregationError("Two updates come from the same trainer; keep one per trainer.")
    for address, _, weight in ordered:
        check_weight(weight, author=address)
    states = [state for _, state, _ in ordered]
    with TORCH_LOCK:
        if isinstance(config, FedAvgParams):
            return fedavg(global_state, states, [weight for _, _, weight in ordered])
        deltas = flatten_deltas(global_state, states)  # (n, p) float64
        return apply_delta(global_state, robust_delta(deltas, config))


def check_weight(weight: object, *, author: str) -> int:
    """``weight`` if it is an integer in [1, 2**53] (exact in float arithmetic); else
    :class:`AggregationError`. The chain accepts weights up to 2**64 - 1."""
    if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= MAX_WEIGHT:
        raise AggregationError(
            f"The weight of {author}'s update is {weight!r}; weights must be integers "
            f"in [1, 2**53]. Exclude that update."
        )
    return weight


def robust_delta(deltas: Tensor, config: RuleParams) -> Tensor:
    """The robust rule that ``config`` is the parameters of, over ``(n, p)`` deltas: ``(p,)``.
    The rule names and their parameter models are in :data:`allmende.learn.rules.RULES`."""
    match config:
        case TrimmedMeanParams():
            return trimmed_mean(deltas, config)
        case MedianParams():
            return median(deltas, config)
        case KrumParams():
            return krum(deltas, config)
        case MultiKrumParams():
            return multi_krum(deltas, config)
        case CenteredClipParams():
            return centered_clip(deltas, config)
        case ClippedMeanParams():
            return clipped_mean(deltas, config)
    raise AggregationError(f"{type(config).__name__} names no robust rule; use fedavg for it.")


def fedavg(global_state: State, states: list[State], weights: list[int]) -> State:
    """``sum(w_i * model_i) / sum(w_i)`` per entry, float32, in the given order.

    Exactly ``acc = acc + w_i * model_i[k]``, element by element in address order, then
    ``acc / W``; but each step writes into a buffer (``out=``) instead of a new tensor, and the
    updates are summed one after another (every entry of one before the next), so the sum
    holds one model (``acc``) and one scratch tensor the size of the largest entry, and each
    update is read once, start to end (a mapped blob file is streamed through). Same bits.
    """
    total = sum(weights)  # exact integer
    floating = [key for key, ref in global_state.items() if ref.is_floating_point()]
    acc = {key: torch.zeros_like(global_state[key]) for key in floating}  # one model
    scratch: dict[torch.dtype, Tensor] = {}  # (largest entry of the dtype,)
    for key in floating:
        ref = global_state[key]
        if ref.dtype not in scratch or scratch[ref.dtype].numel() < ref.numel():
            scratch[ref.dtype] = torch.empty(ref.numel(), dtype=ref.dtype)
    for weight, state in zip(weights, states, strict=True):
        for key in floating:
            term = scratch[acc[key].dtype][: acc[key].numel()].view(acc[key].shape)
            torch.mul(state[key], weight, out=term)  # w_i * model_i[k]
            torch.add(acc[key], term, out=acc[key])  # acc + w_i * model_i[k]
    new: State = {}
    for key, ref in global_state.items():
        if key in acc:
            new[key] = torch.div(acc[key], total, out=acc[key])  # acc / W
        else:
            new[key] = ref.clone()
    return new


# ---------------------------------------------------------------------------------------------
# robust rules, on flattened float64 deltas


def flatten_deltas(global_state: State, states: list[State]) -> Tensor:
    """``model_i - global`` over the floating entries, as rows of a ``(n, p)`` float64 matrix."""
    rows = []
    for state in states:
        pieces = [
            (state[key].double() - ref.double()).flatten()
            for key, ref in global_state.items()
            if ref.is_floating_point()
        ]
        rows.append(torch.cat(pieces))  # (p,)
    return torch.stack(rows) + 0.0  # (n, p); + 0.0 turns -0.0 into +0.0, so sorts are unique


def apply_delta(global_state: State, delta: Tensor) -> State:
    """``global + delta`` in float64, cast back to each entry's dtype. ``delta`` is ``(p,)``."""
    new: State = {}
    offset = 0
    for key, ref in global_state.items():
        if not ref.is_floating_point():
            new[key] = ref.clone()
            continue
        size = ref.numel()
        piece = delta[offset : offset + size].view(ref.shape)
        new[key] = (ref.double() + piece).to(ref.dtype)
        offset += size
    return new


def sequential_mean(rows: Tensor) -> Tensor:
    """Mean of the rows of ``(k, p)``, summed one row at a time from the first."""
    acc = torch.zeros(rows.shape[1], dtype=rows.dtype)  # (p,)
    for row in rows:
        acc = acc + row
    return acc / rows.shape[0]


def trimmed_mean(deltas: Tensor, config: TrimmedMeanParams) -> Tensor:
    n = deltas.shape[0]
    k = math.floor(config.beta * n)  # dropped at each end; beta < 0.5 keeps at least one
    ranked = torch.sort(deltas, dim=0).values  # (n, p), each column ascending
    return sequential_mean(ranked[k : n - k])  # (p,)


def median(deltas: Tensor, config: MedianParams) -> Tensor:
    n = deltas.shape[0]
    ranked = torch.sort(deltas, dim=0).values  # (n, p)
    if n % 2 == 1:
        return ranked[n // 2].clone()  # (p,)
    return (ranked[n // 2 - 1] + ranked[n // 2]) / 2  # (p,)


def squared_distances(deltas: Tensor) -> list[list[float]]:
    """``||d_i - d_j||^2`` for all pairs, each summed exactly; ``(n, n)`` as nested lists."""
    n = deltas.shape[0]
    dist = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            diff = deltas[i] - deltas[j]  # (p,)
            dist[i][j] = dist[j][i] = exact_sum_of_squares(diff)
    return dist


def krum_scores(deltas: Tensor, f: int) -> list[float]:
    """Krum score of each row: sum of its ``n - f - 2`` smallest squared distances to others."""
    n = deltas.shape[0]
    neighbours = n - f - 2
    if n < 2 * f + 3:  # Krum's guarantee needs 2f + 2 < n
        raise AggregationError(
            f"Krum with f={f} needs at least {2 * f + 3} updates, got {n}; lower f in the job "
            "spec or wait for more trainers."
        )
    dist = squared_distances(deltas)
    scores = []
    for i in range(n):
        nearest = sorted(dist[i][j] for j in range(n) if j != i)[:neighbours]
        scores.append(math.fsum(nearest))
    return scores


def _best_by_score(scores: list[float]) -> list[int]:
    """Row indices from best (lowest) score to worst; ties go to the lower address."""
    return sorted(range(len(scores)), key=lambda i: (scores[i], i))


def krum(deltas: Tensor, config: KrumParams) -> Tensor:
    best = _best_by_score(krum_scores(deltas, config.f))[0]
    return deltas[best].clone()  # (p,)


def multi_krum(deltas: Tensor, config: MultiKrumParams) -> Tensor:
    n = deltas.shape[0]
    if config.m > n:
        raise AggregationError(
            f"Multi-Krum cannot select m={config.m} of {n} updates; lower m in the job spec or "
            "wait for more trainers."
        )
    chosen = sorted(_best_by_score(krum_scores(deltas, config.f))[: config.m])  # address order
    return sequential_mean(deltas[chosen])  # (p,)


def centered_clip(deltas: Tensor, config: CenteredClipParams) -> Tensor:
    n, p = deltas.shape
    center = torch.zeros(p, dtype=deltas.dtype)  # (p,), start at the global model
    for _ in range(config.iters):
        acc = torch.zeros(p, dtype=deltas.dtype)  # (p,)
        for row in deltas:
            diff = row - center  # (p,)
            norm = math.sqrt(exact_sum_of_squares(diff))
            scale = min(1.0, config.tau / norm) if norm > 0 else 1.0
            acc = acc + diff * scale
        center = center + acc / n
    return center


def clipped_mean(deltas: Tensor, config: ClippedMeanParams) -> Tensor:
    """Centered clipping whose radius is ``scale`` times the median distance to the center."""
    n, p = deltas.shape
    center = torch.zeros(p, dtype=deltas.dtype)  # (p,), start at the global model
    for _ in range(config.iters):
        diffs = deltas - center  # (n, p)
        norms = [math.sqrt(exact_sum_of_squares(diff)) for diff in diffs]  # exact, per row
        tau = config.scale * median_of(norms)
        acc = torch.zeros(p, dtype=deltas.dtype)  # (p,)
        for diff, norm in zip(diffs, norms, strict=True):
            scale = min(1.0, tau / norm) if norm > 0 else 1.0
            acc = acc + diff * scale
        center = center + acc / n
    return center


def median_of(values: list[float]) -> float:
    """The median of Python floats (mean of the two middle ones when their number is even)."""
    ranked = sorted(values)
    middle = len(ranked) // 2
    if len(ranked) % 2 == 1:
        return ranked[middle]
    return (ranked[middle - 1] + ranked[middle]) / 2
