"""Consumer API against a brute-force numpy reference, for every index type."""

from __future__ import annotations

import numpy as np
import pytest

from indexing.build import IndexConfig, build_index
from indexing.publish import content_digest, publish
from indexing.snapshot import Snapshot
from tests.support.notes import clustered_vectors

MODEL = {"model_id": "0123456789ab", "path": "/m", "template_version": "v1-paper"}


@pytest.fixture(scope="module", params=["flat", "ivf", "hnsw"])
def published(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"snap-{request.param}")
    x = clustered_vectors(3000, 24, clusters=30, noise=0.3, seed=11)
    ids = [f"note-{i}" for i in range(len(x))]
    built = build_index(ids, x, IndexConfig(index_type=request.param, tune_k=10, tune_recall=0.99))
    publish(root, built, date="2026-11-25", model=MODEL, content_sha256=content_digest(ids, x), metrics={})
    return root, ids, x, request.param


def test_open_and_info(published):
    root, ids, x, kind = published
    snap = Snapshot.open(root)
    info = snap.info()
    assert info["index"]["type"] == kind and info["index"]["metric"] == "inner_product"
    assert info["num_vectors"] == len(ids) == len(snap) and info["dim"] == 24
    assert info["model"]["model_id"] == MODEL["model_id"]


def test_vector_roundtrip(published):
    root, ids, x, _ = published
    snap = Snapshot.open(root)
    for i in (0, 1234, 2999):
        np.testing.assert_allclose(snap.vector(ids[i]), x[i], atol=1e-6)
    with pytest.raises(KeyError, match="not in snapshot"):
        snap.vector("nope")


def test_neighbors_match_brute_force_and_exclude_self(published):
    root, ids, x, kind = published
    snap = Snapshot.open(root)
    agree = []
    for i in (3, 500, 2500):
        got = snap.neighbors(ids[i], k=10)
        assert len(got) == 10 and ids[i] not in [n for n, _ in got]
        scores = x @ x[i]
        scores[i] = -np.inf
        ref = [ids[j] for j in np.argsort(-scores, kind="stable")[:10]]
        agree.append(len(set(ref) & {n for n, _ in got}) / 10)
        for n, s in got:  # scores are the cosine of the stored vectors
            assert s == pytest.approx(float(x[ids.index(n)] @ x[i]), abs=1e-4)
        assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)
    assert np.mean(agree) >= (1.0 if kind == "flat" else 0.9)


def test_search_normalises_queries_and_returns_note_ids(published):
    root, ids, x, kind = published
    snap = Snapshot.open(root)
    q = x[[7, 8]] * 5.0                   # unnormalised queries
    got, scores = snap.search(q, k=5)
    assert [row[0] for row in got] == [ids[7], ids[8]]
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    got_all, _ = snap.search(x[:1], k=10_000)   # k capped at the corpus size
    assert len(got_all[0]) == len(ids)
