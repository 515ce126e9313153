"""Seeded IID and Dirichlet partitions: disjoint, covering, non-empty, reproducible."""

from __future__ import annotations

import numpy as np
import pytest

from allmende.errors import TaskError
from allmende.learn.partition import partition_indices

LABELS = np.repeat(np.arange(10), 30)  # 300 examples, 10 labels


def assert_disjoint_cover(parts, n):
    assert all(len(p) > 0 for p in parts)
    joined = np.concatenate(parts)
    assert len(joined) == n
    assert np.array_equal(np.sort(joined), np.arange(n))


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
@pytest.mark.parametrize("num_parts", [1, 2, 6, 17])
def test_parts_are_disjoint_non_empty_and_cover(scheme, num_parts):
    parts = partition_indices(LABELS, scheme=scheme, num_parts=num_parts, alpha=0.3, seed=1)
    assert len(parts) == num_parts
    assert_disjoint_cover(parts, len(LABELS))
    assert all(np.array_equal(p, np.sort(p)) for p in parts)


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
def test_same_seed_same_parts_other_seed_other_parts(scheme):
    def split(seed):
        return partition_indices(LABELS, scheme=scheme, num_parts=4, alpha=0.5, seed=seed)

    a, b, c = split(7), split(7), split(8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_iid_parts_are_near_equal():
    sizes = [len(p) for p in partition_indices(LABELS, scheme="iid", num_parts=7, alpha=1, seed=0)]
    assert max(sizes) - min(sizes) <= 1


def labels_per_part(alpha):
    parts = partition_indices(LABELS, scheme="dirichlet", num_parts=5, alpha=alpha, seed=3)
    return np.mean([len(np.unique(LABELS[p])) for p in parts])


def test_small_alpha_gives_skewed_parts():
    assert labels_per_part(0.05) < 5 < labels_per_part(100.0)


def test_extreme_skew_still_fills_every_part():
    labels = np.zeros(12, dtype=np.int64)  # one label: Dirichlet puts nearly all in one part
    parts = partition_indices(labels, scheme="dirichlet", num_parts=12, alpha=0.01, seed=0)
    assert_disjoint_cover(parts, 12)


def test_too_many_parts_or_unknown_scheme_raise():
    with pytest.raises(TaskError, match="non-empty parts"):
        partition_indices(LABELS[:3], scheme="iid", num_parts=4, alpha=1, seed=0)
    with pytest.raises(TaskError, match="Unknown partition scheme"):
        partition_indices(LABELS, scheme="shards", num_parts=2, alpha=1, seed=0)
    with pytest.raises(TaskError, match="alpha must be > 0"):
        partition_indices(LABELS, scheme="dirichlet", num_parts=2, alpha=0, seed=0)
