"""Recall@K by exposure bucket (NoteLLM, Sec. 4.4: low-exposure notes).

A query note is 'low' exposure when it has fewer than ``threshold`` behaviour
events in the events table, else 'high' (:func:`notellm.metrics.exposure_buckets`);
Recall@K is then computed per bucket with the NoteLLM protocol over the test
pool (:func:`notellm.metrics.target_ranks`, :func:`notellm.metrics.recall_by_bucket`).
The default threshold is the median event count of the query notes.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np
import pyarrow as pa

from notellm.metrics import exposure_buckets, recall_by_bucket, target_ranks


def event_counts(events: pa.Table) -> Counter:
    """Behaviour events per note_id (EVENTS contract table)."""
    return Counter(events.column("note_id").to_pylist())


def recall_by_exposure(pool_ids: Sequence[str], pool_vectors: np.ndarray, pairs: Sequence[tuple[str, str]],
                       events: pa.Table, threshold: int | None = None, ks: Sequence[int] = (10, 100),
                       by: str = "query") -> dict:
    """Recall@K per exposure bucket of the query (``by='query'``) or target note.

    Pairs whose query or target is not in the pool are left out and counted in
    ``pairs_skipped``.
    """
    if by not in ("query", "target"):
        raise ValueError("by must be 'query' or 'target'")
    row_of = {nid: i for i, nid in enumerate(pool_ids)}
    kept = [(q, t) for q, t in pairs if q in row_of and t in row_of]
    counts = event_counts(events)
    keyed = [q if by == "query" else t for q, t in kept]
    note_counts = [counts.get(n, 0) for n in keyed]
    if threshold is None:
        threshold = int(np.median(note_counts)) if note_counts else 0
    buckets = exposure_buckets(note_counts, threshold)
    q_rows = np.array([row_of[q] for q, _ in kept], dtype=np.int64)
    t_rows = np.array([row_of[t] for _, t in kept], dtype=np.int64)
    vecs = np.asarray(pool_vectors, dtype=np.float32)
    ranks = target_ranks(vecs[q_rows], t_rows, q_rows, vecs) if kept else np.zeros(0, np.int64)
    result = recall_by_bucket(ranks, buckets, len(pool_ids), ks) if kept else {}
    return {"threshold": threshold, "by": by, "buckets": result, "pairs_skipped": len(pairs) - len(kept)}


def recall_by_exposure_snapshot(snapshot, pool_ids, pairs, events, **kwargs) -> dict:
    """Same, with vectors taken from a loaded :class:`indexing.snapshot.Snapshot`."""
    pool = [p for p in pool_ids if snapshot.has(p)]
    vecs = np.stack([snapshot.vector(p) for p in pool]) if pool else np.zeros((0, snapshot.index.d), np.float32)
    out = recall_by_exposure(pool, vecs, pairs, events, **kwargs)
    out["pool_missing"] = len(pool_ids) - len(pool)
    return out
