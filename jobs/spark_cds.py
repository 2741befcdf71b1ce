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

The archive is tied to the JDK build and to the class path of the pyspark
installation that recorded it. Rebuild it after upgrading either; a stale or
damaged archive is only ignored by the JVM (a mismatch with a warning, a damaged
file silently), never fatal. Classes from
signed jars (Janino) cannot be archived; the JVM says so while recording.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jobs.spark_session import CDS_ARCHIVE_ENV

REPO = Path(__file__).resolve().parents[1]
RUN_DATE = "2026-11-24"


def record(out: Path, master: str = "local[2]", events: int = 20_000) -> dict:
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
        partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
        try:
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
            os.replace(partial, out)
        finally:
            partial.unlink(missing_ok=True)
    return {"archive": str(out), "bytes": out.stat().st_size, "record_s": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "var" / "spark-cds" / "driver.jsa",
                   help="archive path to (re)publish")
    p.add_argument("--master", default="local[2]")
    args = p.parse_args(argv)
    info = record(args.out, args.master)
    print(f"wrote {info['archive']} ({info['bytes'] / 2**20:.0f} MiB) in {info['record_s']} s; "
          f"use it with: export {CDS_ARCHIVE_ENV}={info['archive']}")


if __name__ == "__main__":
    main()
