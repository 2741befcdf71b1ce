"""Driver class-data sharing: option merging, a stale archive is harmless, and
a recorded archive really serves Spark's classes to a later driver JVM."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.spark_session import CDS_ARCHIVE_ENV, cds_java_options
from tests.support.paths import REPO


def test_options_unchanged_without_archive(tmp_path, monkeypatch):
    monkeypatch.delenv(CDS_ARCHIVE_ENV, raising=False)
    assert cds_java_options("-Xss4m") == "-Xss4m"
    monkeypatch.setenv(CDS_ARCHIVE_ENV, str(tmp_path / "missing.jsa"))
    assert cds_java_options("-Xss4m") == "-Xss4m"   # a missing file is not passed to the JVM
    assert cds_java_options("") == ""


def test_options_append_archive_and_keep_user_options(tmp_path, monkeypatch):
    archive = tmp_path / "driver.jsa"
    archive.write_bytes(b"x")
    monkeypatch.setenv(CDS_ARCHIVE_ENV, str(archive))
    assert cds_java_options("-Xss4m") == f"-Xss4m -XX:SharedArchiveFile={archive} -Xshare:auto"
    assert cds_java_options("") == f"-XX:SharedArchiveFile={archive} -Xshare:auto"
    # a run that records (or names its own archive) is left alone
    recording = f"-XX:ArchiveClassesAtExit={tmp_path / 'new.jsa'}"
    assert cds_java_options(recording) == recording
    assert cds_java_options("-XX:SharedArchiveFile=/other.jsa") == "-XX:SharedArchiveFile=/other.jsa"
    # an explicit argument wins over the environment
    assert cds_java_options("", archive="") == ""
    # a chosen sharing mode is the user's: -Xshare:auto must not override -Xshare:off
    assert cds_java_options("-Xshare:off") == "-Xshare:off"


def test_archive_path_with_whitespace_is_not_passed(tmp_path, monkeypatch, caplog):
    """Spark splits extraJavaOptions on whitespace: such a path would become a
    stray token on the java command line and the driver would not start."""
    folder = tmp_path / "a b"
    folder.mkdir()
    archive = folder / "driver.jsa"
    archive.write_bytes(b"x")
    monkeypatch.setenv(CDS_ARCHIVE_ENV, str(archive))
    assert cds_java_options("-Xss4m") == "-Xss4m"
    assert "whitespace" in caplog.text
    from jobs import spark_cds

    with pytest.raises(ValueError, match="whitespace"):
        spark_cds.record(archive)


def _java() -> str | None:
    home = os.environ.get("JAVA_HOME")   # what Spark's launcher uses first
    if home and os.access(os.path.join(home, "bin", "java"), os.X_OK):
        return os.path.join(home, "bin", "java")
    return shutil.which("java")


@pytest.mark.skipif(_java() is None, reason="no java (JAVA_HOME or PATH)")
@pytest.mark.parametrize("case", ["damaged", "missing", "stale"])
def test_unusable_archive_is_not_fatal(tmp_path, case):
    """What the docs promise: a damaged file, a file that vanished after the
    DAG was parsed (the DAG passes the path unchecked) or an archive recorded
    for another class path is ignored and the JVM runs without it."""
    archive = tmp_path / "driver.jsa"
    if case == "damaged":
        archive.write_bytes(os.urandom(4096))
    elif case == "stale":   # a real dynamic archive, recorded with another class path
        recorded = subprocess.run([_java(), f"-XX:ArchiveClassesAtExit={archive}", "-cp", str(tmp_path), "-version"],
                                  capture_output=True, text=True, timeout=120)
        assert recorded.returncode == 0 and archive.is_file(), recorded.stderr[-2000:]
    options = [f"-XX:SharedArchiveFile={archive}", "-Xshare:auto"]
    done = subprocess.run([_java(), *options, "-cp", str(REPO), "-version"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_recorded_archive_serves_spark_classes(tmp_path):
    from jobs import spark_cds

    info = spark_cds.record(tmp_path / "cds" / "driver.jsa", events=5_000)
    archive = Path(info["archive"])
    assert archive.is_file() and info["bytes"] > 10 * 2**20
    assert not list(archive.parent.glob(".*partial"))   # published by rename, nothing left behind

    log = tmp_path / "class-load.log"
    probe = ("from jobs.spark_session import build_spark\n"
             f"s = build_spark('cds-probe', 'local[1]', extra_conf={{'spark.driver.extraJavaOptions': "
             f"'-Xlog:class+load=info:file={log}'}})\n"
             "assert s.range(10).count() == 10\n"
             "s.stop()\n")
    env = dict(os.environ, PYTHONPATH=str(REPO), **{CDS_ARCHIVE_ENV: str(archive)})
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # Spark's classes that came from a jar or from the archive (lambda proxies,
    # whose source is their host class, are defined at run time either way)
    spark_lines = [line for line in log.read_text().splitlines() if " org.apache.spark." in line
                   and ("source: shared objects file" in line or "source: file:" in line or "source: jar:" in line)]
    from_archive = [line for line in spark_lines if "shared objects file (top)" in line]
    # the dynamic archive ("top" layer) supplies nearly all of them; the few
    # left (a probe-only Range plan) were not loaded by the recording run
    assert len(from_archive) > 0.95 * len(spark_lines) > 1000, (len(from_archive), len(spark_lines))
