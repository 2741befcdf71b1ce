"""Index types against exact search, type choice, the GPU path, the quality gate."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from indexing.build import IndexConfig, build_index, choose_index_type, default_nlist, set_search_param
from indexing.gate import GateConfig, GateFailed, related_recall, run_gate
from notellm.metrics import recall_at_k
from tests.support.notes import clustered_vectors


@pytest.fixture(scope="module")
def corpus():
    x = clustered_vectors(6000, 32, clusters=40, noise=0.3, seed=5)
    return [f"n{i:05d}" for i in range(len(x))], x


def brute_force(x, q, k):
    return np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :k]


def overlap(a, b):
    return np.mean([len(set(r) & set(s)) / len(s) for r, s in zip(a, b)])


def test_choose_index_type_by_size():
    c = IndexConfig()
    assert choose_index_type(10, c) == "flat" and choose_index_type(100_000, c) == "flat"
    assert choose_index_type(100_001, c) == "ivf" and choose_index_type(6_000_000, c) == "ivf"
    assert choose_index_type(10**6, IndexConfig(index_type="hnsw")) == "hnsw"
    assert choose_index_type(10, IndexConfig(index_type="ivf")) == "ivf"
    assert default_nlist(1_000_000) == 4000 and default_nlist(100) == 2 and default_nlist(10) == 1


def test_flat_is_exact_with_ids(corpus):
    ids, x = corpus
    built = build_index(ids, x, IndexConfig(index_type="flat"))
    assert isinstance(built.index, faiss.IndexIDMap2) and built.index.ntotal == len(ids)
    assert built.ids.column("note_id").to_pylist() == ids
    q = x[:50]
    scores, got = built.index.search(q, 10)
    ref = brute_force(x, q, 10)
    assert overlap(got, ref) == 1.0
    np.testing.assert_allclose(scores, np.take_along_axis(q @ x.T, ref, 1), atol=1e-5)
    np.testing.assert_allclose(built.index.reconstruct(17), x[17], atol=1e-6)


@pytest.mark.parametrize("kind,param", [("ivf", "nprobe"), ("hnsw", "efSearch")])
def test_approximate_indexes_reach_the_tuned_recall(corpus, kind, param):
    ids, x = corpus
    built = build_index(ids, x, IndexConfig(index_type=kind, tune_recall=0.95, tune_k=50))
    assert param in built.params
    q = x[np.random.default_rng(0).choice(len(x), 200, replace=False)]
    got = built.index.search(q, 50)[1]
    assert overlap(got, brute_force(x, q, 50)) >= 0.93
    if kind == "ivf":
        assert built.params["nlist"] == default_nlist(len(x))
        # Fewer probes really lose recall: the tuning is doing something.
        set_search_param(built.index, "nprobe", 1)
        assert overlap(built.index.search(q, 50)[1], brute_force(x, q, 50)) < 0.9


def test_vectors_are_normalised_before_indexing():
    x = clustered_vectors(50, 8, seed=1) * np.linspace(0.5, 3, 50)[:, None].astype(np.float32)
    built = build_index([str(i) for i in range(50)], x, IndexConfig(index_type="flat"))
    np.testing.assert_allclose(np.linalg.norm(built.index.reconstruct_n(0, 50), axis=1), 1.0, atol=1e-5)


def test_gpu_build_path(corpus):
    if faiss.get_num_gpus() == 0:
        pytest.skip("no GPU visible to FAISS (faiss-cpu on this machine); the GPU build path is untested here")
    ids, x = corpus
    for kind in ("flat", "ivf"):
        built = build_index(ids, x, IndexConfig(index_type=kind))
        assert built.on_gpu and isinstance(built.index, faiss.IndexIDMap2)  # back on CPU, writable
        assert built.index.ntotal == len(ids)


def test_gate_passes_good_index_and_records_metrics(corpus):
    ids, x = corpus
    built = build_index(ids, x, IndexConfig(index_type="hnsw"))
    m = run_gate(built, ids, x, GateConfig(ann_queries=100))
    assert m["ann"]["k"] == 100 and m["ann"]["recall"] >= 0.95


def test_gate_fails_degraded_ann_index(corpus):
    ids, x = corpus
    built = build_index(ids, x, IndexConfig(index_type="ivf"))
    set_search_param(built.index, "nprobe", 1)
    with pytest.raises(GateFailed, match="ANN recall@100"):
        run_gate(built, ids, x, GateConfig(ann_queries=100))


def test_gate_k_is_capped_at_corpus_size():
    x = clustered_vectors(30, 8, seed=2)
    built = build_index([str(i) for i in range(30)], x, IndexConfig(index_type="flat"))
    assert run_gate(built, [str(i) for i in range(30)], x)["ann"] == {"k": 30, "queries": 30, "recall": 1.0}


def test_related_recall_matches_metrics_reference(corpus):
    ids, x = corpus
    pool = ids[:500]
    rng = np.random.default_rng(3)
    pairs = [(ids[a], ids[b]) for a, b in rng.integers(0, 500, (80, 2)) if a != b]
    pairs.append(("n05999", ids[3]))  # query outside the pool: uses its own vector
    got = related_recall(ids, x, pairs, pool, ks=(10, 100))
    ref = recall_at_k(pool, x[:500], pairs, ks=(10, 100), query_vectors={"n05999": x[5999]})
    assert got["recall"] == ref["recall"] and got["pool_missing"] == 0
