"""jobs.split: balanced train pairs, test pairs disjoint from train notes,
the test pool, and the _SUCCESS protocol, on a real local Spark."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from jobs import cooccurrence, split
from notellm import contracts
from notellm.storage import LOCAL
from tests.support.events import empty_days, ts, write_events, write_notes

pytestmark = pytest.mark.slow
TRAIN, TEST = dt.date(2026, 11, 13), dt.date(2026, 11, 20)
CATEGORY = {"a": "X", "b": "X", "c": "X", "d": "Y", "e": "Y", "f": "X", "g": "Z", "h": "Z", "i": "Z",
            "j": "Z", "k": "Z", "m": "Z"}
CREATED = {"j": ts("2026-11-18")}          # j: created in the test window, no events


def days(end: dt.date):
    return [(end - dt.timedelta(days=i)).isoformat() for i in range(7)]


@pytest.fixture(scope="module")
def split_run(spark, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("split")
    write_notes(tmp / "notes.parquet", sorted(CATEGORY), category=CATEGORY.get,
                created=lambda n: CREATED.get(n, ts("2026-01-01")))
    log = [
        # train window: a -> b, a -> c (both X->X, 1/2 each), d -> e (Y->Y, 1/1)
        ("u1", "a", "view", ts("2026-11-10", 1)), ("u1", "b", "click", ts("2026-11-10", 2)),
        ("u1", "c", "click", ts("2026-11-10", 3)),
        ("u2", "d", "view", ts("2026-11-11", 1)), ("u2", "e", "click", ts("2026-11-11", 2)),
        # test window: a -> f touches a train note (excluded); g -> h and h -> i are new
        ("u3", "a", "view", ts("2026-11-18", 1)), ("u3", "f", "click", ts("2026-11-18", 2)),
        ("u4", "g", "view", ts("2026-11-19", 1)), ("u4", "h", "click", ts("2026-11-19", 2)),
        ("u5", "h", "view", ts("2026-11-19", 1)), ("u5", "i", "click", ts("2026-11-19", 2)),
        ("u6", "k", "impression", ts("2026-11-19", 5)),      # k: in the pool through an impression
        ("u6", "b", "view", ts("2026-11-19", 5)),            # b: a train note, never in the pool
    ]
    write_events(tmp / "events", log)
    empty_days(tmp / "events", days(TRAIN) + days(TEST))
    for run_date in (TRAIN, TEST):
        cooccurrence.run(spark, cooccurrence.Config(
            events=tmp / "events", notes=tmp / "notes.parquet", out=tmp / "pairs",
            quarantine_out=tmp / "quarantine", run_date=run_date))
    cfg = split.SplitConfig(pairs=tmp / "pairs", train_date=TRAIN, test_date=TEST, notes=tmp / "notes.parquet",
                            events=tmp / "events", out=tmp / "split", max_pairs_per_category_pair=1)
    return tmp, cfg, split.run(spark, cfg)


def pairs(path):
    t = contracts.read_table(path, contracts.PAIRS)
    return sorted(zip(t.column("src_note_id").to_pylist(), t.column("dst_note_id").to_pylist()))


def test_balanced_train_pairs_keep_the_strongest_per_category_combination(split_run):
    tmp, _, result = split_run
    # (X,X): a->b and a->c tie on score and users; dst id asc keeps a->b. (Y,Y): d->e.
    assert pairs(tmp / "split" / "train_pairs") == [("a", "b"), ("d", "e")]
    assert result["counts"]["train_pairs_mined"] == 4      # a->b, a->c, b->c, d->e
    assert result["counts"]["train_notes"] == 5            # a b c d e


def test_test_pairs_and_pool_are_disjoint_from_train_notes(split_run):
    tmp, _, result = split_run
    train_notes = {n for p in pairs(tmp / "pairs" / f"dt={TRAIN}") for n in p}
    test = pairs(tmp / "split" / "test_pairs")
    assert test == [("g", "h"), ("h", "i")]                # a -> f dropped: a is a train note
    assert not train_notes & {n for p in test for n in p}
    pool = set(contracts.read_table(tmp / "split" / "pool", contracts.POOL).column("note_id").to_pylist())
    # events in the test window: a f g h i k b; created in it: j; minus train notes a, b
    assert pool == {"f", "g", "h", "i", "j", "k"}
    assert result["counts"]["test_queries"] == 2


def test_split_outputs_parameters_and_marker(spark, split_run):
    tmp, cfg, _ = split_run
    params = json.loads((tmp / "split" / "split.json").read_text())
    assert params["max_pairs_per_category_pair"] == 1 and params["test_window"] == ["2026-11-14", "2026-11-20"]
    assert contracts.require_success(tmp / "split")["counts"]["pool_notes"] == 6
    # A missing marker on an input partition is refused before anything is written.
    (tmp / "pairs" / f"dt={TEST}" / "_SUCCESS").unlink()
    try:
        with pytest.raises(cooccurrence.InputError, match="_SUCCESS"):
            split.run(spark, cfg)
        assert (tmp / "split" / "_SUCCESS").exists()
    finally:
        (tmp / "pairs" / f"dt={TEST}" / "_SUCCESS").write_text("")


def test_test_window_must_follow_train_window(split_run):
    tmp, cfg, _ = split_run
    import dataclasses
    with pytest.raises(cooccurrence.InputError, match="must start after"):
        split.check_inputs(LOCAL, dataclasses.replace(cfg, train_date=TEST, test_date=TEST))


def test_cli_prints_one_result_line_with_the_counts(split_run, tmp_path):
    """The split as the retraining DAG and the evaluation run it (own JVM)."""
    import os
    import subprocess
    import sys

    from tests.support.paths import REPO

    tmp, cfg, result = split_run
    res = subprocess.run([sys.executable, "-m", "jobs.split", "--pairs", str(cfg.pairs), "--train-date", str(TRAIN),
                          "--test-date", str(TEST), "--notes", str(cfg.notes), "--events", str(cfg.events),
                          "--out", str(tmp_path / "cli"), "--max-pairs-per-category-pair", "1",
                          "--master", "local[1]", "--shuffle-partitions", "2"],
                         cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.splitlines()
    assert len(lines) == 1, res.stdout
    line = json.loads(lines[0])
    assert line["status"] == "ok" and line["counts"] == result["counts"]
    assert {"check_inputs", "spark_start", "views", "write"} <= set(line["timings_s"])
    assert contracts.require_success(tmp_path / "cli")["counts"] == result["counts"]
