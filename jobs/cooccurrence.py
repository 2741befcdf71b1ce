"""Co-occurrence mining: click logs -> related-note pairs (NoteLLM, section 4.1).

Method (the maths lives in ``sql/cooccurrence_score.sql``; this module does the
I/O, validation and orchestration). For the window W = the ``window_days``
UTC days ending at the run date (inclusive):

    N_u      = number of distinct notes user u clicked in W
    P_u      = {(A, B) : A != B, u has an event on A whose type is a *view type*
                at time t1 and an event on B whose type is a *click type* at t2,
                with 0 < t2 - t1 <= max_gap}
    s(A->B)  = sum over users u with (A, B) in P_u of 1 / N_u
    n_users(A->B) = |{u : (A, B) in P_u}|

Reading of the paper's words, made precise:

* a user contributes 1/N_u once per (A, B), however often the sequence repeats;
* "subsequently" = strictly later timestamp: two events with the same
  timestamp never form a pair in either direction;
* an event whose type is both a view and a click type (defaults: view =
  {view, click}, click = {click}) plays both roles; for public engagement data
  pass every engagement type as both;
* scores are directional: s(A->B) != s(B->A) in general;
* N_u, P_u are computed after the guards below (the definition is applied to
  the events that are used).

Selection: for each source note A keep the candidates B with
``lower <= s(A->B) <= upper`` (defaults l = 0.01, u = 30), then the top t
(default 10) ordered by score desc, n_users desc, dst note id asc; ``rank`` is
1..t. 1/N_u is accumulated in fixed point (floor(10^12 / N_u) units) so sums
and ties are exact and every rerun/engine gives the same order.

Guards against the quadratic per-user pairing: at most
``max_events_per_user`` events per user (the most recent, ties broken by note
id then event type, descending) and ``max_gap_hours`` between t1 and t2 (0 =
no limit besides the window). The paper states neither; they are the price
of a bounded job and are reported in the stats.

Validation: rows of the window's event files are quarantined (QUARANTINE
contract, one reason each: null_user, null_note, bad_timestamp,
unknown_event_type, unknown_note) and every row is counted once:

    events_in = quarantined + outside_window + ignored_type + capped + used

outside_window = valid events in the window's files whose event_time is not
in W; ignored_type = known types that are neither view nor click types
(e.g. impressions).

Output: ``<out>/dt=<run date>/part-*.parquet`` (PAIRS contract), then
``_stats.json`` and ``_SUCCESS``; quarantine rows likewise under
``<quarantine-out>/dt=<run date>/``. Rerunning a date replaces its partition.

Run: ``python -m jobs.cooccurrence --events E --notes N --out O
--quarantine-out Q --run-date 2026-11-20`` or the same arguments after
``spark-submit jobs/cooccurrence.py``; ``--help`` lists every setting
(defined once, in :class:`jobs.config.CooccurrenceConfig`). The result is one
JSON line on stdout (the counts below and the phase timings).
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # spark-submit jobs/cooccurrence.py: make `jobs` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs import sql_template
from jobs.config import ENGAGEMENT_TYPES, CooccurrenceConfig
from jobs.package import code_digest
from jobs.reference import SCORE_SCALE, bound_units
from jobs.spark_input import (
    MATERIALISED_VIEWS,
    EventFiles,
    InputError,
    broadcast_if_small,
    checkpoint_view,
    configure_checkpoints,
    discover_event_files,
    notes_files,
    ordered_keys,
    qualify_all,
    register_inputs,
    release,
    require_success,
    run_sql,
    size_shuffle,
    start_spark,
    view_name,
)
from jobs.spark_output import output_files, partition_commit
from jobs.spark_session import launched_by_spark_submit
from notellm import cli, contracts, storage
from notellm.contracts import EVENT_TYPES

Config = CooccurrenceConfig     # the job's settings (one definition, in jobs.config)
QUARANTINE_REASONS = ("null_user", "null_note", "bad_timestamp", "unknown_event_type", "unknown_note")
EVENT_STATUSES = ("quarantined", "outside_window", "ignored_type", "in_scope")
# The only statuses a later step reads (user keys, scoring events, quarantine output).
KEPT_STATUSES = ("in_scope", "quarantined")
# The counts the command prints on its result line (all of them are in _stats.json too).
RESULT_KEYS = ("code", "run_date", "events_in", "quarantined_total", "outside_window", "ignored_type", "capped", "used",
               "candidate_pairs", "pairs_in_bounds", "pairs_written")
__all__ = ["Config", "ENGAGEMENT_TYPES", "InputError", "MATERIALISED_VIEWS", "main", "read_pairs", "run"]


def checkpoint_event_statuses(spark) -> tuple:
    """Scan and classify the raw events once, keep only the rows a later step
    reads (``KEPT_STATUSES``) and count every status and quarantine reason in
    the same pass; return ``(checkpointed frame, counts by status, counts by
    reason)``.

    The counts are observed metrics of the checkpointing job itself (Spark's
    ``Observation``: an aggregate evaluated while the rows stream through,
    before the filter), so the rows outside the window or of ignored types
    (impressions: two thirds of the sample log) are counted but never stored,
    and no second job reads the stored rows back to count them."""
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    observation = Observation("event_status_counts")
    metrics = ([F.count(F.when(F.col("status") == s, 1)).alias(f"status_{s}") for s in EVENT_STATUSES]
               + [F.count(F.when(F.col("quarantine_reason") == r, 1)).alias(f"reason_{r}")
                  for r in QUARANTINE_REASONS])
    observed = (spark.table("events_status").observe(observation, *metrics)
                .where(F.col("status").isin(*KEPT_STATUSES)))
    kept = checkpoint_view(spark, "events_status", observed)
    values = observation.get   # published when the checkpoint's job finished
    missing = [m for m in [f"status_{s}" for s in EVENT_STATUSES] + [f"reason_{r}" for r in QUARANTINE_REASONS]
               if m not in values]
    if missing:
        raise RuntimeError(f"Spark returned no observed event counts for {missing}; the counts would not reconcile")
    counts = {s: int(values[f"status_{s}"]) for s in EVENT_STATUSES}
    by_reason = {r: int(values[f"reason_{r}"]) for r in QUARANTINE_REASONS}
    return kept, counts, by_reason


def classify_events(spark, cfg: Config, files: EventFiles, notes: list[str], timer: cli.Timer) -> tuple:
    """Inputs, note keys, the one scan that classifies the raw events, user keys.
    Returns ``(held frames, counts by status, counts by reason, users)``."""
    with timer.phase("inputs"):       # file index and note keys
        register_inputs(spark, files, notes)
        held = [checkpoint_view(spark, "note_keys")]   # keys from sampled ranges: computed once
        broadcast_if_small(spark, "note_keys", spark.table("note_keys").count())
    window_end_excl = cfg.run_date + dt.timedelta(days=1)

    def define_user_keys(view: str = "user_ids") -> None:
        # A frame's plan is fixed when it is built: defined once before the SQL views
        # that join user_keys (Spark resolves a view's names when it is created), and
        # again after the scan's checkpoint, so the keys read the kept rows, not the files.
        if view == "user_ids":
            ordered_keys(spark.table("user_ids"), "user_id", "user_key").createOrReplaceTempView("user_keys")

    run_sql(spark, sql_template.load("events_classify.sql", {
        "known_types": list(EVENT_TYPES),
        "used_types": sorted(set(cfg.view_types) | set(cfg.click_types)),
        "window_start_ts": f"{cfg.window_start.isoformat()} 00:00:00+00:00",
        "window_end_ts": f"{window_end_excl.isoformat()} 00:00:00+00:00",
    }), after=define_user_keys)
    with timer.phase("scan"):
        kept, counts, by_reason = checkpoint_event_statuses(spark)   # the one scan of the raw files
    define_user_keys()
    held += [kept, checkpoint_view(spark, "user_keys")]   # sampled range bounds: computed once
    with timer.phase("user_keys"):
        n_users = spark.table("user_keys").count() if counts["in_scope"] else 0
        broadcast_if_small(spark, "user_keys", n_users)
    return held, counts, by_reason, n_users


def score_pairs(spark, cfg: Config, timer: cli.Timer) -> tuple:
    """The scoring SQL, statement by statement; the capped events (read by
    every later step) and the candidate pairs (counted, then ranked) are
    materialised once, like the DuckDB benchmark does with the same text.
    Returns ``(held frames, used-events row, pair-counts row)``."""
    statements = sql_template.load("cooccurrence_score.sql", cfg.score_params())
    cut = 1 + [view_name(s) for s in statements].index("cooc_capped_events")
    lo, hi = bound_units(cfg.lower), bound_units(cfg.upper)
    with timer.phase("cap"):
        held = run_sql(spark, statements[:cut])
        used_row = spark.sql("SELECT COUNT(*) AS used, COUNT(DISTINCT note_key) AS notes "
                             "FROM cooc_capped_events").collect()[0]
    with timer.phase("pairs"):
        held += run_sql(spark, statements[cut:])
        # Per source note: its candidates and how many are within the bounds;
        # each source with >= 1 in-bounds candidate writes min(t, that many) pairs.
        pair_counts = spark.sql(f"""
            SELECT COALESCE(SUM(n), 0) AS candidates, COALESCE(SUM(n_in), 0) AS in_bounds,
                   COALESCE(SUM(CASE WHEN n_in > 0 THEN 1 ELSE 0 END), 0) AS sources,
                   COALESCE(SUM(LEAST(n_in, {cfg.top})), 0) AS to_write
            FROM (SELECT src_key, COUNT(*) AS n,
                         SUM(CASE WHEN score_units BETWEEN {lo} AND {hi} THEN 1 ELSE 0 END) AS n_in
                  FROM cooc_pair_candidates GROUP BY src_key) per_source""").collect()[0]
    return held, used_row, pair_counts


def related_frame(spark, cfg: Config, rows: int):
    """The ranked pairs with note ids, laid out as the output files: ranges of
    source note ids (range partitioning: no single-partition step), each file
    sorted by (source, rank), so a reader looking for some sources prunes
    files by their footers' min/max, and reruns are diffable."""
    related = spark.sql(f"""
        SELECT s.note_id AS src_note_id, d.note_id AS dst_note_id,
               CAST(r.score_units AS DOUBLE) / {SCORE_SCALE} AS score,
               CAST(r.n_users AS BIGINT) AS n_users, CAST(r.pair_rank AS INT) AS rank,
               DATE '{cfg.window_start.isoformat()}' AS window_start,
               DATE '{cfg.run_date.isoformat()}' AS window_end
        FROM cooc_related r
        JOIN note_keys s ON s.note_key = r.src_key
        JOIN note_keys d ON d.note_key = r.dst_key""")
    files = output_files(rows, cfg.output_rows_per_file)
    return related.repartitionByRange(files, "src_note_id", "rank").sortWithinPartitions("src_note_id", "rank")


def quarantine_frame(spark, cfg: Config, rows: int):
    """The quarantined rows as files of at most ``output_rows_per_file`` rows,
    ranges of (source file, raw text): a stable layout on reruns."""
    files = output_files(rows, cfg.output_rows_per_file)
    return (spark.table("events_quarantine").repartitionByRange(files, "source", "raw")
            .sortWithinPartitions("source", "raw"))


def job_stats(cfg: Config, files: EventFiles, counts: dict, by_reason: dict, n_users: int,
              used_row, pair_counts, shuffle_partitions: int) -> dict:
    used = used_row["used"]
    stats = {
        "job": "cooccurrence",
        "code": code_digest(),
        "run_date": cfg.run_date.isoformat(),
        "window_start": cfg.window_start.isoformat(),
        "window_end": cfg.run_date.isoformat(),
        "params": cfg.params(),
        "inputs": {"events": str(cfg.events), "notes": str(cfg.notes), "contract_files": len(files.contract),
                   "landing_files": len(files.landing), "missing_days": len(files.missing_days),
                   "missing_days_first": files.missing_days[:10], "input_bytes": files.input_bytes,
                   "footer_rows": files.footer_rows},
        "spark": {"shuffle_partitions": shuffle_partitions},
        "events_in": sum(counts.values()),
        "quarantined": by_reason,
        "quarantined_total": counts["quarantined"],
        "outside_window": counts["outside_window"],
        "ignored_type": counts["ignored_type"],
        "capped": counts["in_scope"] - used,
        "used": used,
        "users": n_users,
        "notes": used_row["notes"],
        "candidate_pairs": pair_counts["candidates"],
        "pairs_in_bounds": pair_counts["in_bounds"],
        "pairs_written": int(pair_counts["to_write"]),
        "source_notes": pair_counts["sources"],
    }
    # Against a count the job did not define: the rows the input files' footers declare.
    # (``capped`` is in_scope - used by definition, so the sum of the parts alone proves nothing.)
    stats["reconciles"] = stats["events_in"] == files.footer_rows and stats["events_in"] == (
        stats["quarantined_total"] + stats["outside_window"] + stats["ignored_type"] + stats["capped"]
        + stats["used"])
    return stats


def run(spark, cfg: Config, files: EventFiles | None = None, timer: cli.Timer | None = None) -> dict:
    """Mine one run date; return the stats written to ``_stats.json``.

    Every path goes through the driver's Hadoop FileSystem
    (:func:`notellm.storage.for_spark`), qualified first, so listing, footer
    checks, staging and the commit see the filesystem the executors read.

    Spark work, in jobs (each action pays scheduling and code generation, so
    the count of actions is kept small; the stats come from aggregates over
    frames that are materialised anyway, never from one count() per figure):

    1. note keys (range partitioned, see :func:`jobs.spark_input.ordered_keys`):
       materialised, counted (the count decides the broadcast);
    2. classified events: one scan of the raw files; the rows later steps
       read (in scope, quarantined) are materialised narrow, and every
       status/quarantine-reason count is observed during that same job;
    3. user keys: materialised, counted (= users: the cap keeps >= 1 event per user);
    4. capped events: materialised; one aggregate gives used events and notes;
    5. candidate pairs: materialised; one aggregate per source note gives the
       candidate count, the in-bounds count, the source notes and the number
       of related pairs the top-t must write (sum of min(t, in-bounds));
    6. ranking + write of the pairs into a staging folder; the footers must count exactly (5);
    7. write of the quarantined rows likewise; the footers must count (2);
    8. both partitions marked and swapped in (:class:`jobs.spark_input.FolderCommit`):
       quarantine first, pairs last (the partition downstream waits for).

    Materialised = local checkpoints on a local master, Parquet under the
    work dir on a cluster (``cfg.checkpoint``). The shuffle partition count
    is sized from the input bytes unless set (``cfg.shuffle_partitions``).
    ``stats["timings"]`` holds the phases of ``timer`` (``<phase>_s``) and
    ``total_s``, the time of this call.
    """
    cfg.validate()
    timer = timer or cli.Timer()
    t0 = time.perf_counter()
    store = storage.for_spark(spark)
    events, notes_root, out, quarantine_out = qualify_all(store, cfg.events, cfg.notes, cfg.out, cfg.quarantine_out)
    if files is None:  # main() passes what it found before starting the JVM (one footer pass, not two)
        files = discover_event_files(store, events, cfg.window_days_list, cfg.allow_missing_days)
    notes = notes_files(store, notes_root)
    work_dir = storage.join(store.qualify(cfg.work_dir or storage.join(out, "_work")),
                            f"cooccurrence-{cfg.run_date.isoformat()}-{spark.sparkContext.applicationId}")
    configure_checkpoints(spark, cfg.checkpoint, work_dir)
    partitions = size_shuffle(spark, files.input_bytes, cfg.shuffle_partition_mb)
    pairs_commit = partition_commit(store, out, cfg.run_date)
    quarantine_commit = partition_commit(store, quarantine_out, cfg.run_date)
    held: list = []
    try:
        pairs_commit.recover()
        quarantine_commit.recover()
        with timer.phase("classify"):
            held, counts, by_reason, n_users = classify_events(spark, cfg, files, notes, timer)
        scored, used_row, pair_counts = score_pairs(spark, cfg, timer)
        held += scored
        stats = job_stats(cfg, files, counts, by_reason, n_users, used_row, pair_counts, partitions)
        with timer.phase("write_pairs"):
            pairs_commit.write(related_frame(spark, cfg, stats["pairs_written"]), contracts.PAIRS,
                               stats["pairs_written"])
        with timer.phase("write_quarantine"):
            quarantine_commit.write(quarantine_frame(spark, cfg, counts["quarantined"]), contracts.QUARANTINE,
                                    counts["quarantined"])
        phases = {f"{k}_s": v for k, v in timer.as_dict().items() if k != "total"}
        stats["timings"] = {**phases, "total_s": round(time.perf_counter() - t0, 3)}
        quarantine_commit.publish({"job": "cooccurrence", "run_date": cfg.run_date.isoformat(),
                                   "quarantined": by_reason, "quarantined_total": counts["quarantined"],
                                   "events_in": stats["events_in"]})
        pairs_commit.publish(stats)
    except BaseException:
        pairs_commit.abandon()
        quarantine_commit.abandon()
        raise
    finally:
        for df in held:
            release(df)
        store.delete(work_dir)
    return stats


def read_pairs(pairs_root: str, run_date) -> "pyarrow.Table":  # noqa: F821
    """Downstream read of one mined partition (local or pyarrow-reachable):
    refused unless it has _SUCCESS; reads the files the partition lists as data."""
    import pyarrow as pa

    part = storage.join(pairs_root, f"dt={run_date.isoformat() if hasattr(run_date, 'isoformat') else run_date}")
    try:
        require_success(storage.LOCAL, part, "pairs")
    except InputError as exc:
        raise contracts.ContractError(part, None, str(exc)) from exc
    tables = [contracts.read_table(storage.LOCAL.qualify(e.uri), contracts.PAIRS)
              for e in storage.LOCAL.list_files(part, ".parquet")]
    return pa.concat_tables(tables) if tables else contracts.empty_table(contracts.PAIRS)


# --------------------------------------------------------------------------
# CLI


def is_local_run(cfg: Config) -> bool:
    """A plain ``python -m`` run on a local master over local paths: the
    inputs can be checked before a JVM starts, with the same answer Spark's
    filesystem would give."""
    paths = (cfg.events, cfg.notes, cfg.out, cfg.quarantine_out)
    return (not launched_by_spark_submit() and cfg.master.startswith("local")
            and all(storage.scheme_of(p) in ("", "file") for p in paths))


def command(cfg: Config, timer: cli.Timer) -> dict:
    files = None
    if is_local_run(cfg):
        with timer.phase("check_inputs"):   # before paying for a JVM
            files = discover_event_files(storage.LOCAL, storage.LOCAL.qualify(cfg.events), cfg.window_days_list,
                                         cfg.allow_missing_days)
            notes_files(storage.LOCAL, cfg.notes)
    with timer.phase("spark_start"):
        spark = start_spark("notellm-cooccurrence", cfg)
    try:
        stats = run(spark, cfg, files, timer)
    finally:
        spark.stop()
    return {k: stats[k] for k in RESULT_KEYS}


def main(argv: list[str] | None = None) -> int:
    return cli.main(command, Config, argv, prog="python -m jobs.cooccurrence")


if __name__ == "__main__":
    sys.exit(main())
