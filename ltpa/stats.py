"""Small statistics shared by the evaluations: rank correlation of two maps."""
from __future__ import annotations

import math

import numpy as np


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of an array's values, ties sharing their average rank.

    Args:
        values: any array (flattened).

    Returns:
        float64 ranks, one per value.
    """
    values = np.asarray(values).ravel()
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts_group = np.r_[True, ordered[1:] != ordered[:-1]]
    group = np.cumsum(starts_group) - 1
    starts = np.flatnonzero(starts_group)
    ends = np.r_[starts[1:], values.size]
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = ((starts + ends - 1) / 2.0 + 1.0)[group]
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two same-size arrays.

    Args:
        a: first array (flattened).
        b: second array, as many values.

    Returns:
        The correlation in [-1, 1], nan when one array is constant.

    Raises:
        ValueError: the arrays differ in size.
    """
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    if a.shape != b.shape:
        raise ValueError(f"arrays differ in size: {a.size} vs {b.size}")
    rank_a, rank_b = average_ranks(a), average_ranks(b)
    rank_a -= rank_a.mean()
    rank_b -= rank_b.mean()
    denominator = math.sqrt(float((rank_a**2).sum()) * float((rank_b**2).sum()))
    return float((rank_a * rank_b).sum() / denominator) if denominator > 0 else float("nan")

