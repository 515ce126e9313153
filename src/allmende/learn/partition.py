"""Seeded partitions of a training set into disjoint, non-empty parts.

``iid``: a seeded permutation cut into near-equal parts. ``dirichlet``: for every label, the
share of each part is drawn from Dirichlet(alpha, ..., alpha), the usual way to simulate
non-IID clients (small ``alpha`` gives each part few labels). Both use a NumPy ``Generator``
seeded from ``seed`` alone, so every node computes the same parts; each returned part is sorted.
"""

from __future__ import annotations

import numpy as np

from allmende.errors import TaskError


def partition_indices(
    labels: np.ndarray,
    *,
    scheme: str,
    num_parts: int,
    alpha: float,
    seed: int,
) -> list[np.ndarray]:
    """Split ``range(len(labels))`` into ``num_parts`` disjoint non-empty parts covering it."""
    n = len(labels)
    if num_parts < 1 or n < num_parts:
        raise TaskError(
            f"Cannot split {n} examples into {num_parts} non-empty parts; "
            "declare fewer parts in the node's dataset declaration."
        )
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        parts = iid_parts(n, num_parts=num_parts, rng=rng)
    elif scheme == "dirichlet":
        if not alpha > 0:
            raise TaskError(f"Dirichlet alpha must be > 0, got {alpha}; declare a positive alpha.")
        parts = dirichlet_parts(labels, num_parts=num_parts, alpha=alpha, rng=rng)
    else:
        raise TaskError(f"Unknown partition scheme '{scheme}'; declare 'iid' or 'dirichlet'.")
    return [np.sort(part) for part in parts]


def iid_parts(n: int, *, num_parts: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A random permutation of ``range(n)`` cut into ``num_parts`` near-equal parts."""
    order = rng.permutation(n)  # (n,)
    return [part.astype(np.int64) for part in np.array_split(order, num_parts)]


def dirichlet_parts(
    labels: np.ndarray, *, num_parts: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """Per label, shares of the parts drawn from Dirichlet(alpha); empty parts then refilled."""
    buckets: list[list[int]] = [[] for _ in range(num_parts)]
    for label in np.unique(labels):  # sorted, so the draw order is fixed
        members = rng.permutation(np.flatnonzero(labels == label))  # (n_label,)
        shares = rng.dirichlet(np.full(num_parts, alpha))  # (num_parts,), sums to 1
        cuts = (np.cumsum(shares)[:-1] * len(members)).astype(np.int64)  # (num_parts - 1,)
        for bucket, chunk in zip(buckets, np.split(members, cuts), strict=True):
            bucket.extend(int(i) for i in chunk)
    _fill_empty_parts(buckets)
    return [np.asarray(bucket, dtype=np.int64) for bucket in buckets]


def _fill_empty_parts(buckets: list[list[int]]) -> None:
    """Move one example from the largest part (lowest index on ties) into each empty part."""
    for bucket in buckets:
        if not bucket:
            largest = max(buckets, key=len)
            bucket.append(largest.pop())
