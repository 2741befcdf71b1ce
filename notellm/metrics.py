"""Retrieval metrics shared by training (the retrain gate), indexing (the
publish gate) and the quality report.

Recall@K, NoteLLM protocol (Zhang et al., WWW 2024, Sec. 4.1): each test pair
(q, t) uses its first note q as the query against the whole test pool P with q
itself excluded; it is a hit when t is among the top K of P \\ {q}:

    Recall@K = |{(q, t) : rank_q(t) <= K}| / |pairs|,   K capped at |P| - 1

where rank_q(t) = 1 + |{p in P \\ {q, t} : s(q, p) > s(q, t)}|
                    + |{p in P \\ {q, t} : s(q, p) = s(q, t), pos(p) < pos(t)}|
(ties broken by pool order, so results are deterministic).

Scores must be finite: NaN compares false with everything, so a NaN model would
rank every target first and score Recall@K = 1.0. Vectors holding NaN or Inf
raise :class:`notellm.finite.NonFiniteError` instead.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Mapping, Sequence

import numpy as np

from notellm.finite import require_finite
from notellm.ranking import ranks_in_rows


def cap_k(k: int, pool_size: int) -> int:
    """K can never exceed the number of candidates (the pool without the query)."""
    return max(0, min(int(k), pool_size - 1))


def target_ranks(query_vectors: np.ndarray, target_rows: np.ndarray, query_rows: np.ndarray,
                 pool_vectors: np.ndarray, block: int = 1024) -> np.ndarray:
    """1-based rank of each target among the pool without the query, by inner product.

    ``query_rows`` / ``target_rows`` index rows of ``pool_vectors`` (-1 for a
    query that is not itself in the pool, then nothing is excluded). The rank
    rule (ties by pool order) is :func:`notellm.ranking.ranks_in_rows`.
    """
    pool = require_finite(np.asarray(pool_vectors, dtype=np.float32), "pool vectors")
    require_finite(query_vectors, "query vectors")
    ranks = np.empty(len(target_rows), dtype=np.int64)
    for start in range(0, len(target_rows), block):  # blocks bound the (b, n) score matrix
        q = np.asarray(query_vectors[start:start + block], dtype=np.float32)
        ranks[start:start + block] = ranks_in_rows(q @ pool.T, target_rows[start:start + block],
                                                   query_rows[start:start + block])
    return ranks


def recall_at_k(pool_ids: Sequence[str], pool_vectors: np.ndarray, pairs: Iterable[tuple[str, str]],
                ks: Sequence[int] = (10, 50, 100, 1000), query_vectors: Mapping[str, np.ndarray] | None = None,
                with_ranks: bool = False) -> dict:
    """Recall@K for test pairs over a pool (see module docstring).

    Pairs whose target is not in the pool cannot be hit and are counted as
    misses (reported as ``targets_missing``). Query vectors default to the
    pool's own vectors.
    Returns ``{"recall": {K: value}, "k_capped": {K: K'}, "pairs": n, ...}``; with
    ``with_ranks`` also ``"ranks"``: the target's rank per pair in input order (a pair whose
    target is missing from the pool gets ``len(pool) + 1``, a rank no K hits), for paired
    comparisons of two systems on the same pairs.
    """
    pool_ids = list(pool_ids)
    row_of = {nid: i for i, nid in enumerate(pool_ids)}
    if len(row_of) != len(pool_ids):
        raise ValueError("pool_ids contains duplicates")
    pairs = list(pairs)
    q_rows, t_rows, q_vecs, missing, found = [], [], [], 0, []
    for i, (q, t) in enumerate(pairs):
        if t not in row_of:
            missing += 1
            continue
        found.append(i)
        if query_vectors is not None and q in query_vectors:
            q_vecs.append(query_vectors[q])
        elif q in row_of:
            q_vecs.append(pool_vectors[row_of[q]])
        else:
            raise KeyError(f"query note {q!r} has no vector (not in the pool and no query_vectors given)")
        q_rows.append(row_of.get(q, -1))
        t_rows.append(row_of[t])
    ranks = target_ranks(np.array(q_vecs).reshape(len(q_vecs), -1) if q_vecs else np.zeros((0, 1)),
                         np.array(t_rows, dtype=np.int64), np.array(q_rows, dtype=np.int64),
                         pool_vectors) if q_vecs else np.zeros(0, dtype=np.int64)
    result = recall_from_ranks(ranks, len(pairs), len(pool_ids), ks, missing)
    if with_ranks:
        all_ranks = np.full(len(pairs), len(pool_ids) + 1, dtype=np.int64)
        all_ranks[np.array(found, dtype=np.int64)] = ranks
        result["ranks"] = all_ranks
    return result


def recall_from_ranks(ranks: np.ndarray, n_pairs: int, pool_size: int, ks: Sequence[int],
                      targets_missing: int = 0) -> dict:
    recall, capped = {}, {}
    for k in ks:
        kc = cap_k(k, pool_size)
        capped[int(k)] = kc
        recall[int(k)] = float((ranks <= kc).sum() / n_pairs) if n_pairs else float("nan")
    return {"recall": recall, "k_capped": capped, "pairs": int(n_pairs), "pool_size": int(pool_size),
            "targets_missing": int(targets_missing)}


def recall_from_ranked_lists(ranked: Sequence[Sequence[str]], pairs: Sequence[tuple[str, str]], pool_size: int,
                             ks: Sequence[int] = (10, 50, 100, 1000)) -> dict:
    """Recall@K when a system returns ranked neighbour lists (query excluded),
    e.g. an index search. ``ranked[i]`` belongs to ``pairs[i]``."""
    ranks = np.array([_rank_in(lst, t) for lst, (_, t) in zip(ranked, pairs)], dtype=np.int64)
    return recall_from_ranks(ranks, len(pairs), pool_size, ks)


def _rank_in(lst: Sequence[str], target: str) -> int:
    for i, nid in enumerate(lst):
        if nid == target:
            return i + 1
    return np.iinfo(np.int64).max


def recall_by_bucket(result_ranks: np.ndarray, buckets: Sequence[str], pool_size: int,
                     ks: Sequence[int] = (10, 100)) -> dict:
    """Recall@K per bucket label (e.g. exposure 'low'/'high' of the query)."""
    buckets = np.asarray(buckets)
    out = {}
    for b in sorted(set(buckets.tolist())):
        sel = buckets == b
        out[str(b)] = recall_from_ranks(result_ranks[sel], int(sel.sum()), pool_size, ks)
    return out


def exposure_buckets(counts: Sequence[int], threshold: int) -> list[str]:
    """'low' for notes with fewer than ``threshold`` behaviour events, else 'high'."""
    return ["low" if c < threshold else "high" for c in counts]


def in_batch_accuracy(emb_a: np.ndarray, emb_b: np.ndarray) -> float:
    """Share of the 2B notes whose nearest other note in the batch is their pair partner
    (rows i of ``emb_a`` and ``emb_b`` are partners; chance is 1 / (2B - 1))."""
    z = require_finite(np.concatenate([emb_a, emb_b]).astype(np.float32), "in-batch embeddings")
    b = len(emb_a)
    sim = z @ z.T
    np.fill_diagonal(sim, -np.inf)
    partner = np.concatenate([np.arange(b, 2 * b), np.arange(b)])
    return float((sim.argmax(axis=1) == partner).mean())


def test_set_fingerprint(pairs: Iterable[tuple[str, str]], pool: Iterable[str]) -> str:
    """sha256 identifying a test set (pairs in order, then the pool), so that
    metrics of two models are only compared when measured on the same set."""
    h = hashlib.sha256()
    for a, b in pairs:
        h.update(f"{a}\t{b}\n".encode())
    h.update(b"--pool--\n")
    for nid in pool:
        h.update(f"{nid}\n".encode())
    return h.hexdigest()


test_set_fingerprint.__test__ = False  # a helper, not a pytest test
