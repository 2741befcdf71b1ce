"""Build a class-data-sharing (CDS) archive for the Spark driver JVM.

A Spark driver loads some 16k classes (JDK and 277 pyspark jars) to start and
run a first query; on the 2-core development box a ``SparkSession`` took 8 s
to start without an archive and 5.5 s with one, paid by every job and every
Airflow task.
Java 13+ can record the classes a run loaded into a dynamic archive
(``-XX:ArchiveClassesAtExit``) and map them on later starts
(``-XX:SharedArchiveFile``). This command records one from a real, small run of
the co-occurrence job (generated sample with malformed landing rows, so the
quarantine path is covered too) and publishes it atomically; the jobs use it
when ``NOTELLM_SPARK_CDS_ARCHIVE`` names it (see ``jobs.spark_session``).

    python -m jobs.spark_cds --out var/spark-cds/driver.jsa
    export NOTELLM_SPARK_CDS_ARCHIVE=$PWD/var/spark-cds/driver.jsa

(``--help`` lists the settings; the result is one JSON line with the archive
path, its size and the recording time.)

The archive is tied to the JDK build and to the class path of the pyspark
installation that recorded it. Rebuild it after upgrading either; a stale or
damaged archive is only ignored by the JVM (a mismatch with a warning, a damaged
file silently), never fatal. Classes from
signed jars (Janino) cannot be archived; the JVM says so while recording.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jobs.config import REPO, SparkCdsConfig
from jobs.spark_session import CDS_ARCHIVE_ENV
from notellm import cli
from notellm.config import defaults
from notellm.files import atomic_path

log = logging.getLogger(__name__)
RUN_DATE = "2026-11-24"
_DEFAULTS = defaults(SparkCdsConfig)


def record(out: Path, master: str = _DEFAULTS["master"], events: int = _DEFAULTS["events"]) -> dict:
    """Run the co-occurrence job once on a generated sample with the JVM
    recording its loaded classes into ``out`` (written to a temporary name in
    the same folder, then renamed, so a concurrent job never maps a partial
    file). Returns the archive size and the recording time."""
    out = Path(out).resolve()
    if any(ch.isspace() or ch in "'\"" for ch in str(out)):
        raise ValueError(f"{out}: an archive path must have no whitespace or quotes "
                         f"(Spark splits spark.driver.extraJavaOptions on whitespace)")
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != CDS_ARCHIVE_ENV}  # record from the jars, not an old archive
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="notellm-cds-") as work:
        work = Path(work)
        subprocess.run([sys.executable, "-m", "jobs.sources.sample", "--out", str(work / "sample"),
                        "--notes", "500", "--users", "200", "--events", str(events), "--days", "7",
                        "--end-date", RUN_DATE, "--format", "landing", "--malformed-rate", "0.01"],
                       cwd=REPO, env=env, check=True, capture_output=True, text=True)
        landing = work / "sample" / "landing"
        subprocess.run([sys.executable, "-m", "jobs.ingest", "notes", "--landing", str(landing), "--out",
                        str(work / "root")], cwd=REPO, env=env, check=True, capture_output=True, text=True)
        # The JVM writes the archive to a temporary sibling at exit; atomic_path publishes it
        # (fsync + rename) only when the recording run succeeded, and removes it otherwise.
        with atomic_path(out) as partial:
            job = subprocess.run(
                [sys.executable, "-m", "jobs.cooccurrence", "--events", str(landing / "events"),
                 "--notes", str(work / "root" / "notes" / "notes.parquet"), "--out", str(work / "pairs"),
                 "--quarantine-out", str(work / "quarantine"), "--run-date", RUN_DATE, "--master", master,
                 f"--conf=spark.driver.extraJavaOptions=-XX:ArchiveClassesAtExit={partial}"],
                cwd=REPO, env=env, capture_output=True, text=True)
            if job.returncode != 0:
                raise RuntimeError(f"recording run of jobs.cooccurrence failed ({job.returncode}):\n"
                                   f"{job.stderr[-3000:]}")
            if not partial.is_file() or partial.stat().st_size == 0:
                raise RuntimeError(f"the JVM wrote no archive at {partial}; does this JDK support "
                                   f"-XX:ArchiveClassesAtExit (Java 13+)?\n{job.stderr[-2000:]}")
    return {"archive": str(out), "bytes": out.stat().st_size, "record_s": round(time.perf_counter() - started, 1)}


def command(cfg: SparkCdsConfig, timer: cli.Timer) -> dict:
    with timer.phase("record"):
        try:
            info = record(cfg.out, cfg.master, cfg.events)
        except ValueError as exc:    # an unusable archive path
            raise cli.BadInput(f"out: {exc}") from exc
    log.info("wrote %s (%.0f MiB); use it with: export %s=%s", info["archive"], info["bytes"] / 2**20,
             CDS_ARCHIVE_ENV, info["archive"])
    return {**info, "export": f"{CDS_ARCHIVE_ENV}={info['archive']}"}


def main(argv: list[str] | None = None) -> int:
    return cli.main(command, SparkCdsConfig, argv, prog="python -m jobs.spark_cds")


if __name__ == "__main__":
    sys.exit(main())
