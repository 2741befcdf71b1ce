"""Uncertainty of Recall@K on a finite test set: bootstrap intervals and paired tests.

Shared by the training stage's evaluation (trained model vs untrained backbone on the
held-out pairs) and the quality report (evaluation/), so both state intervals computed
one way.

A test set of a few hundred pairs gives Recall@K a standard error of several points, so
intervals and paired tests are stated beside the means. Pairs that share a source of
variation (the pairs of one query note, a PostLink stored in both directions) form one
cluster: the bootstrap resamples clusters, not pairs.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

_RESAMPLE_CHUNK = 250  # resamples drawn at once, so a 25k-pair test set needs ~50 MB, not 400


def hits_at_k(ranks: np.ndarray, pool_size: int, k: int) -> np.ndarray:
    """Boolean hit vector: rank <= min(k, pool_size - 1) (the capped K of Recall@K)."""
    return np.asarray(ranks) <= max(0, min(int(k), pool_size - 1))


def _cluster_sums(values: np.ndarray, clusters: Sequence | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster sums of ``values`` and cluster sizes (each pair its own cluster by default)."""
    if clusters is None:
        return values.astype(np.float64), np.ones(len(values))
    if len(clusters) != len(values):
        raise ValueError(f"{len(clusters)} cluster labels for {len(values)} pairs")
    first_seen: dict = {}
    inverse = np.array([first_seen.setdefault(c, len(first_seen)) for c in clusters], dtype=np.int64)  # pair order
    return (np.bincount(inverse, weights=values.astype(np.float64)),
            np.bincount(inverse).astype(np.float64))


def _bootstrap_means(values: np.ndarray, clusters: Sequence | None, n_resamples: int, seed: int) -> np.ndarray:
    """Means of ``values`` over ``n_resamples`` cluster bootstrap resamples:
    draw G clusters with replacement, mean = sum of their values / sum of their sizes."""
    sums, sizes = _cluster_sums(values, clusters)
    rng = np.random.default_rng(seed)
    out = np.empty(n_resamples)
    for start in range(0, n_resamples, _RESAMPLE_CHUNK):
        b = min(_RESAMPLE_CHUNK, n_resamples - start)
        idx = rng.integers(0, len(sums), size=(b, len(sums)))
        out[start:start + b] = sums[idx].sum(axis=1) / sizes[idx].sum(axis=1)
    return out


def bootstrap_interval(hits: Sequence[bool], n_resamples: int = 2000, level: float = 0.95,
                       seed: int = 0, clusters: Sequence | None = None) -> tuple[float, float]:
    """Percentile bootstrap interval of a recall (mean of a 0/1 hit vector).

    Resample the G clusters (default: every pair its own) with replacement B
    times; recall*_b = hits of the drawn clusters / pairs of the drawn
    clusters; the interval is the (1-level)/2 and (1+level)/2 quantiles of
    {recall*_b} (numpy's linear interpolation). Deterministic for a seed. A
    recall of exactly 0 or 1 gets a zero-width interval (a known limit of the
    percentile bootstrap).
    """
    h = np.asarray(hits, dtype=np.float64)
    if h.size == 0:
        raise ValueError("bootstrap_interval needs at least one pair")
    means = _bootstrap_means(h, clusters, n_resamples, seed)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def mcnemar_exact_p(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar test on the discordant pairs.

    Under H0 (both systems hit equally often) each of the n = a_only + b_only
    discordant pairs is a fair coin, so with m = min(a_only, b_only)

        p = min(1, 2 * sum_{i=0..m} C(n, i) / 2^n)

    (p = 1 when n = 0). The terms are summed in log space (lgamma), so large n
    costs O(m) floating-point operations, not big-integer arithmetic.
    """
    if a_only < 0 or b_only < 0:
        raise ValueError("discordant counts must be >= 0")
    n, m = a_only + b_only, min(a_only, b_only)
    if n == 0:
        return 1.0
    from math import exp, lgamma, log
    logs = np.array([lgamma(n + 1) - lgamma(i + 1) - lgamma(n - i + 1) for i in range(m + 1)]) - n * log(2)
    top = logs.max()
    return min(1.0, 2 * exp(top) * float(np.exp(logs - top).sum()))


def paired_comparison(hits_a: Sequence[bool], hits_b: Sequence[bool], n_resamples: int = 2000,
                      level: float = 0.95, seed: int = 0, clusters: Sequence | None = None) -> dict:
    """System A vs system B on the same pairs: difference of recalls with a paired
    (cluster) bootstrap interval, the same resampled clusters for both systems,
    and the exact McNemar p-value. ``diff`` = recall_A - recall_B, as fractions.
    McNemar treats pairs as independent; with clusters it is slightly optimistic."""
    a = np.asarray(hits_a, dtype=bool)
    b = np.asarray(hits_b, dtype=bool)
    if a.shape != b.shape or a.size == 0:
        raise ValueError("paired_comparison needs two hit vectors of the same non-zero length, "
                         f"got {a.size} and {b.size}")
    d = a.astype(np.float64) - b.astype(np.float64)
    lo, hi = np.quantile(_bootstrap_means(d, clusters, n_resamples, seed), [(1 - level) / 2, (1 + level) / 2])
    a_only, b_only = int((a & ~b).sum()), int((b & ~a).sum())
    return {"diff": float(d.mean()), "ci": [float(lo), float(hi)], "a_only": a_only, "b_only": b_only,
            "p_mcnemar": mcnemar_exact_p(a_only, b_only), "pairs": int(a.size)}
