"""Recall@K by exposure bucket against a hand-computed reference."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from indexing.evaluate import recall_by_exposure
from notellm.contracts import EVENTS, validate_table


def events_for(counts: dict) -> pa.Table:
    rows = [{"user_id": f"u{i}", "note_id": nid, "event_type": "click",
             "event_time": dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)}
            for nid, c in counts.items() for i in range(c)]
    return validate_table(pa.Table.from_pylist(rows, schema=EVENTS.arrow_schema), EVENTS, "events")


def test_recall_by_exposure_hand_computed():
    # 1-d "embeddings" on a circle: a's nearest other note is b, c's nearest is d.
    angles = {"a": 0.0, "b": 0.1, "c": 2.0, "d": 2.1, "e": 4.0}
    pool = list(angles)
    vecs = np.array([[np.cos(t), np.sin(t)] for t in angles.values()], dtype=np.float32)
    pairs = [("a", "b"), ("c", "e"), ("e", "a"), ("a", "zz")]   # last: target outside the pool
    events = events_for({"a": 10, "c": 1, "e": 0})
    out = recall_by_exposure(pool, vecs, pairs, events, threshold=5, ks=(1, 2))
    assert out["pairs_skipped"] == 1
    # high: (a, b) hit at rank 1.  low: (c, e) rank of e from c: d (0.1 away) ... e is 2.0 away, a is 2.0 away.
    assert out["buckets"]["high"]["recall"] == {1: 1.0, 2: 1.0}
    low = out["buckets"]["low"]
    assert low["pairs"] == 2
    # From c: d (rank 1), then e and a/b tie region; from e: a is 2 nearest after d? compute reference.
    s = vecs @ vecs.T
    ranks = []
    for q, t in [("c", "e"), ("e", "a")]:
        qi, ti = pool.index(q), pool.index(t)
        others = [j for j in range(5) if j not in (qi, ti)]
        ranks.append(1 + sum(s[qi, j] > s[qi, ti] or (s[qi, j] == s[qi, ti] and j < ti) for j in others))
    assert low["recall"] == {1: float(np.mean(np.array(ranks) <= 1)), 2: float(np.mean(np.array(ranks) <= 2))}


def test_default_threshold_is_median_of_query_counts():
    pool = ["a", "b", "c"]
    vecs = np.eye(3, dtype=np.float32)
    out = recall_by_exposure(pool, vecs, [("a", "b"), ("b", "c"), ("c", "a")], events_for({"a": 1, "b": 4, "c": 9}))
    assert out["threshold"] == 4
    assert out["buckets"]["low"]["pairs"] == 1 and out["buckets"]["high"]["pairs"] == 2
