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
``spark-submit jobs/cooccurrence.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import shutil
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # spark-submit jobs/cooccurrence.py: make `jobs` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow.parquet as pq

from jobs import sql_template
from jobs.reference import SCORE_SCALE, bound_units
from notellm import contracts
from notellm.contracts import EVENT_TYPES, ContractError

DEFAULT_VIEW_TYPES = ("view", "click")
DEFAULT_CLICK_TYPES = ("click",)
ENGAGEMENT_TYPES = ("ask", "answer", "comment", "favourite", "rate")
MATERIALISED_VIEWS = ("cooc_capped_events", "cooc_pair_candidates")
QUARANTINE_REASONS = ("null_user", "null_note", "bad_timestamp", "unknown_event_type", "unknown_note")
EVENT_STATUSES = ("quarantined", "outside_window", "ignored_type", "in_scope")
# The only statuses a later step reads (user keys, scoring events, quarantine output).
KEPT_STATUSES = ("in_scope", "quarantined")


class InputError(Exception):
    """Bad input that stops the job before any output is touched."""


@dataclasses.dataclass(frozen=True)
class Config:
    events: Path
    notes: Path
    out: Path
    quarantine_out: Path
    run_date: dt.date
    window_days: int = 7
    upper: float = 30.0
    lower: float = 0.01
    top: int = 10
    view_types: tuple[str, ...] = DEFAULT_VIEW_TYPES
    click_types: tuple[str, ...] = DEFAULT_CLICK_TYPES
    max_events_per_user: int = 200      # 0 = no cap
    max_gap_hours: float = 24.0         # 0 = no limit besides the window
    allow_missing_days: bool = False

    @property
    def window_start(self) -> dt.date:
        return self.run_date - dt.timedelta(days=self.window_days - 1)

    @property
    def window_days_list(self) -> list[dt.date]:
        return [self.window_start + dt.timedelta(days=i) for i in range(self.window_days)]

    @property
    def max_gap_us(self) -> int:
        if self.max_gap_hours <= 0:
            # The window bounds every gap; one extra day keeps all pairs in two buckets.
            return (self.window_days + 1) * 86_400_000_000
        return int(round(self.max_gap_hours * 3_600_000_000))

    def validate(self) -> None:
        if self.window_days < 1:
            raise InputError(f"--window-days must be >= 1, got {self.window_days}")
        if self.top < 1:
            raise InputError(f"--top must be >= 1, got {self.top}")
        if not 0 <= self.lower <= self.upper:
            raise InputError(f"need 0 <= --lower <= --upper, got lower={self.lower} upper={self.upper}")
        if self.max_events_per_user < 0 or self.max_gap_hours < 0:
            raise InputError("--max-events-per-user and --max-gap-hours must be >= 0 (0 = off)")
        if self.max_gap_hours and self.max_gap_us < 1_000_000:
            raise InputError(f"--max-gap-hours must be at least one second, got {self.max_gap_hours}")
        for flag, types in (("--view-types", self.view_types), ("--click-types", self.click_types)):
            unknown = sorted(set(types) - set(EVENT_TYPES))
            if not types or unknown:
                raise InputError(f"{flag}: unknown or empty event types {unknown or list(types)}; "
                                 f"known: {', '.join(EVENT_TYPES)}")

    def score_params(self) -> dict:
        return {
            "view_types": list(self.view_types),
            "click_types": list(self.click_types),
            "max_events_per_user": self.max_events_per_user or 2 ** 62,
            "max_gap_us": self.max_gap_us,
            "score_scale": SCORE_SCALE,
            "lower_units": bound_units(self.lower),
            "upper_units": bound_units(self.upper),
            "top": self.top,
        }


# --------------------------------------------------------------------------
# input discovery (pure Python, before any JVM starts: bad input fails fast)


@dataclasses.dataclass
class EventFiles:
    contract: list[str]
    landing: list[str]
    missing_days: list[str]

    @property
    def all(self) -> list[str]:
        return self.contract + self.landing


def parquet_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*.parquet") if not p.name.startswith((".", "_")))


def discover_event_files(events_root: Path, days: list[dt.date], allow_missing_days: bool) -> EventFiles:
    """List the window's event files and tell contract files (typed
    event_time) from landing files (all strings) by their Parquet footer."""
    if not events_root.is_dir():
        raise InputError(f"events: {events_root} is not a directory (expected {events_root}/dt=YYYY-MM-DD/*.parquet)")
    found = EventFiles([], [], [])
    for day in days:
        files = parquet_files(contracts.partition_dir(events_root, day))
        if not files:
            found.missing_days.append(day.isoformat())
        for path in files:
            try:
                schema = pq.read_schema(path)
            except Exception as exc:  # noqa: BLE001 - any unreadable footer is the same input error
                raise InputError(f"events: {path}: unreadable as Parquet: {exc}") from exc
            idx = schema.get_field_index("event_time")
            form = contracts.EVENTS_LANDING if idx >= 0 and str(schema.field(idx).type) in ("string", "large_string") \
                else contracts.EVENTS
            try:
                contracts.validate_schema(schema, form, str(path))
            except ContractError as exc:
                raise InputError(f"events: {exc}") from exc
            (found.landing if form is contracts.EVENTS_LANDING else found.contract).append(str(path))
    if found.missing_days and (not allow_missing_days or not found.all):
        shown = ", ".join(found.missing_days[:10]) + (f" (+{len(found.missing_days) - 10} more)"
                                                       if len(found.missing_days) > 10 else "")
        raise InputError(f"events: no Parquet files for day(s) {shown} of the window "
                         f"{days[0]}..{days[-1]} under {events_root} (expected dt=YYYY-MM-DD/*.parquet; "
                         f"--allow-missing-days accepts gaps)")
    return found


def notes_files(notes: Path) -> list[str]:
    files = [notes] if notes.is_file() else parquet_files(notes) if notes.is_dir() else []
    if not files:
        raise InputError(f"notes: no Parquet file at {notes}")
    for path in files:
        try:
            contracts.validate_schema(pq.read_schema(path), contracts.NOTES, str(path))
        except ContractError as exc:
            raise InputError(f"notes: {exc}") from exc
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"notes: {path}: unreadable as Parquet: {exc}") from exc
    return [str(p) for p in files]


# --------------------------------------------------------------------------
# Spark stages


def register_inputs(spark, files: EventFiles, notes: list[str]) -> None:
    """Temp views events_input (both file forms in one shape) and note_keys."""
    from pyspark.sql import functions as F

    # Explicit read schemas (the footers were checked in discover_event_files):
    # Spark skips its schema-inference job and reads only these columns.
    parts = []
    if files.contract:
        df = spark.read.schema("user_id STRING, note_id STRING, event_type STRING, event_time TIMESTAMP") \
            .parquet(*files.contract)
        parts.append(df.select(
            "user_id", "note_id", "event_type", F.col("event_time").cast("timestamp").alias("event_time"),
            # Typed times need no text; events_classify.sql formats one only for a quarantined row
            # (formatting every row's time cost more than the rest of the classification).
            F.lit(None).cast("string").alias("event_time_text"),
            F.col("_metadata.file_path").alias("source")))
    if files.landing:
        df = spark.read.schema("user_id STRING, note_id STRING, event_type STRING, event_time STRING") \
            .parquet(*files.landing)
        parts.append(df.select(
            "user_id", "note_id", "event_type", F.expr("try_cast(event_time AS TIMESTAMP)").alias("event_time"),
            F.col("event_time").alias("event_time_text"), F.col("_metadata.file_path").alias("source")))
    events = parts[0] if len(parts) == 1 else parts[0].unionByName(parts[1])
    events.createOrReplaceTempView("events_input")
    spark.read.parquet(*notes).createOrReplaceTempView("notes_input")   # every column: jobs.split reads more
    # Dense keys in note_id order: integer joins/sorts, and key order = id order for tie-breaking.
    spark.sql("SELECT note_id, CAST(ROW_NUMBER() OVER (ORDER BY note_id) AS BIGINT) AS note_key "
              "FROM (SELECT DISTINCT note_id FROM notes_input) n").createOrReplaceTempView("note_keys")


def run_sql_file(spark, name: str, params: dict) -> None:
    for statement in sql_template.load(name, params):
        spark.sql(statement)


def persist_view(spark, view: str):
    """Cache a temp view (memory, spilling to disk) and point the view at the
    cached frame; the first action on it fills the cache, and later queries
    whose plans contain it read the cached rows (Spark matches them by plan)."""
    from pyspark import StorageLevel

    df = spark.table(view).persist(StorageLevel.MEMORY_AND_DISK)
    df.createOrReplaceTempView(view)
    return df


def checkpoint_view(spark, view: str):
    """Compute a temp view once (one Spark job), keep its rows on the executors
    (memory, spilling to disk) and point the view at them, cutting the lineage.

    Used where ``persist_view`` would not help: a plan that reads the files'
    ``_metadata`` column never matches its own cache entry (the metadata
    attributes do not canonicalise alike), so every later query re-read and
    re-classified the raw files (found with the Spark event log: the raw scan
    ran once per action)."""
    df = spark.table(view).localCheckpoint(eager=True)
    df.createOrReplaceTempView(view)
    return df


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
    kept = (spark.table("events_status").observe(observation, *metrics)
            .where(F.col("status").isin(*KEPT_STATUSES)).localCheckpoint(eager=True))
    kept.createOrReplaceTempView("events_status")
    values = observation.get   # published when the checkpoint's job finished
    missing = [m for m in [f"status_{s}" for s in EVENT_STATUSES] + [f"reason_{r}" for r in QUARANTINE_REASONS]
               if m not in values]
    if missing:
        raise RuntimeError(f"Spark returned no observed event counts for {missing}; the counts would not reconcile")
    counts = {s: int(values[f"status_{s}"]) for s in EVENT_STATUSES}
    by_reason = {r: int(values[f"reason_{r}"]) for r in QUARANTINE_REASONS}
    return kept, counts, by_reason


def broadcast_if_small(spark, view: str, rows: int, bytes_per_row: int = 64) -> bool:
    """Mark a checkpointed key table for broadcast when ``rows`` of it fit
    under ``spark.sql.autoBroadcastJoinThreshold``.

    Spark cannot size a checkpoint itself (its estimate is the default, i.e.
    huge), so it would shuffle millions of events by user id only to join
    them with a table of a few thousand users, and then shuffle them again by
    user key for the cap. The row count is known from the stats, so the
    decision uses it, and honours the threshold the user configured (-1 = off)."""
    from pyspark.sql import functions as F

    threshold = spark.conf.get("spark.sql.autoBroadcastJoinThreshold", "10485760")
    limit = _bytes(threshold)
    if limit < 0 or rows * bytes_per_row > limit:
        return False
    F.broadcast(spark.table(view)).createOrReplaceTempView(view)
    return True


def _bytes(text: str) -> int:
    text = str(text).strip().lower()
    units = {"b": 1, "k": 2**10, "kb": 2**10, "m": 2**20, "mb": 2**20, "g": 2**30, "gb": 2**30}
    for suffix in sorted(units, key=len, reverse=True):
        if text.endswith(suffix) and text[: -len(suffix)].strip().lstrip("-").isdigit():
            return int(text[: -len(suffix)]) * units[suffix]
    return int(text)


def release(df) -> None:
    """Free a persisted or checkpointed frame's blocks (a long-lived session,
    e.g. a test run or a notebook, would otherwise keep them until it stops)."""
    df.unpersist()
    try:  # a local checkpoint is an RDD persisted outside the SQL cache manager
        plan = df._jdf.queryExecution().analyzed()
        if plan.getClass().getSimpleName() == "LogicalRDD":
            plan.rdd().unpersist(False)
    except Exception:  # noqa: BLE001 - best effort; Spark Connect has no JVM handle
        pass


def check_written(part: Path, contract, rows: int) -> None:
    """Check a written partition from its Parquet footers only: every file
    has the contract's columns and types, the non-nullable columns have no
    nulls (row-group statistics) and the row counts add up to ``rows``.
    Reading footers costs the same for 10 rows or 10^9; reading the data
    back, as an earlier version did, cost a Spark job per output."""
    files = parquet_files(part)
    found = 0
    for path in files:
        meta = pq.ParquetFile(path).metadata
        schema = meta.schema.to_arrow_schema()
        contracts.validate_schema(schema, contract, str(path))
        found += meta.num_rows
        for field in contract.schema:
            if field.nullable:
                continue
            idx = meta.schema.names.index(field.name)
            for g in range(meta.num_row_groups):
                st = meta.row_group(g).column(idx).statistics
                if st is not None and st.has_null_count and st.null_count:
                    raise ContractError(str(path), field.name,
                                        f"{st.null_count} null value(s) in a non-nullable column")
    if found != rows:
        raise RuntimeError(f"{part}: expected {rows} rows but the Parquet footers of {len(files)} file(s) "
                           f"count {found}")


def write_partition(df, root: Path, run_date: dt.date, contract, stats: dict, rows: int) -> Path:
    """Replace ``root/dt=run_date`` with ``df`` (dynamic partition overwrite),
    check the written files under ``contract`` (footers), then write stats
    and _SUCCESS."""
    from pyspark.sql import functions as F

    part = contracts.partition_dir(root, run_date)
    if rows == 0:
        # Spark writes no partition for an empty frame, which would leave a stale one.
        if part.exists():
            shutil.rmtree(part)
        contracts.write_table(contracts.empty_table(contract), part / "part-00000.parquet", contract)
    else:
        (df.withColumn("dt", F.lit(run_date.isoformat()))
           .write.mode("overwrite").partitionBy("dt").parquet(str(root)))
    check_written(part, contract, rows)
    contracts.mark_success(part, stats)
    return part


def run(spark, cfg: Config, files: EventFiles | None = None) -> dict:
    """Mine one run date; return the stats written to ``_stats.json``.

    Spark work, in jobs (each action pays scheduling and code generation, so
    the count of actions is kept small; the stats come from aggregates over
    frames that are cached anyway, never from one count() per figure):

    1. note keys: cached, counted (tiny; the count gives the cache its real
       size, so the joins on it broadcast when it is small);
    2. classified events: one scan of the raw files; the rows later steps
       read (in scope, quarantined) are cached narrow, and every
       status/quarantine-reason count is observed during that same job;
    3. user keys: cached, counted (= users: the cap keeps >= 1 event per user);
    4. capped events: cached; one aggregate gives used events and notes;
    5. candidate pairs: cached; one aggregate per source note gives the
       candidate count, the in-bounds count, the source notes and the number
       of related pairs the top-t must write (sum of min(t, in-bounds));
    6. ranking + write of the pairs; the footers must count exactly (5);
    7. write of the quarantined rows (from the cache); footers must count (2).
    """
    cfg.validate()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if files is None:  # main() passes what it found before starting the JVM (one footer pass, not two)
        files = discover_event_files(cfg.events, cfg.window_days_list, cfg.allow_missing_days)
    notes = notes_files(cfg.notes)
    register_inputs(spark, files, notes)
    persisted = [persist_view(spark, "note_keys")]
    spark.table("note_keys").count()
    timings["inputs_s"] = time.perf_counter() - t0   # part of classify_s: file index, note keys
    window_end_excl = cfg.run_date + dt.timedelta(days=1)
    run_sql_file(spark, "events_classify.sql", {
        "known_types": list(EVENT_TYPES),
        "used_types": sorted(set(cfg.view_types) | set(cfg.click_types)),
        "window_start_ts": f"{cfg.window_start.isoformat()} 00:00:00+00:00",
        "window_end_ts": f"{window_end_excl.isoformat()} 00:00:00+00:00",
    })
    t = time.perf_counter()
    kept, counts, by_reason = checkpoint_event_statuses(spark)   # the one scan of the raw files
    timings["scan_s"] = time.perf_counter() - t   # part of classify_s
    checkpointed = [kept]
    checkpointed.append(checkpoint_view(spark, "user_keys"))
    n_users = spark.table("user_keys").count() if counts["in_scope"] else 0
    broadcast_if_small(spark, "user_keys", n_users)
    timings["classify_s"] = time.perf_counter() - t0

    # The scoring SQL, statement by statement; the capped events (read by
    # every later step) and the candidate pairs (counted, then ranked) are
    # materialised once, like the DuckDB benchmark does with the same text.
    t = time.perf_counter()
    lo, hi = bound_units(cfg.lower), bound_units(cfg.upper)
    for statement in sql_template.load("cooccurrence_score.sql", cfg.score_params()):
        spark.sql(statement)
        view = statement.split("VIEW", 1)[1].split()[0]
        if view in MATERIALISED_VIEWS:
            checkpointed.append(checkpoint_view(spark, view))
        if view == "cooc_capped_events":
            used_row = spark.sql("SELECT COUNT(*) AS used, COUNT(DISTINCT note_key) AS notes "
                                 "FROM cooc_capped_events").collect()[0]
            timings["cap_s"] = time.perf_counter() - t
            t = time.perf_counter()
        if view == "cooc_pair_candidates":
            # Per source note: its candidates and how many are within the bounds;
            # each source with >= 1 in-bounds candidate writes min(t, that many) pairs.
            pair_counts = spark.sql(f"""
                SELECT COALESCE(SUM(n), 0) AS candidates, COALESCE(SUM(n_in), 0) AS in_bounds,
                       COALESCE(SUM(CASE WHEN n_in > 0 THEN 1 ELSE 0 END), 0) AS sources,
                       COALESCE(SUM(LEAST(n_in, {cfg.top})), 0) AS to_write
                FROM (SELECT src_key, COUNT(*) AS n,
                             SUM(CASE WHEN score_units BETWEEN {lo} AND {hi} THEN 1 ELSE 0 END) AS n_in
                      FROM cooc_pair_candidates GROUP BY src_key) per_source""").collect()[0]
            timings["pairs_s"] = time.perf_counter() - t

    t = time.perf_counter()
    related = spark.sql(f"""
        SELECT s.note_id AS src_note_id, d.note_id AS dst_note_id,
               CAST(r.score_units AS DOUBLE) / {SCORE_SCALE} AS score,
               CAST(r.n_users AS BIGINT) AS n_users, CAST(r.pair_rank AS INT) AS rank,
               DATE '{cfg.window_start.isoformat()}' AS window_start,
               DATE '{cfg.run_date.isoformat()}' AS window_end
        FROM cooc_related r
        JOIN note_keys s ON s.note_key = r.src_key
        JOIN note_keys d ON d.note_key = r.dst_key""")
    n_related = int(pair_counts["to_write"])
    # One sorted file: the output is at most t rows per note, and a stable layout makes reruns diffable.
    out_df = related.repartition(1).sortWithinPartitions("src_note_id", "rank")

    used = used_row["used"]
    stats = {
        "job": "cooccurrence",
        "run_date": cfg.run_date.isoformat(),
        "window_start": cfg.window_start.isoformat(),
        "window_end": cfg.run_date.isoformat(),
        "params": {k: v for k, v in dataclasses.asdict(cfg).items()
                   if k not in ("events", "notes", "out", "quarantine_out", "run_date")},
        "inputs": {"events": str(cfg.events), "notes": str(cfg.notes), "contract_files": len(files.contract),
                   "landing_files": len(files.landing), "missing_days": len(files.missing_days),
                   "missing_days_first": files.missing_days[:10]},
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
        "pairs_written": n_related,
        "source_notes": pair_counts["sources"],
    }
    stats["reconciles"] = stats["events_in"] == (stats["quarantined_total"] + stats["outside_window"]
                                                 + stats["ignored_type"] + stats["capped"] + stats["used"])
    write_partition(out_df, cfg.out, cfg.run_date, contracts.PAIRS, stats, n_related)
    timings["write_pairs_s"] = time.perf_counter() - t

    t = time.perf_counter()
    quarantine = spark.table("events_quarantine")
    q_stats = {"job": "cooccurrence", "run_date": cfg.run_date.isoformat(), "quarantined": by_reason,
               "quarantined_total": counts["quarantined"], "events_in": stats["events_in"]}
    write_partition(quarantine.repartition(1), cfg.quarantine_out, cfg.run_date, contracts.QUARANTINE,
                    q_stats, counts["quarantined"])
    timings["write_quarantine_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    stats["timings"] = {k: round(v, 3) for k, v in timings.items()}
    # Rewrite the stats with the final timings (the marker is rewritten last).
    contracts.mark_success(contracts.partition_dir(cfg.out, cfg.run_date), stats)
    for df in (*persisted, *checkpointed):
        release(df)
    return stats


def read_pairs(pairs_root: str | Path, run_date) -> "pyarrow.Table":  # noqa: F821
    """Downstream read of one mined partition: refused unless it has _SUCCESS."""
    part = contracts.partition_dir(pairs_root, run_date)
    contracts.require_success(part)
    return contracts.read_table(part, contracts.PAIRS)


# --------------------------------------------------------------------------
# CLI


def _types(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a YYYY-MM-DD date: {text!r}") from exc


def _conf(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jobs.cooccurrence", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--events", required=True, type=Path, help="events root with dt=YYYY-MM-DD/*.parquet")
    p.add_argument("--notes", required=True, type=Path, help="notes Parquet file or directory (NOTES contract)")
    p.add_argument("--out", required=True, type=Path, help="pairs root; writes <out>/dt=<run date>/")
    p.add_argument("--quarantine-out", required=True, type=Path, help="quarantine root; writes <root>/dt=<run date>/")
    p.add_argument("--run-date", required=True, type=_date, help="last day of the window (UTC), YYYY-MM-DD")
    p.add_argument("--window-days", type=int, default=7)
    p.add_argument("--upper", type=float, default=30.0, help="drop candidates with score above u")
    p.add_argument("--lower", type=float, default=0.01, help="drop candidates with score below l")
    p.add_argument("--top", type=int, default=10, help="related notes kept per source note (t)")
    p.add_argument("--view-types", type=_types, default=DEFAULT_VIEW_TYPES,
                   help="comma-separated event types that count as viewing A")
    p.add_argument("--click-types", type=_types, default=DEFAULT_CLICK_TYPES,
                   help="comma-separated event types that count as clicking B")
    p.add_argument("--engagement", action="store_true",
                   help=f"public engagement data: view = click = {','.join(ENGAGEMENT_TYPES)}")
    p.add_argument("--max-events-per-user", type=int, default=200, help="cap per user and window (0 = none)")
    p.add_argument("--max-gap-hours", type=float, default=24.0, help="max hours from view A to click B (0 = window)")
    p.add_argument("--allow-missing-days", action="store_true", help="accept days of the window without files")
    p.add_argument("--master", default="local[*]")
    p.add_argument("--shuffle-partitions", type=int, default=None)
    p.add_argument("--driver-memory", default="4g", help="local mode only (JVM started by this process)")
    p.add_argument("--conf", action="append", default=[], type=_conf, metavar="KEY=VALUE",
                   help="extra Spark setting (repeatable), applied after the job's defaults")
    return p


def config_from_args(args) -> Config:
    view, click = args.view_types, args.click_types
    if args.engagement:
        view = click = ENGAGEMENT_TYPES
    return Config(events=args.events, notes=args.notes, out=args.out, quarantine_out=args.quarantine_out,
                  run_date=args.run_date, window_days=args.window_days, upper=args.upper, lower=args.lower,
                  top=args.top, view_types=tuple(view), click_types=tuple(click),
                  max_events_per_user=args.max_events_per_user, max_gap_hours=args.max_gap_hours,
                  allow_missing_days=args.allow_missing_days)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    try:
        cfg.validate()
        # Check the inputs before paying for a JVM.
        files = discover_event_files(cfg.events, cfg.window_days_list, cfg.allow_missing_days)
        notes_files(cfg.notes)
    except InputError as exc:
        print(f"cooccurrence: error: {exc}", file=sys.stderr)
        return 2
    from jobs.spark_session import build_spark

    spark = build_spark("notellm-cooccurrence", args.master, args.shuffle_partitions, args.driver_memory,
                        dict(args.conf))
    try:
        stats = run(spark, cfg, files)
    except InputError as exc:
        print(f"cooccurrence: error: {exc}", file=sys.stderr)
        return 2
    finally:
        spark.stop()
    print(json.dumps({k: stats[k] for k in ("run_date", "events_in", "quarantined_total", "outside_window",
                                            "ignored_type", "capped", "used", "candidate_pairs",
                                            "pairs_in_bounds", "pairs_written", "timings")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
