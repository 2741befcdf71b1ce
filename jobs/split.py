"""Training and test sets from mined pairs, as in the NoteLLM evaluation.

Definitions (train run date T, test run date S, both mined by
``jobs.cooccurrence``; S's window must start after T's window ends):

* train pairs   = the pairs of partition ``dt=T``; optionally balanced: at most
  ``max_pairs_per_category_pair`` pairs per (category of A, category of B),
  the strongest ones (score desc, n_users desc, src id, dst id asc).
* train notes   = every endpoint of any mined train pair, *before* balancing
  (the notes the training window could have shown the model; conservative).
* test pairs    = pairs of partition ``dt=S`` whose source and destination are
  both outside the train notes. Each is used with the source as the query and
  the destination as the ground truth.
* test pool     = the notes of the test period outside the train notes: notes
  with at least one valid event (any known type, known note, timestamp in S's
  window) in S's window, plus notes created in that window, plus every test
  pair endpoint.

Output (replaced as a whole on rerun, through a staging folder and a swap:
:class:`jobs.spark_input.FolderCommit`): ``<out>/train_pairs/``,
``<out>/test_pairs/`` (PAIRS contract), ``<out>/pool/`` (POOL contract),
``<out>/split.json`` (parameters and counts), then ``_stats.json`` and
``_SUCCESS``. Paths are URIs (``hdfs://``, ``s3a://``, ``file://`` or plain);
the split runs where the mining job runs (``spark-submit`` on the cluster),
each table written as many files (ranges of its sort key; AQE sizes them).

Run: ``python -m jobs.split --pairs P --train-date 2026-11-13 --test-date
2026-11-20 --notes N --events E --out O [--max-pairs-per-category-pair K]``;
``--help`` lists every setting (:class:`jobs.config.SplitConfig`). The result
is one JSON line on stdout: the counts and the phase timings.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # spark-submit jobs/split.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.config import SplitConfig
from jobs.package import code_digest
from jobs.spark_input import (
    InputError,
    discover_event_files,
    notes_files,
    qualify_all,
    register_inputs,
    require_success,
    start_spark,
)
from jobs.spark_output import FolderCommit, mark_success
from jobs.spark_session import launched_by_spark_submit
from notellm import cli, contracts, storage
from notellm.storage import Storage

__all__ = ["InputError", "SplitConfig", "check_inputs", "main", "run"]
TABLES = (("train_pairs", "split_train", contracts.PAIRS, ("src_note_id", "rank")),
          ("test_pairs", "split_test", contracts.PAIRS, ("src_note_id", "rank")),
          ("pool", "split_pool", contracts.POOL, ("note_id",)))


def _window(store: Storage, part: str) -> tuple[dt.date, dt.date]:
    stats = require_success(store, part, "pairs")
    try:
        return dt.date.fromisoformat(stats["window_start"]), dt.date.fromisoformat(stats["window_end"])
    except (KeyError, ValueError) as exc:
        raise InputError(f"pairs: {part}/_stats.json has no window_start/window_end") from exc


def check_inputs(store: Storage, cfg: SplitConfig):
    pairs, events, notes = qualify_all(store, cfg.pairs, cfg.events, cfg.notes)
    train_part = storage.join(pairs, f"dt={cfg.train_date.isoformat()}")
    test_part = storage.join(pairs, f"dt={cfg.test_date.isoformat()}")
    train_window, test_window = _window(store, train_part), _window(store, test_part)
    if test_window[0] <= train_window[1]:
        raise InputError(f"the test window {test_window[0]}..{test_window[1]} must start after the train window "
                         f"{train_window[0]}..{train_window[1]} ends (test pairs come from a later period)")
    if cfg.max_pairs_per_category_pair < 0:
        raise InputError("--max-pairs-per-category-pair must be >= 0 (0 = no balancing)")
    # The test window's event files (for the pool) and the notes, checked before any data is read.
    days = [test_window[0] + dt.timedelta(days=i) for i in range((test_window[1] - test_window[0]).days + 1)]
    files = discover_event_files(store, events, days, cfg.allow_missing_days)
    return train_part, test_part, train_window, test_window, files, notes_files(store, notes)


def define_views(spark, k: int, start: str, end_excl: str) -> None:
    """Temp views split_train_notes, split_train (balanced to ``k`` per
    category combination; 0 = all), split_test and split_pool, for the test
    window [start, end_excl)."""
    cols = ", ".join(f"p.{c}" for c in contracts.PAIRS.columns)
    spark.sql("""
        CREATE OR REPLACE TEMPORARY VIEW split_train_notes AS
        SELECT src_note_id AS note_id FROM split_train_all
        UNION SELECT dst_note_id FROM split_train_all""")
    spark.sql(f"""
        CREATE OR REPLACE TEMPORARY VIEW split_train AS
        SELECT {cols} FROM (
          SELECT p.*, ROW_NUMBER() OVER (
                   PARTITION BY COALESCE(s.category, ''), COALESCE(d.category, '')
                   ORDER BY p.score DESC, p.n_users DESC, p.src_note_id, p.dst_note_id) AS category_rank
          FROM split_train_all p
          LEFT JOIN notes_input s ON s.note_id = p.src_note_id
          LEFT JOIN notes_input d ON d.note_id = p.dst_note_id) p
        WHERE {k} = 0 OR p.category_rank <= {k}""")
    spark.sql(f"""
        CREATE OR REPLACE TEMPORARY VIEW split_test AS
        SELECT {cols} FROM split_test_all p
        LEFT ANTI JOIN split_train_notes a ON a.note_id = p.src_note_id
        LEFT ANTI JOIN split_train_notes b ON b.note_id = p.dst_note_id""")
    spark.sql(f"""
        CREATE OR REPLACE TEMPORARY VIEW split_pool AS
        SELECT note_id FROM (
          SELECT e.note_id FROM events_input e JOIN note_keys k ON k.note_id = e.note_id
          WHERE e.user_id IS NOT NULL AND TRIM(e.user_id) <> ''
            AND e.event_type IN ({", ".join(f"'{t}'" for t in contracts.EVENT_TYPES)})
            AND e.event_time >= TIMESTAMP '{start} 00:00:00+00:00'
            AND e.event_time < TIMESTAMP '{end_excl} 00:00:00+00:00'
          UNION
          SELECT note_id FROM notes_input
          WHERE created_at >= TIMESTAMP '{start} 00:00:00+00:00' AND created_at < TIMESTAMP '{end_excl} 00:00:00+00:00'
          UNION SELECT src_note_id FROM split_test
          UNION SELECT dst_note_id FROM split_test) pool
        LEFT ANTI JOIN split_train_notes t ON t.note_id = pool.note_id""")


def write_tables(spark, commit: FolderCommit) -> dict:
    """Write the three tables into the commit's staging folder; return the
    counts (each written table's rows observed during its write, and checked
    against its footers)."""
    counts = {
        "train_pairs_mined": spark.table("split_train_all").count(),
        "test_pairs_mined": spark.table("split_test_all").count(),
        "train_notes": spark.table("split_train_notes").count(),
    }
    for name, view, contract, order in TABLES:
        # Range partitions of the sort key (AQE sizes them from the data): no single-partition step,
        # and each file covers a key range a reader can prune by its footer statistics.
        frame = spark.table(view).repartitionByRange(*order).sortWithinPartitions(*order)
        counts["pool_notes" if name == "pool" else name] = commit.write(frame, contract, sub=name)
    counts["test_queries"] = spark.table("split_test").select("src_note_id").distinct().count()
    return counts


def run(spark, cfg: SplitConfig, timer: cli.Timer | None = None) -> dict:
    """Write the split; return its parameters, counts and timings (``split.json``)."""
    timer = timer or cli.Timer()
    t0 = time.perf_counter()
    store = storage.for_spark(spark)
    train_part, test_part, train_window, test_window, files, notes = check_inputs(store, cfg)
    commit = FolderCommit(store, store.qualify(cfg.out))
    k = cfg.max_pairs_per_category_pair
    try:
        commit.recover()
        with timer.phase("views"):
            spark.read.parquet(train_part).createOrReplaceTempView("split_train_all")
            spark.read.parquet(test_part).createOrReplaceTempView("split_test_all")
            register_inputs(spark, files, notes)   # events_input, notes_input, note_keys
            define_views(spark, k, test_window[0].isoformat(), (test_window[1] + dt.timedelta(days=1)).isoformat())
        with timer.phase("write"):
            counts = write_tables(spark, commit)
        params = {
            "pairs": cfg.pairs, "notes": cfg.notes, "events": cfg.events,
            "train_date": cfg.train_date.isoformat(), "test_date": cfg.test_date.isoformat(),
            "train_window": [d.isoformat() for d in train_window],
            "test_window": [d.isoformat() for d in test_window],
            "max_pairs_per_category_pair": k,
            "definitions": {
                "train_notes": "endpoints of all mined train pairs (before balancing)",
                "test_pairs": "test-date pairs with neither endpoint in train_notes; query = src, ground truth = dst",
                "pool": "notes with a valid event in the test window or created in it, plus test endpoints, "
                        "minus train_notes",
            },
        }
        phases = {f"{k}_s": v for k, v in timer.as_dict().items() if k != "total"}
        split = {**params, "code": code_digest(), "counts": counts,
                 "timings": {**phases, "total_s": round(time.perf_counter() - t0, 3)}}
        store.write_json(storage.join(commit.staging, "split.json"), split)
        # Each table is a partition of its own for its readers (training refuses an
        # unmarked pairs folder); the split as a whole is marked, then swapped in.
        for name, _, _, _ in TABLES:
            rows = counts["pool_notes" if name == "pool" else name]
            mark_success(store, storage.join(commit.staging, name), {"table": name, "rows": rows, "split": cfg.out})
        commit.publish(split)
    except BaseException:
        commit.abandon()
        raise
    return split


def is_local_run(cfg: SplitConfig) -> bool:
    """Plain ``python -m`` on a local master over local paths: inputs checked before a JVM starts."""
    return (not launched_by_spark_submit() and cfg.master.startswith("local")
            and all(storage.scheme_of(p) in ("", "file") for p in (cfg.pairs, cfg.events, cfg.notes, cfg.out)))


def command(cfg: SplitConfig, timer: cli.Timer) -> dict:
    if is_local_run(cfg):
        with timer.phase("check_inputs"):   # before paying for a JVM
            check_inputs(storage.LOCAL, cfg)
    with timer.phase("spark_start"):
        spark = start_spark("notellm-split", cfg)
    try:
        split = run(spark, cfg, timer)
    finally:
        spark.stop()
    return {"code": split["code"], "counts": split["counts"], "out": cfg.out}


def main(argv: list[str] | None = None) -> int:
    return cli.main(command, SplitConfig, argv, prog="python -m jobs.split")


if __name__ == "__main__":
    sys.exit(main())
