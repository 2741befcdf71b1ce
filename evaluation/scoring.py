"""Ranking and Recall@K from a pool x pool score matrix, identical for every system.

For a test pair (q, t) the rank of t is 1 + the number of pool notes c != q, t
with S[q, c] > S[q, t], or S[q, c] == S[q, t] and c before t in pool order
(a deterministic tie-break that gives no system credit for ties). Recall@K =
share of pairs with rank <= min(K, |pool| - 1) (NoteLLM's Recall@K with the
query excluded, K capped at the number of candidates; see notellm.metrics).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from notellm.metrics import recall_by_bucket, recall_from_ranks

CURVE_KS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


def ranks_from_scores(scores: np.ndarray, query_rows: Sequence[int], target_rows: Sequence[int]) -> np.ndarray:
    q = np.asarray(query_rows, dtype=np.int64)
    t = np.asarray(target_rows, dtype=np.int64)
    if len(q) == 0:
        return np.zeros(0, dtype=np.int64)
    rows = np.arange(len(q))
    s = np.asarray(scores, dtype=np.float64)[q]                       # (m, n)
    s_t = s[rows, t][:, None]
    positions = np.arange(s.shape[1])[None, :]
    ahead = (s > s_t) | ((s == s_t) & (positions < t[:, None]))
    ahead[rows, t] = False
    ahead[rows, q] = False
    return ahead.sum(axis=1) + 1


def top_neighbours(scores: np.ndarray, query_row: int, k: int) -> list[int]:
    """The k best pool rows for a query, the query excluded, ties to the earlier row."""
    s = np.asarray(scores[query_row], dtype=np.float64).copy()
    s[query_row] = -np.inf
    order = np.lexsort((np.arange(len(s)), -s))
    return [int(i) for i in order[:k]]


def evaluate_signal(ranks: np.ndarray, pool_size: int, ks: Sequence[int]) -> dict:
    """Recall at ``ks`` and the Recall@K curve for one relevance signal."""
    rec = recall_from_ranks(ranks, len(ranks), pool_size, ks)
    curve_ks = [k for k in CURVE_KS if k <= max(ks)]
    curve = recall_from_ranks(ranks, len(ranks), pool_size, curve_ks)
    return {"recall": {str(k): v for k, v in rec["recall"].items()},
            "k_capped": {str(k): v for k, v in rec["k_capped"].items()},
            "pairs": int(len(ranks)),
            "curve": {"k": curve_ks, "recall": [curve["recall"][k] for k in curve_ks]}}


def evaluate_buckets(ranks: np.ndarray, labels: Sequence[str], pool_size: int, ks: Sequence[int]) -> dict:
    out = recall_by_bucket(ranks, labels, pool_size, ks)
    return {b: {"recall": {str(k): v for k, v in r["recall"].items()}, "pairs": r["pairs"]} for b, r in out.items()}


# ------------------------------------------------------------------ uncertainty
# A test set of a few hundred pairs gives Recall@K a standard error of several
# points, so the report states intervals and paired tests beside the means.
# Pairs that share a source of variation (a PostLink stored in both directions)
# are one cluster: the bootstrap resamples clusters, not pairs.

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
        raise ValueError(f"paired_comparison needs two hit vectors of the same non-zero length, got {a.size} and {b.size}")
    d = a.astype(np.float64) - b.astype(np.float64)
    lo, hi = np.quantile(_bootstrap_means(d, clusters, n_resamples, seed), [(1 - level) / 2, (1 + level) / 2])
    a_only, b_only = int((a & ~b).sum()), int((b & ~a).sum())
    return {"diff": float(d.mean()), "ci": [float(lo), float(hi)], "a_only": a_only, "b_only": b_only,
            "p_mcnemar": mcnemar_exact_p(a_only, b_only), "pairs": int(a.size)}
