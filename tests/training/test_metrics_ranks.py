"""Per-pair ranks from notellm.metrics.recall_at_k and the paired gain of training.evaluate."""

import numpy as np

from notellm.metrics import recall_at_k
from notellm.stats import paired_comparison
from training.evaluate import gain_over


def _brute_rank(pool, vecs, q_vec, q, t):
    scores = {p: float(vecs[i] @ q_vec) for i, p in enumerate(pool) if p != q}
    order = sorted(scores, key=lambda p: (-scores[p], pool.index(p)))
    return order.index(t) + 1


def test_ranks_match_brute_force_and_missing_targets_never_hit():
    rng = np.random.default_rng(3)
    pool = [f"n{i}" for i in range(40)]
    vecs = rng.normal(size=(40, 8)).astype(np.float32)
    pairs = [(f"n{rng.integers(40)}", f"n{rng.integers(40)}") for _ in range(30)] + [("n1", "absent")]
    pairs = [(q, t) for q, t in pairs if q != t]
    res = recall_at_k(pool, vecs, pairs, ks=(5, 10), with_ranks=True)
    for (q, t), r in zip(pairs, res["ranks"]):
        expect = len(pool) + 1 if t == "absent" else _brute_rank(pool, vecs, vecs[pool.index(q)], q, t)
        assert r == expect, (q, t)
    assert res["recall"][5] == np.mean(res["ranks"] <= 5)
    assert "ranks" not in recall_at_k(pool, vecs, pairs, ks=(5,))


def test_gain_over_is_the_paired_difference_clustered_by_query():
    pairs = [("a", "x"), ("a", "y"), ("b", "x"), ("c", "z")]
    new = {"ranks": [1, 3, 20, 2]}
    ref = {"ranks": [4, 20, 20, 1]}
    gain = gain_over(new, ref, pairs, pool_size=50, ks=(2, 10))
    assert gain["2"]["diff"] == (2 - 1) / 4 and gain["10"]["diff"] == (3 - 2) / 4
    expected = paired_comparison([True, False, False, True], [False, False, False, True],
                                 clusters=["a", "a", "b", "c"])
    assert gain["2"] == expected
