"""One place that builds the SparkSession for every job in ``jobs/``.

Local defaults are chosen for a laptop or CI box: loopback networking (no
hostname lookup, no firewall prompts), no web UI, few shuffle partitions
until the job sizes them from its input (Spark's default of 200 makes tiny
jobs spend their time scheduling empty tasks), file lists listed on the driver (not by a Spark job of one task per
file), UTC session time zone (event days are UTC days), and the settings the
jobs' output protocol relies on:

* ``spark.sql.sources.partitionOverwriteMode=dynamic``: ``mode("overwrite")``
  replaces only the run-date partition being written, never its siblings.
* ``mapreduce.fileoutputcommitter.marksuccessfuljobs=false``: Hadoop must not
  write its own ``_SUCCESS``; the job writes ``_stats.json`` and then
  ``_SUCCESS`` itself (notellm.contracts.mark_success), so the marker comes last.
* ``spark.sql.requireAllClusterKeysForCoPartition=false``: the co-occurrence
  join on (user, time bucket) may reuse the existing partitioning by user
  instead of shuffling the events a second time.

On a cluster (``--master yarn``/``k8s://...``) the same builder is used; only
the local-mode extras (driver host, driver memory) are skipped.

Driver class-data sharing (optional): when ``NOTELLM_SPARK_CDS_ARCHIVE`` names
an existing archive built by ``python -m jobs.spark_cds``, a driver JVM started
here maps most of Spark's classes from it instead of loading them from the jars
(a session start of 8 s became 5.5 s on the development box, and the first
queries load fewer classes). The JVM validates the archive itself and runs
without it when it does not match (another JDK or class path: a warning) or is
damaged (silently). Paths with whitespace or quotes are refused here, because
Spark splits ``extraJavaOptions`` on whitespace and the JVM would then fail.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)
DEFAULT_MASTER = "local[*]"
CDS_ARCHIVE_ENV = "NOTELLM_SPARK_CDS_ARCHIVE"
# "true" when the user fixed spark.sql.shuffle.partitions; the jobs then do not size it from their input.
SHUFFLE_FIXED_CONF = "spark.notellm.shufflePartitionsFixed"


def usable_archive_path(path: str) -> bool:
    """A path that survives Spark's whitespace split of ``extraJavaOptions``
    (no spaces, tabs or quotes); otherwise say why and do without the archive."""
    if any(ch.isspace() or ch in "'\"" for ch in path):
        log.warning("not using driver class-data sharing: the path %r has whitespace or quotes, "
                    "which Spark's option splitting would break (move the archive)", path)
        return False
    return True


def cds_java_options(existing: str = "", archive: str | None = None) -> str:
    """``existing`` driver Java options plus ``-XX:SharedArchiveFile`` for the
    archive named by ``archive`` or ``$NOTELLM_SPARK_CDS_ARCHIVE``, if the file
    exists; otherwise ``existing`` unchanged. ``-Xshare:auto`` (the JVM default,
    stated so that no inherited ``-Xshare:on`` makes a stale archive fatal) is
    added with it. Options that already choose an archive or a sharing mode
    (``-Xshare:off``) are left as they are."""
    path = archive if archive is not None else os.environ.get(CDS_ARCHIVE_ENV, "")
    if (not path or not os.path.isfile(path) or "SharedArchiveFile" in existing
            or "ArchiveClassesAtExit" in existing or "-Xshare:" in existing or not usable_archive_path(path)):
        return existing
    return " ".join(part for part in (existing, f"-XX:SharedArchiveFile={path}", "-Xshare:auto") if part)


def default_shuffle_partitions(master: str) -> int:
    """Local: 2 tasks per core (at least 4). Cluster: Spark's default of 200."""
    if master.startswith("local"):
        cores = os.cpu_count() or 2
        inner = master[master.find("[") + 1: master.find("]")] if "[" in master else "1"
        if inner.isdigit():
            cores = int(inner)
        return max(4, 2 * cores)
    return 200


def launched_by_spark_submit() -> bool:
    """True inside a driver started by ``spark-submit`` (its JVM hands PySpark a gateway)."""
    return bool(os.environ.get("PYSPARK_GATEWAY_PORT"))


def build_spark(app_name: str, master: str = DEFAULT_MASTER, shuffle_partitions: int | None = None,
                driver_memory: str | None = "4g", extra_conf: dict | None = None):
    """Return a SparkSession configured for the ``jobs/`` stage.

    ``driver_memory`` only takes effect when this call starts the JVM (a plain
    ``python -m jobs...``); under ``spark-submit`` pass ``--driver-memory``.
    """
    from pyspark import SparkConf
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if launched_by_spark_submit():
        # spark-submit already chose the master (e.g. from Airflow's spark connection);
        # overriding it here would silently run a cluster job in local mode.
        from pyspark import SparkContext

        SparkContext._ensure_initialized()  # connect to spark-submit's JVM so SparkConf sees its settings
        master = SparkConf().get("spark.master", master)
    else:
        builder = builder.master(master)
    submitted = SparkConf().getAll() if launched_by_spark_submit() else []
    user_fixed = shuffle_partitions is not None or any(k == "spark.sql.shuffle.partitions" for k, _ in submitted) \
        or "spark.sql.shuffle.partitions" in (extra_conf or {})
    conf = {
        "spark.sql.session.timeZone": "UTC",
        # A count the user fixed (flag, --conf of spark-submit or of the job) is kept as it is;
        # otherwise this default holds until the job sizes the shuffles from its input.
        SHUFFLE_FIXED_CONF: str(user_fixed).lower(),
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
        "spark.sql.requireAllClusterKeysForCoPartition": "false",
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.ui.showConsoleProgress": "false",
    }
    if not any(k == "spark.sql.shuffle.partitions" for k, _ in submitted):
        conf["spark.sql.shuffle.partitions"] = str(shuffle_partitions or default_shuffle_partitions(master))
    if master.startswith("local"):
        conf.update({
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            "spark.ui.enabled": "false",
            # The jobs pass explicit file lists (one file per day: 4,009 for a 15-year
            # window of a real dump). Above 32 paths Spark lists them with a Spark job
            # of one task per path: 16-19 s for those 4,009 local files in an A/B of
            # this setting alone, against about 1 s on the driver. On a cluster
            # (object stores, HDFS) the parallel listing is kept.
            "spark.sql.sources.parallelPartitionDiscovery.threshold": "1000000",
        })
        if driver_memory:
            conf["spark.driver.memory"] = driver_memory
    conf.update(extra_conf or {})
    if not launched_by_spark_submit():  # under spark-submit the JVM is already running
        given = conf.get("spark.driver.extraJavaOptions", "")
        java_options = cds_java_options(given)
        if java_options != given:
            # The JVM drops a damaged archive silently, so say which one was asked for.
            log.info("driver class-data sharing from %s", os.environ[CDS_ARCHIVE_ENV])
            conf["spark.driver.extraJavaOptions"] = java_options
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
