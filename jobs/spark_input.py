"""The Spark input layer and the SQL statement runner of the ``jobs/`` stage.

Used by the co-occurrence job, the split and ``bench/bench_cooccurrence.py``:

* input discovery, pure Python before any JVM starts (bad input fails fast):
  the window's event files, told apart as contract or landing files by their
  Parquet footers, and the notes files;
* the temp views every job reads (``events_input``, ``notes_input``,
  ``note_keys``);
* caching helpers (persist, local checkpoint, broadcast of small key tables,
  release) and the partition writer that checks its footers;
* :func:`run_sql`: the statements of a ``sql/`` file, one by one, on Spark or
  DuckDB, materialising the same views on both.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import shutil
from pathlib import Path
from typing import Callable, Iterable

import pyarrow.parquet as pq

from jobs import sql_template
from notellm import contracts
from notellm.cli import BadInput
from notellm.contracts import ContractError

log = logging.getLogger(__name__)

# Views of sql/cooccurrence_score.sql computed once and kept (read by several later statements).
MATERIALISED_VIEWS = ("cooc_capped_events", "cooc_pair_candidates")


class InputError(BadInput):
    """Bad input that stops the job before any output is touched (exit 2, bad_input)."""


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



def view_name(statement: str) -> str:
    """The view a ``CREATE OR REPLACE TEMPORARY VIEW name AS ...`` statement defines."""
    return statement.split("VIEW", 1)[1].split()[0]


def run_sql(engine, statements: Iterable[str], materialised: tuple[str, ...] = MATERIALISED_VIEWS,
            after: Callable[[str], None] | None = None) -> list:
    """Run ``statements`` (each defines one temp view) in order on ``engine``, a
    SparkSession or a DuckDB connection; the ``materialised`` views are
    computed once: on Spark checkpointed (see :func:`checkpoint_view`), on
    DuckDB created as temporary tables. ``after(view)`` runs after each
    statement. Returns the checkpointed Spark frames (release them when done)."""
    held = []
    spark = hasattr(engine, "sparkContext")
    for statement in statements:
        view = view_name(statement)
        keep = view in materialised
        if spark:
            engine.sql(statement)
            if keep:
                held.append(checkpoint_view(engine, view))
        else:
            if keep:
                engine.execute(f"DROP VIEW IF EXISTS {view}")
                statement = statement.replace("TEMPORARY VIEW", "TEMPORARY TABLE", 1)
            engine.execute(statement)
        if after is not None:
            after(view)
    return held


def run_sql_file(engine, name: str, params: dict, **kwargs) -> list:
    """:func:`run_sql` over the statements of ``sql/<name>`` rendered with ``params``."""
    return run_sql(engine, sql_template.load(name, params), **kwargs)


def start_spark(app_name: str, options):
    """A SparkSession for a job's :class:`jobs.config.SparkOptions`."""
    from jobs.spark_session import build_spark

    return build_spark(app_name, options.master, options.shuffle_partitions, options.driver_memory,
                       options.spark_conf())


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
