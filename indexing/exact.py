"""Exact neighbours of a few sampled queries by streaming the corpus: the reference of the
index tuning and of the ANN gate, at constant memory (queries x k results plus one batch).

Score: inner product over L2-normalised vectors (cosine, NoteLLM's similarity).
"""

from __future__ import annotations

import faiss
import numpy as np

from indexing.source import DEFAULT_BATCH_ROWS, VectorSource


def normalize(vectors: np.ndarray) -> np.ndarray:
    """An L2-normalised float32 copy (the input is left as it is)."""
    x = np.array(vectors, dtype=np.float32, order="C", copy=True)
    faiss.normalize_L2(x)
    return x


def sample_rows(n: int, size: int, seed: int) -> np.ndarray:
    """Sorted row numbers of a uniform sample of ``size`` of ``n`` rows without
    replacement (all rows when ``size >= n``); the same ``seed`` gives the same
    sample. Used for the IVF training set, the tuning queries and the gate's
    queries (each with its own seed, so they are different samples)."""
    if size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def exact_knn(source: VectorSource, queries: np.ndarray, k: int, batch_rows: int = DEFAULT_BATCH_ROWS
              ) -> tuple[np.ndarray, np.ndarray]:
    """(scores, row numbers), each (q, k), of the exact top-k by inner product of the normalised
    ``queries`` over the normalised corpus, in one pass over ``source``; ties keep the lower row."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    heap = faiss.ResultHeap(len(q), k, keep_max=True)
    offset = 0
    for _, vecs in source.batches(batch_rows):
        x = normalize(vecs)
        scores, rows = faiss.knn(q, x, min(k, len(x)), metric=faiss.METRIC_INNER_PRODUCT)
        heap.add_result(scores, np.where(rows >= 0, rows + offset, -1))
        offset += len(x)
    heap.finalize()
    return heap.D, heap.I


def recall_vs_exact(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean over queries of |approx top-K  intersect  exact top-K| / K."""
    k = exact_ids.shape[1]
    hits = sum(len(np.intersect1d(a[a >= 0], e[e >= 0])) for a, e in zip(approx_ids, exact_ids))
    return hits / (k * len(exact_ids))
