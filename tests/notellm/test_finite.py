"""notellm.finite and its use by the metrics: NaN vectors are refused, never ranked."""

from __future__ import annotations

import math

import numpy as np
import pytest

from notellm.cli import EXIT_DIVERGED
from notellm.finite import NonFiniteError, at_least, is_number, require_finite
from notellm.metrics import in_batch_accuracy, recall_at_k


def test_at_least_fails_for_nan_inf_and_non_numbers():
    assert at_least(0.5, 0.5) and at_least(1, 0.0)
    for bad in (float("nan"), float("inf") * 0, None, "0.9", True, [0.9]):
        assert not at_least(bad, 0.0), bad
    assert not at_least(float("-inf"), 0.0)
    # The comparison the gates used before: NaN slipped through it.
    assert not (float("nan") < 0.5) and not at_least(float("nan"), 0.5)
    assert is_number(3) and not is_number(math.inf) and not is_number(False)


def test_require_finite_counts_bad_rows():
    v = np.ones((5, 3), np.float32)
    v[1, 2] = np.nan
    v[3] = np.inf
    with pytest.raises(NonFiniteError, match=r"pool: 4 non-finite values \(NaN/Inf\) in 2 of 5 rows") as err:
        require_finite(v, "pool")
    assert err.value.exit_code == EXIT_DIVERGED and err.value.result["non_finite_rows"] == 2
    assert require_finite(np.arange(3), "ints").tolist() == [0, 1, 2]


def test_recall_over_nan_vectors_is_refused_not_perfect():
    """Before: NaN scores ranked every target first, Recall@1 = 1.0 for a diverged model."""
    ids = [f"n{i}" for i in range(6)]
    pairs = [("n0", "n1"), ("n2", "n3")]
    nan = np.full((6, 4), np.nan, np.float32)
    with pytest.raises(NonFiniteError, match="pool vectors"):
        recall_at_k(ids, nan, pairs, ks=(1,))
    good = np.eye(6, 4, dtype=np.float32)
    with pytest.raises(NonFiniteError, match="query vectors"):
        recall_at_k(ids, good, [("q", "n1")], ks=(1,), query_vectors={"q": np.full(4, np.nan, np.float32)})
    with pytest.raises(NonFiniteError):
        in_batch_accuracy(nan[:2], nan[2:4])
