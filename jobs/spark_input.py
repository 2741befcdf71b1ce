"""The Spark input layer and the SQL statement runner of the ``jobs/`` stage.

Used by the co-occurrence job, the split and ``bench/bench_cooccurrence.py``:

* input discovery (:mod:`jobs.input_files`, re-exported here): the window's
  committed event days and the notes files, before any JVM starts;
* the temp views every job reads (``events_input``, ``notes_input``,
  ``note_keys``);
* distributed keys (:func:`ordered_keys`), shuffle sizing from the input
  bytes, caching helpers (persist, checkpoint: local or Parquet under the
  job's work dir, broadcast of small key tables, release) and the
  ``_SUCCESS`` check of inputs (writing is :mod:`jobs.spark_output`);
* :func:`run_sql`: the statements of a ``sql/`` file, one by one, on Spark or
  DuckDB, materialising the same views on both.
"""

from __future__ import annotations

import logging
import math
from typing import Callable, Iterable

from jobs import sql_template
from jobs.input_files import (  # noqa: F401 - re-exported: the jobs' input layer in one import
    EventFiles,
    InputError,
    committed_day_files,
    discover_event_files,
    notes_files,
    parquet_files,
    qualify_all,
    read_metadata,
    read_schema,
    require_success,
)
from notellm import storage
from notellm.storage import StorageError
from notellm.timestamps import plausible_window, spark_sql, spark_sql_typed

log = logging.getLogger(__name__)

# Views of sql/cooccurrence_score.sql computed once and kept (read by several later statements).
MATERIALISED_VIEWS = ("cooc_capped_events", "cooc_pair_candidates")
# Spark setting (set by :func:`configure_checkpoints`) naming where checkpoints
# are staged as Parquet; unset = local checkpoints (executor block storage).
CHECKPOINT_DIR_CONF = "spark.notellm.checkpointDir"
CHECKPOINT_MODES = ("auto", "local", "reliable")


def register_inputs(spark, files: EventFiles, notes: list[str], window: tuple[int, int] | None = None) -> None:
    """Temp views events_input (both file forms in one shape) and note_keys.

    Times follow :mod:`notellm.timestamps`, the rule ingest applies: landing
    strings through its SQL form (not Spark's lenient cast, which accepts a
    missing offset or +99:99), typed times through the plausible window; a
    time that breaks it is NULL, which events_classify.sql quarantines as
    bad_timestamp."""
    window = window or plausible_window()
    from pyspark.sql import functions as F

    # Explicit read schemas (the footers were checked in discover_event_files):
    # Spark skips its schema-inference job and reads only these columns.
    parts = []
    if files.contract:
        df = spark.read.schema("user_id STRING, note_id STRING, event_type STRING, event_time TIMESTAMP") \
            .parquet(*files.contract)
        parts.append(df.select(
            "user_id", "note_id", "event_type",
            F.expr(spark_sql_typed("CAST(event_time AS TIMESTAMP)", window)).alias("event_time"),
            # Typed times need no text; events_classify.sql formats one only for a quarantined row
            # (formatting every row's time cost more than the rest of the classification).
            F.lit(None).cast("string").alias("event_time_text"),
            F.col("_metadata.file_path").alias("source")))
    if files.landing:
        df = spark.read.schema("user_id STRING, note_id STRING, event_type STRING, event_time STRING") \
            .parquet(*files.landing)
        parts.append(df.select(
            "user_id", "note_id", "event_type", F.expr(spark_sql("event_time", window)).alias("event_time"),
            F.col("event_time").alias("event_time_text"), F.col("_metadata.file_path").alias("source")))
    events = parts[0] if len(parts) == 1 else parts[0].unionByName(parts[1])
    events.createOrReplaceTempView("events_input")
    spark.read.parquet(*notes).createOrReplaceTempView("notes_input")   # every column: jobs.split reads more
    ordered_keys(spark.sql("SELECT DISTINCT note_id FROM notes_input"), "note_id", "note_key") \
        .createOrReplaceTempView("note_keys")


def ordered_keys(ids, id_col: str, key_col: str):
    """``(id, key)`` with BIGINT keys that are unique and in ``id`` order
    (key order = id order, so the SQL's tie-breaks on keys are tie-breaks on
    ids), computed without a single-partition step: the ids are range
    partitioned and sorted within each partition, and the key is
    ``monotonically_increasing_id()`` = partition index * 2^33 + position,
    which grows with the range. The keys are not dense (nothing needs them
    dense) and depend on the sampled range bounds, so checkpoint the frame
    (:func:`checkpoint_view`) before more than one query reads it."""
    from pyspark.sql import functions as F

    return (ids.repartitionByRange(id_col).sortWithinPartitions(id_col)
            .select(id_col, F.monotonically_increasing_id().alias(key_col)))



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


def is_local_master(spark) -> bool:
    return spark.sparkContext.master.startswith("local")


def configure_checkpoints(spark, mode: str, work_dir: str) -> str | None:
    """Choose how :func:`checkpoint_view` keeps materialised views; return the
    Parquet staging folder (None = local checkpoints).

    * ``local``: ``localCheckpoint`` (executor block storage; fast, but a lost
      executor loses blocks nothing can recompute, and the job fails);
    * ``reliable``: Parquet files under ``work_dir`` (a filesystem every
      executor reaches): a lost executor's tasks re-read them;
    * ``auto``: ``local`` when the master is local (one JVM: losing an
      executor means losing the job anyway), ``reliable`` on a cluster."""
    if mode not in CHECKPOINT_MODES:
        raise ValueError(f"checkpoint mode must be one of {CHECKPOINT_MODES}, got {mode!r}")
    reliable = mode == "reliable" or (mode == "auto" and not is_local_master(spark))
    if reliable:
        folder = storage.join(work_dir, "checkpoints")
        spark.conf.set(CHECKPOINT_DIR_CONF, folder)
        return folder
    spark.conf.unset(CHECKPOINT_DIR_CONF)
    return None


def size_shuffle(spark, input_bytes: int, partition_mb: int) -> int:
    """Size the shuffles from the data: AQE on, an advisory partition size of
    ``partition_mb``, and an initial partition count of
    ceil(input_bytes * SHUFFLE_EXPANSION / advisory) (at least
    ``spark.default.parallelism``), which AQE then coalesces. A count the user
    fixed (:data:`jobs.spark_session.SHUFFLE_FIXED_CONF`) is left alone.
    Returns the initial count."""
    from jobs.spark_session import SHUFFLE_FIXED_CONF

    advisory = partition_mb * 2**20
    explicit = spark.conf.get(SHUFFLE_FIXED_CONF, "false") == "true"
    spark.conf.set("spark.sql.adaptive.enabled", "true")
    spark.conf.set("spark.sql.adaptive.advisoryPartitionSizeInBytes", str(advisory))
    if explicit:
        return int(spark.conf.get("spark.sql.shuffle.partitions"))
    floor = max(2, spark.sparkContext.defaultParallelism)
    count = max(floor, math.ceil(input_bytes * SHUFFLE_EXPANSION / advisory))
    spark.conf.set("spark.sql.shuffle.partitions", str(count))
    spark.conf.set("spark.sql.adaptive.coalescePartitions.initialPartitionNum", str(count))
    return count


# Initial shuffle partitions per advisory partition of input Parquet. The
# largest shuffle stage of the job measured 0.77x the input bytes at 10M
# events and 1.82x at 100M on the standalone cluster (bench/bench_cooccurrence.py
# --cluster, from the event log; docs/benchmarks.md): the candidate pairs grow
# faster than the events. 4x leaves headroom, because AQE coalesces too many
# partitions but cannot split too few.
SHUFFLE_EXPANSION = 4.0


def persist_view(spark, view: str):
    """Cache a temp view (memory, spilling to disk) and point the view at the
    cached frame; the first action on it fills the cache, and later queries
    whose plans contain it read the cached rows (Spark matches them by plan).
    A lost block is recomputed from the lineage, so only deterministic views
    may be persisted (use :func:`checkpoint_view` otherwise)."""
    from pyspark import StorageLevel

    df = spark.table(view).persist(StorageLevel.MEMORY_AND_DISK)
    df.createOrReplaceTempView(view)
    return df


def checkpoint_view(spark, view: str, df=None):
    """Compute a temp view once (one Spark job), keep its rows and point the
    view at them, cutting the lineage; ``df`` (default: the view itself) is
    what gets computed, e.g. the view with an ``observe`` attached.

    Where the rows are kept is :func:`configure_checkpoints`' choice: local
    checkpoints, or Parquet under the job's work dir on a cluster (a lost
    executor then costs a re-read, not the job). Used where ``persist_view``
    would not help: a plan that reads the files' ``_metadata`` column never
    matches its own cache entry (the metadata attributes do not canonicalise
    alike), so every later query re-read and re-classified the raw files
    (found with the Spark event log: the raw scan ran once per action)."""
    df = spark.table(view) if df is None else df
    folder = spark.conf.get(CHECKPOINT_DIR_CONF, "")
    if folder:
        target = storage.join(folder, view)
        df.write.mode("overwrite").parquet(target)
        kept = spark.read.parquet(target)
    else:
        kept = df.localCheckpoint(eager=True)
    kept.createOrReplaceTempView(view)
    return kept


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


__all__ = ["CHECKPOINT_MODES", "EventFiles", "InputError", "MATERIALISED_VIEWS", "StorageError",
           "broadcast_if_small", "checkpoint_view", "configure_checkpoints", "discover_event_files",
           "notes_files", "ordered_keys", "parquet_files", "persist_view", "qualify_all", "register_inputs",
           "release", "require_success", "run_sql", "size_shuffle", "start_spark", "view_name"]
