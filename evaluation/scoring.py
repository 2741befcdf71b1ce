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
from notellm.ranking import ranks_from_scores  # noqa: F401 - one rank rule for every system (re-exported)

# Uncertainty (bootstrap intervals, paired comparison, McNemar) lives in notellm.stats so the
# training stage's evaluation and the report use one implementation; re-exported here.
from notellm.stats import bootstrap_interval, hits_at_k, mcnemar_exact_p, paired_comparison  # noqa: F401

CURVE_KS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


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

