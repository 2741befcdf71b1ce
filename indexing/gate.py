"""Quality gate run before a snapshot is published.

1. ANN fidelity: recall@K of the built index against exact inner-product
   search on a sample of queries drawn from the corpus,

       recall@K = mean_q |ANN_K(q) intersect Exact_K(q)| / K,   K = min(K, n)

   must be >= ``min_ann_recall`` (defaults in :class:`indexing.config.GateConfig`).
2. Retrieval quality, when test pairs and a test pool are given: Recall@K of
   the related note (NoteLLM protocol, :func:`notellm.metrics.recall_at_k`
   over the pool) must not fall by more than ``max_recall_drop`` (absolute)
   below the currently published snapshot's value. The baseline is the value
   recorded in the live manifest when it was measured on the same test set
   (same sha256 of pairs + pool); otherwise it is recomputed from the live
   snapshot's stored vectors of the pool notes.

Both work from samples of the corpus and the streamed store, never an extra full
copy of the vectors: the ANN queries are picked in one pass and their exact
neighbours computed in another (:func:`indexing.exact.exact_knn`); the related
recall reads only the vectors of the pool and query notes (``source.take``: the store reads
only their buckets).

A failing gate raises :class:`GateFailed`; nothing is published and CURRENT
stays where it was. Vectors holding NaN or Inf (a diverged model) fail the
gate, and every comparison is written ``at_least(new, floor)`` so that a NaN
metric fails it too (``new < floor`` is false for NaN).
"""

from __future__ import annotations

import logging

import numpy as np

from indexing.build import BuiltIndex
from indexing.config import GateConfig
from indexing.exact import exact_knn, normalize, recall_vs_exact, sample_rows
from indexing.source import VectorSource, take_rows
from notellm.cli import GateRefused
from notellm.finite import NonFiniteError, at_least, is_number, require_finite
from notellm.metrics import recall_at_k, test_set_fingerprint

log = logging.getLogger(__name__)


class GateFailed(GateRefused):
    """The new index is not good enough to publish; the live snapshot is kept
    (the command contract maps it to exit 3, gate refused: not worth a retry)."""


def ann_recall(built: BuiltIndex, source: VectorSource, config: GateConfig) -> dict:
    n = source.num_vectors
    k = max(1, min(config.ann_k, n))
    q = normalize(require_finite(take_rows(source, sample_rows(n, config.ann_queries, config.gate_seed)),
                                 "sampled corpus vectors"))  # not the tuning sample
    exact = exact_knn(source, q, k)[1]
    approx = built.index.search(q, k)[1]
    return {"k": k, "queries": int(len(q)), "recall": float(recall_vs_exact(approx, exact))}


def related_recall(note_ids: list, vectors: np.ndarray, pairs: list, pool_ids: list, ks) -> dict:
    """Recall@K of the related note over the test pool, using the corpus vectors.

    Pool notes without a vector cannot be ranked: they are left out of the pool
    and counted in ``pool_missing``; pairs whose query has no vector are counted
    in ``queries_missing`` and scored as misses.
    """
    row_of = {nid: i for i, nid in enumerate(note_ids)}
    pool = [p for p in dict.fromkeys(pool_ids) if p in row_of]
    pool_vecs = vectors[[row_of[p] for p in pool]] if pool else np.zeros((0, vectors.shape[1]), np.float32)
    in_pool = set(pool)
    usable = [(q, t) for q, t in pairs if q in in_pool or q in row_of]
    queries = {q: vectors[row_of[q]] for q, _ in usable if q not in in_pool}
    result = recall_at_k(pool, pool_vecs, usable, ks=ks, query_vectors=queries)
    dropped_q = len(pairs) - len(usable)
    if dropped_q and result["pairs"]:
        # Score queries without vectors as misses over the full pair count.
        result["recall"] = {k: v * len(usable) / len(pairs) for k, v in result["recall"].items()}
        result["pairs"] = len(pairs)
    result["pool_missing"] = len(set(pool_ids)) - len(pool)
    result["queries_missing"] = dropped_q
    return result


def run_gate(built: BuiltIndex, source: VectorSource, config: GateConfig = GateConfig(),
             pairs: list | None = None, pool_ids: list | None = None, live=None) -> dict:
    """Evaluate the gate; return the metrics for the manifest or raise GateFailed.

    ``live`` is the currently published :class:`indexing.snapshot.Snapshot` (or None).
    """
    try:
        return _run_gate(built, source, config, pairs, pool_ids, live)
    except NonFiniteError as exc:
        raise GateFailed(f"{exc}; not publishing, the live snapshot stays", exc.result) from exc


def _run_gate(built, source, config, pairs, pool_ids, live) -> dict:
    metrics: dict = {"ann": ann_recall(built, source, config)}
    ann = metrics["ann"]
    if not at_least(ann["recall"], config.min_ann_recall):
        raise GateFailed(f"ANN recall@{ann['k']} vs exact search is {ann['recall']:.4f} < "
                         f"{config.min_ann_recall} ({built.key}, {built.search_params or 'no search parameters'}); not "
                         "publishing (a larger max_index_memory allows a more accurate index)",
                         {"metrics": metrics})
    if pairs:
        if not pool_ids:
            raise ValueError("test pairs given without a test pool")
        ks = tuple(sorted(set(config.recall_ks) | {config.recall_k}))
        test_ids, test_vecs = source.take(list(dict.fromkeys(list(pool_ids) + [q for q, _ in pairs])))
        rel = related_recall(test_ids, normalize(test_vecs), pairs, pool_ids, ks)
        digest = test_set_fingerprint(pairs, pool_ids)
        rel["test_set_sha256"] = digest
        metrics["related_recall"] = {"recall": {str(k): v for k, v in rel["recall"].items()},
                                     "k_capped": {str(k): v for k, v in rel["k_capped"].items()},
                                     **{key: rel[key] for key in ("pairs", "pool_size", "targets_missing",
                                                                  "pool_missing", "queries_missing",
                                                                  "test_set_sha256")}}
        new = rel["recall"][config.recall_k]
        baseline, source = _baseline(live, digest, pairs, pool_ids, ks, config.recall_k)
        metrics["gate"] = {"recall_k": config.recall_k, "new": new, "baseline": baseline,
                           "baseline_source": source, "max_drop": config.max_recall_drop}
        if baseline is not None and not at_least(new, baseline - config.max_recall_drop):
            raise GateFailed(f"related-note Recall@{config.recall_k} fell from {baseline:.4f} "
                             f"({source}) to {new:.4f}, more than the allowed {config.max_recall_drop}; "
                             f"not publishing, the live snapshot stays", {"metrics": metrics})
    return metrics


def _baseline(live, digest, pairs, pool_ids, ks, k):
    if live is None:
        return None, "no live snapshot"
    recorded = live.info().get("metrics", {}).get("related_recall")
    if (recorded and recorded.get("test_set_sha256") == digest
            and is_number(recorded.get("recall", {}).get(str(k)))):
        return float(recorded["recall"][str(k)]), f"recorded in {live.name}"
    wanted = [p for p in dict.fromkeys(list(pool_ids) + [q for q, _ in pairs]) if live.has(p)]
    if not wanted:
        return None, f"{live.name} holds none of the test notes"
    vecs = np.stack([live.vector(p) for p in wanted])
    try:
        rel = related_recall(wanted, vecs, pairs, pool_ids, ks)
    except NonFiniteError as exc:   # a diverged live snapshot is no baseline: it must not block its fix
        return None, f"{live.name} is no baseline ({exc})"
    return float(rel["recall"][k]), f"recomputed from {live.name}"
