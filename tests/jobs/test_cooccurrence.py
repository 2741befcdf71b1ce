"""Co-occurrence mining on a real local Spark: hand-computed scores, the
plain-Python reference on random logs, quarantine + reconciliation,
idempotent reruns, the _SUCCESS protocol and CLI input errors."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import shutil
import subprocess
import sys

import pyarrow as pa
import pytest

from jobs import reference, sql_template
from jobs.cooccurrence import Config, read_pairs, run
from notellm import contracts
from tests.support.events import empty_days, ts, write_events, write_notes
from tests.support.paths import REPO

RUN_DATE = dt.date(2026, 11, 20)
D = "2026-11-20"
WINDOW = [(RUN_DATE - dt.timedelta(days=i)).isoformat() for i in range(7)]
pytestmark = pytest.mark.slow


def rows_of(path) -> list[tuple]:
    t = contracts.read_table(path, contracts.PAIRS)
    return sorted(zip(*(t.column(c).to_pylist() for c in contracts.PAIRS.columns)))


def config(tmp, **kw) -> Config:
    base = dict(events=tmp / "events", notes=tmp / "notes.parquet", out=tmp / "pairs",
                quarantine_out=tmp / "quarantine", run_date=RUN_DATE)
    base.update(kw)
    return Config(**base)


# --------------------------------------------------------------------------
# hand-computed scores

HAND_LOG = [
    # u1 clicks b, c, d -> N_u1 = 3. Views: a@1h. Clicks: b@2h, c@3h, d@3h.
    ("u1", "a", "view", ts(D, 1)), ("u1", "b", "click", ts(D, 2)),
    ("u1", "c", "click", ts(D, 3)), ("u1", "d", "click", ts(D, 3)),
    # u2 clicks a, b -> N_u2 = 2. a@1h (a click is also a view), b@4h, b again @5h (duplicate sequence).
    ("u2", "a", "click", ts(D, 1)), ("u2", "b", "click", ts(D, 4)), ("u2", "b", "click", ts(D, 5)),
    ("u2", "a", "view", ts(D, 1)),   # same time as the a-click: no pair either way with itself (A == B anyway)
    # u3: one event only -> no pair.
    ("u3", "a", "click", ts(D, 1)),
    # u4 clicks e, f at the same timestamp -> N = 2 but no pair (not strictly later).
    ("u4", "e", "click", ts(D, 6)), ("u4", "f", "click", ts(D, 6)),
    # u5 views a then clicks a: A == B never pairs. N = 1.
    ("u5", "a", "view", ts(D, 1)), ("u5", "a", "click", ts(D, 2)),
]
# Pairs per user (views precede clicks strictly):
#   u1: a->b, a->c, a->d (view a@1), b->c, b->d (click b@2 is a view, c/d@3); c,d same time: none.
#       each worth 1/3
#   u2: a->b worth 1/2 (once, though b is clicked twice after a)
# s(a->b) = 1/3 + 1/2 = 5/6 (n_users 2); s(a->c) = s(a->d) = 1/3; s(b->c) = s(b->d) = 1/3.
# Fixed point: floor(1e12/3) = 333333333333, floor(1e12/2) = 500000000000.
THIRD = 333_333_333_333 / 1e12
HALF_PLUS_THIRD = 833_333_333_333 / 1e12


@pytest.fixture(scope="module")
def hand_run(spark, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hand")
    write_notes(tmp / "notes.parquet", list("abcdef"))
    write_events(tmp / "events", HAND_LOG)
    empty_days(tmp / "events", WINDOW)
    cfg = config(tmp, top=2)
    return tmp, cfg, run(spark, cfg)


def test_hand_computed_scores_and_top_t(hand_run):
    tmp, cfg, stats = hand_run
    window = (dt.date(2026, 11, 14), RUN_DATE)
    # top=2: a's candidates b (5/6, 2 users), then c and d tie at 1/3 with 1 user -> dst id asc keeps c.
    assert rows_of(tmp / "pairs" / f"dt={D}") == sorted([
        ("a", "b", HALF_PLUS_THIRD, 2, 1, *window),
        ("a", "c", THIRD, 1, 2, *window),
        ("b", "c", THIRD, 1, 1, *window),
        ("b", "d", THIRD, 1, 2, *window),
    ])
    assert stats["candidate_pairs"] == 5 and stats["pairs_in_bounds"] == 5 and stats["pairs_written"] == 4
    assert stats["events_in"] == len(HAND_LOG) == stats["used"]
    assert stats["users"] == 5 and stats["reconciles"]


def test_written_partition_reads_back_with_exact_contract_types(hand_run):
    tmp, _, _ = hand_run
    table = contracts.read_table(tmp / "pairs" / f"dt={D}", contracts.PAIRS)
    import pyarrow.parquet as pq
    raw = pq.read_table(next((tmp / "pairs" / f"dt={D}").glob("part-*.parquet"))).schema
    assert [raw.field(c).type for c in contracts.PAIRS.columns] == [
        pa.string(), pa.string(), pa.float64(), pa.int64(), pa.int32(), pa.date32(), pa.date32()]
    assert table.num_rows == 4
    assert contracts.require_success(tmp / "pairs" / f"dt={D}")["pairs_written"] == 4


def test_rerun_replaces_partition_with_identical_rows_and_keeps_siblings(spark, hand_run):
    tmp, cfg, _ = hand_run
    part = tmp / "pairs" / f"dt={D}"
    before_rows, before_files = rows_of(part), sorted(p.name for p in part.glob("part-*"))
    sibling = tmp / "pairs" / "dt=2026-11-13"
    shutil.copytree(part, sibling)
    (part / "part-stale.parquet").write_bytes((part / before_files[0]).read_bytes())  # junk a rerun must remove
    run(spark, cfg)
    assert rows_of(part) == before_rows
    assert not (part / "part-stale.parquet").exists()
    assert sorted(p.name for p in part.glob("part-*")) != before_files   # new files, old ones gone
    assert (part / "_SUCCESS").exists() and rows_of(sibling) == before_rows


def test_downstream_read_refuses_partition_without_marker(hand_run):
    tmp, _, _ = hand_run
    copy = tmp / "refused"
    shutil.copytree(tmp / "pairs" / f"dt={D}", copy / f"dt={D}")
    assert read_pairs(copy, RUN_DATE).num_rows == 4
    (copy / f"dt={D}" / "_SUCCESS").unlink()
    with pytest.raises(contracts.ContractError, match="_SUCCESS"):
        read_pairs(copy, RUN_DATE)


# --------------------------------------------------------------------------
# Spark == plain-Python reference on random logs


def random_world(rng: random.Random, world: int) -> list[tuple]:
    """One small random log; ids are prefixed by the world so many worlds can
    share one Spark run without interacting (disjoint users and notes)."""
    n_notes, n_users = rng.randint(2, 6), rng.randint(1, 5)
    hours = rng.choice([3, 30, 160])            # few distinct times -> many timestamp ties
    types = ["view", "click", "click", "impression", "answer", "comment"]
    rows = []
    for _ in range(rng.randint(1, 25)):
        row = (f"w{world}u{rng.randrange(n_users)}", f"w{world}n{rng.randrange(n_notes)}", rng.choice(types),
               ts("2026-11-14") + dt.timedelta(hours=rng.randrange(hours)))
        rows.append(row)
        if rng.random() < 0.15:
            rows.append(row)                    # exact duplicate event
    return rows


@pytest.mark.parametrize("params", [
    dict(view_types=("view", "click"), click_types=("click",), max_events_per_user=6, max_gap_hours=5.0,
         lower=0.2, upper=1.2, top=2),
    dict(view_types=("view", "click", "answer", "comment"), click_types=("click", "answer", "comment"),
         max_events_per_user=0, max_gap_hours=0.0, lower=0.0, upper=30.0, top=3),
], ids=["capped-gap-bounds", "engagement-uncapped"])
def test_spark_equals_reference_on_random_logs(spark, tmp_path, params):
    rng = random.Random(1234)
    rows = [r for w in range(60) for r in random_world(rng, w)]
    notes = sorted({r[1] for r in rows})
    write_notes(tmp_path / "notes.parquet", notes)
    write_events(tmp_path / "events", rows)
    empty_days(tmp_path / "events", WINDOW)
    cfg = config(tmp_path, **params)
    stats = run(spark, cfg)

    events = [reference.Event(u, n, t, int(time.timestamp()) * 1_000_000) for u, n, t, time in rows]
    expected = reference.related_pairs(
        events, params["view_types"], params["click_types"], params["upper"], params["lower"], params["top"],
        params["max_events_per_user"] or None, cfg.max_gap_us if params["max_gap_hours"] else None)
    window = (cfg.window_start, RUN_DATE)
    assert rows_of(tmp_path / "pairs" / f"dt={D}") == sorted(
        (p.src_note_id, p.dst_note_id, p.score, p.n_users, p.rank, *window) for p in expected)
    assert len(expected) > 30                     # the random logs do produce pairs

    used_types = set(params["view_types"]) | set(params["click_types"])
    in_scope = [e for e in events if e.event_type in used_types]
    _, capped = reference.cap_events(in_scope, params["max_events_per_user"] or None)
    assert stats["capped"] == capped and (capped > 0) == bool(params["max_events_per_user"])
    assert stats["ignored_type"] == len(events) - len(in_scope)
    assert stats["reconciles"]


# --------------------------------------------------------------------------
# validation, quarantine, reconciliation


def test_bad_rows_are_quarantined_with_reasons_and_counts_reconcile(spark, tmp_path):
    write_notes(tmp_path / "notes.parquet", ["a", "b"])
    good = [("u1", "a", "view", ts(D, 1)), ("u1", "b", "click", ts(D, 2)),
            ("u1", "b", "impression", ts(D, 3)),                       # ignored type
            ("u2", "a", "click", ts("2026-11-10", 1))]                 # outside window (file is in the window)
    write_events(tmp_path / "events", good, day_of=lambda r: D)
    landing = [("u3", "a", "view", "2026-11-20T01:00:00+00:00"),         # valid landing row
               ("u3", "b", "click", "2026-11-20T03:00:00Z"),             # valid
               ("u4", "a", "view", "not a time"),                       # bad_timestamp
               ("u4", "a", "view", None),                               # bad_timestamp
               (None, "a", "view", "2026-11-20T01:00:00Z"),             # null_user
               ("  ", "a", "view", "2026-11-20T01:00:00Z"),             # null_user (blank)
               ("u5", None, "click", "2026-11-20T01:00:00Z"),           # null_note
               ("u5", "a", "purchase", "2026-11-20T01:00:00Z"),         # unknown_event_type
               ("u5", "zzz", "click", "2026-11-20T01:00:00Z"),          # unknown_note
               ("u6", "zzz", "click", "2026-11-10T01:00:00Z")]          # unknown_note wins over outside window
    write_events(tmp_path / "events", landing, day_of=lambda r: D, landing=True, name="landing-00000.parquet")
    empty_days(tmp_path / "events", WINDOW)
    stats = run(spark, config(tmp_path))

    assert stats["events_in"] == 14
    assert stats["quarantined"] == {"null_user": 2, "null_note": 1, "bad_timestamp": 2,
                                    "unknown_event_type": 1, "unknown_note": 2}
    assert (stats["quarantined_total"], stats["outside_window"], stats["ignored_type"], stats["capped"],
            stats["used"]) == (8, 1, 1, 0, 4)
    assert stats["events_in"] == 8 + 1 + 1 + 0 + 4 and stats["reconciles"]
    q = contracts.read_table(tmp_path / "quarantine" / f"dt={D}", contracts.QUARANTINE).to_pylist()
    assert sorted(r["reason"] for r in q) == sorted(["null_user"] * 2 + ["null_note"] + ["bad_timestamp"] * 2
                                                   + ["unknown_event_type"] + ["unknown_note"] * 2)
    assert all(r["source"].endswith("landing-00000.parquet") for r in q)
    assert any('"event_time":"not a time"' in r["raw"] for r in q)
    assert contracts.require_success(tmp_path / "quarantine" / f"dt={D}")["quarantined_total"] == 8
    # u1: a -> b (1/1); u3: a -> b (1/1) -> s = 2.0 with 2 users.
    assert [(r[0], r[1], r[2], r[3]) for r in rows_of(tmp_path / "pairs" / f"dt={D}")] == [("a", "b", 2.0, 2)]


def test_window_of_empty_day_files_writes_empty_marked_partitions(spark, tmp_path):
    """Zero rows in: the observed status counts still arrive (no hang), every
    count is 0 and both outputs are empty, marked partitions."""
    write_notes(tmp_path / "notes.parquet", ["a", "b"])
    empty_days(tmp_path / "events", WINDOW)
    stats = run(spark, config(tmp_path))
    assert (stats["events_in"], stats["quarantined_total"], stats["used"], stats["pairs_written"]) == (0, 0, 0, 0)
    assert rows_of(tmp_path / "pairs" / f"dt={D}") == []
    assert contracts.require_success(tmp_path / "pairs" / f"dt={D}")["pairs_written"] == 0


# --------------------------------------------------------------------------
# CLI and SQL parameters (no JVM needed: inputs are checked before Spark starts)


def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "jobs.cooccurrence", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_refuses_missing_window_days_and_missing_notes(tmp_path):
    write_notes(tmp_path / "notes.parquet", ["a"])
    write_events(tmp_path / "events", [("u", "a", "view", ts(D, 1))])
    common = ["--out", str(tmp_path / "o"), "--quarantine-out", str(tmp_path / "q"), "--run-date", D]
    res = run_cli("--events", str(tmp_path / "events"), "--notes", str(tmp_path / "notes.parquet"), *common)
    assert res.returncode == 2 and "2026-11-14" in res.stderr and "--allow-missing-days" in res.stderr
    assert "2026-11-14" in result_of(res)["error"] and result_of(res)["status"] == "bad_input"
    res = run_cli("--events", str(tmp_path / "events"), "--notes", str(tmp_path / "nope.parquet"),
                  "--allow-missing-days", *common)
    assert res.returncode == 2 and "notes: no Parquet file" in res.stderr
    assert "notes: no Parquet file" in result_of(res)["error"]
    res = run_cli("--events", str(tmp_path / "events"), "--notes", str(tmp_path / "notes.parquet"),
                  "--view-types", "view,bogus", *common)
    assert res.returncode == 2 and "bogus" in res.stderr and "bogus" in result_of(res)["error"]
    res = run_cli("--events", str(tmp_path / "events"), "--notes", str(tmp_path / "notes.parquet"),
                  "--run-date", "20-11-2026", *common[:-2])
    assert res.returncode == 2 and "YYYY-MM-DD" in result_of(res)["error"]
    assert not (tmp_path / "o").exists()


def result_of(res) -> dict:
    lines = res.stdout.splitlines()
    assert len(lines) == 1, res.stdout     # the result line and nothing else
    return json.loads(lines[0])


def test_cli_run_prints_one_result_line_and_writes_the_partition(tmp_path):
    """The job as Airflow and the evaluation run it: one JVM, one JSON line."""
    write_notes(tmp_path / "notes.parquet", list("abc"))
    write_events(tmp_path / "events", [("u1", "a", "view", ts(D, 1)), ("u1", "b", "click", ts(D, 2)),
                                       ("u1", "c", "click", ts(D, 3))])
    res = run_cli("--events", str(tmp_path / "events"), "--notes", str(tmp_path / "notes.parquet"),
                  "--out", str(tmp_path / "o"), "--quarantine-out", str(tmp_path / "q"), "--run-date", D,
                  "--allow-missing-days", "--master", "local[1]", "--shuffle-partitions", "2",
                  "--conf", "spark.sql.adaptive.enabled=false")
    assert res.returncode == 0, res.stderr[-3000:]
    result = result_of(res)
    stats = contracts.require_success(tmp_path / "o" / f"dt={D}")
    assert result["status"] == "ok" and result["pairs_written"] == stats["pairs_written"] == 3
    assert {k: result[k] for k in ("events_in", "used", "candidate_pairs")} == {"events_in": 3, "used": 3,
                                                                                "candidate_pairs": 3}
    assert {"check_inputs", "spark_start", "classify", "scan", "cap", "pairs", "write_pairs",
            "total"} <= set(result["timings_s"])
    assert {"classify_s", "cap_s", "pairs_s", "write_pairs_s", "total_s"} <= set(stats["timings"])
    assert stats["params"] == {"window_days": 7, "upper": 30.0, "lower": 0.01, "top": 10,
                               "view_types": ["view", "click"], "click_types": ["click"],
                               "max_events_per_user": 200, "max_gap_hours": 24.0, "allow_missing_days": True}


def test_sql_parameters_are_rendered_as_literals_not_text():
    stmts = sql_template.render("SELECT * FROM t WHERE x IN ({{types}}) AND n <= {{n}}; -- c; d",
                                {"types": ["view", "click"], "n": 3})
    assert stmts == ["SELECT * FROM t WHERE x IN ('view', 'click') AND n <= 3"]
    with pytest.raises(sql_template.SqlParameterError):
        sql_template.render("{{types}}", {"types": ["x') OR 1=1 --"]})
    with pytest.raises(sql_template.SqlParameterError, match="missing"):
        sql_template.render("{{a}} {{b}}", {"a": 1})


# --------------------------------------------------------------------------
# performance mechanics that must not silently regress (cheap, no big data)


def _pairs_table(rows: int, null_rank: bool = False) -> pa.Table:
    day = dt.date(2026, 11, 20)
    return pa.table({
        "src_note_id": [f"s{i}" for i in range(rows)], "dst_note_id": [f"d{i}" for i in range(rows)],
        "score": [0.5] * rows, "n_users": [1] * rows,
        "rank": pa.array([None if null_rank and i == 0 else 1 for i in range(rows)], pa.int32()),
        "window_start": [day] * rows, "window_end": [day] * rows})


def test_written_partition_is_checked_from_footers(tmp_path):
    import pyarrow.parquet as pq

    from jobs.spark_output import check_written
    from notellm.storage import LOCAL

    part = tmp_path / "dt=2026-11-20"
    part.mkdir()
    pq.write_table(_pairs_table(3), part / "part-0.parquet")
    pq.write_table(_pairs_table(2), part / "part-1.parquet")
    check_written(LOCAL, str(part), contracts.PAIRS, 5)
    with pytest.raises(RuntimeError, match="expected 4 rows .* count 5"):
        check_written(LOCAL, str(part), contracts.PAIRS, 4)
    pq.write_table(_pairs_table(2, null_rank=True), part / "part-2.parquet")
    with pytest.raises(contracts.ContractError, match="rank.*null"):
        check_written(LOCAL, str(part), contracts.PAIRS, 7)
    (part / "part-2.parquet").unlink()
    pq.write_table(_pairs_table(1).drop_columns(["score"]), part / "part-3.parquet")
    with pytest.raises(contracts.ContractError, match="score"):
        check_written(LOCAL, str(part), contracts.PAIRS, 6)


def test_checkpointed_view_is_not_recomputed_from_the_files(spark, tmp_path):
    """A view reading the files' _metadata never matches its persist() cache
    entry, so every action re-scanned the raw files; the checkpoint cuts that."""
    from jobs.spark_input import checkpoint_view, release

    write_notes(tmp_path / "notes.parquet", list("abc"))
    (spark.read.parquet(str(tmp_path / "notes.parquet"))
     .selectExpr("note_id", "_metadata.file_path AS source").createOrReplaceTempView("t_meta"))
    df = checkpoint_view(spark, "t_meta")
    spark.sql("CREATE OR REPLACE TEMPORARY VIEW t_down AS SELECT note_id FROM t_meta WHERE note_id <> 'b'")
    plan = spark.table("t_down")._jdf.queryExecution().executedPlan().toString()
    assert "FileScan" not in plan and "ExistingRDD" in plan
    assert sorted(r.note_id for r in spark.table("t_down").collect()) == ["a", "c"]
    release(df)


def test_user_keys_broadcast_only_when_they_fit_the_threshold(spark):
    from jobs.spark_input import broadcast_if_small

    spark.range(100).selectExpr("CAST(id AS STRING) AS user_id", "id AS user_key") \
        .localCheckpoint().createOrReplaceTempView("t_keys")
    spark.range(1000).selectExpr("CAST(id % 100 AS STRING) AS user_id").createOrReplaceTempView("t_events")
    join = "SELECT e.user_id, k.user_key FROM t_events e JOIN t_keys k ON k.user_id = e.user_id"
    assert not broadcast_if_small(spark, "t_keys", 10 ** 9)           # too big for the threshold
    old = spark.conf.get("spark.sql.autoBroadcastJoinThreshold")
    try:
        spark.conf.set("spark.sql.autoBroadcastJoinThreshold", "-1")    # the user turned broadcasts off
        assert not broadcast_if_small(spark, "t_keys", 100)
        spark.conf.set("spark.sql.autoBroadcastJoinThreshold", "10MB")
        assert broadcast_if_small(spark, "t_keys", 100)
        assert "BroadcastHashJoin" in spark.sql(join)._jdf.queryExecution().executedPlan().toString()
        assert spark.sql(join).count() == 1000
    finally:
        spark.conf.set("spark.sql.autoBroadcastJoinThreshold", old)
