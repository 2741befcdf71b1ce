"""notellm.ranking against a brute-force sort and hand-computed ranks."""

from __future__ import annotations

import numpy as np
import pytest

from notellm.ranking import ranks_from_scores, ranks_in_rows


def brute_rank(row, t, exclude):
    """Sort the candidates (every column but the excluded one) by (-score, column); 1-based position of t."""
    cands = sorted((c for c in range(len(row)) if c != exclude), key=lambda c: (-row[c], c))
    return cands.index(t) + 1


def test_hand_computed_ranks_with_ties_broken_by_column():
    # query row 0 scores [9, 5, 5, 7], itself excluded: candidates by (-score, column) = 3, 1, 2
    scores = np.array([[9, 5, 5, 7], [0, 0, 0, 0]], dtype=np.float32)
    assert ranks_from_scores(scores, [0, 0, 0], [3, 1, 2]).tolist() == [1, 2, 3]
    # without exclusion the query's own column (score 9) is ahead of everything
    assert ranks_in_rows(scores[[0, 0]], [3, 1]).tolist() == [2, 3]
    assert ranks_in_rows(scores[[0, 0]], [3, 1], [-1, 0]).tolist() == [2, 2]


def test_matches_brute_force_on_many_ties():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 4, size=(30, 30)).astype(np.float32)
    qs = rng.integers(0, 30, 200)
    ts = [(q + 1 + int(rng.integers(0, 29))) % 30 for q in qs]
    got = ranks_from_scores(scores, qs, ts)
    assert got.tolist() == [brute_rank(scores[q], t, q) for q, t in zip(qs, ts)]
    rows = rng.normal(size=(50, 12))
    targets = rng.integers(0, 12, 50)
    excl = np.where(rng.random(50) < 0.5, -1, (targets + 1) % 12)
    assert ranks_in_rows(rows, targets, excl).tolist() == [brute_rank(r, t, x) for r, t, x in zip(rows, targets, excl)]


def test_empty_and_shape_errors():
    assert ranks_from_scores(np.zeros((3, 3)), [], []).tolist() == []
    assert ranks_in_rows(np.zeros((0, 3)), []).tolist() == []
    with pytest.raises(ValueError, match="one target per row"):
        ranks_in_rows(np.zeros((2, 3)), [0])
