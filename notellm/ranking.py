"""Ranks of targets from query-by-candidate scores: the one implementation behind
every Recall@K of the project (the retrain gate, the publish gate, the quality report).

For query i with score row ``S[i, :]`` over the pool, target column ``t_i`` and
an excluded column ``x_i`` (the query itself; -1 = nothing excluded)::

    rank_i = 1 + |{c != t_i, x_i : S[i, c] > S[i, t_i]}|
               + |{c != t_i, x_i : S[i, c] = S[i, t_i] and c < t_i}|

Ties are broken by pool order (the earlier column ranks first), a deterministic
rule that gives no system credit for ties. Standard library and numpy only.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def ranks_in_rows(scores: np.ndarray, target_cols: Sequence[int], exclude_cols: Sequence[int] | None = None
                  ) -> np.ndarray:
    """1-based rank of ``target_cols[i]`` in row ``scores[i]`` (formula in the module docstring).

    ``scores`` is (m, n): one row per query. ``exclude_cols[i]`` is a column not
    competing in row i (the query itself), -1 or None for none.
    """
    s = np.asarray(scores)
    t = np.asarray(target_cols, dtype=np.int64)
    if s.ndim != 2 or len(t) != s.shape[0]:
        raise ValueError(f"scores must be (m, n) with one target per row; got {s.shape} and {len(t)} targets")
    if len(t) == 0:
        return np.zeros(0, dtype=np.int64)
    rows = np.arange(len(t))
    s_t = s[rows, t][:, None]
    positions = np.arange(s.shape[1])[None, :]
    ahead = (s > s_t) | ((s == s_t) & (positions < t[:, None]))
    ahead[rows, t] = False
    if exclude_cols is not None:
        x = np.asarray(exclude_cols, dtype=np.int64)
        has = x >= 0
        ahead[rows[has], x[has]] = False
    return ahead.sum(axis=1) + 1


def ranks_from_scores(scores: np.ndarray, query_rows: Sequence[int], target_rows: Sequence[int]) -> np.ndarray:
    """Ranks of test pairs (q, t) in a pool x pool score matrix ``S``: row q of
    ``S`` scores every pool note for query q, the query itself excluded.
    Equal to :func:`ranks_in_rows` (``S[q]``, t, q), computed in float64."""
    q = np.asarray(query_rows, dtype=np.int64)
    if len(q) == 0:
        return np.zeros(0, dtype=np.int64)
    return ranks_in_rows(np.asarray(scores, dtype=np.float64)[q], target_rows, q)
