"""End to end through Airflow: the three DAGs run with `airflow dags test`
against a fresh SQLite metadata DB on a small sample and a tiny Llama, ending
with a snapshot the consumer API opens. Real Spark (the packaged jobs
spark-submitted to the session's standalone cluster: ``spark_default`` is its
``spark://`` master), real DeepSpeed, real FAISS; only the sizes are small.

Also covers the faults the DAGs must survive: a training process killed
mid-run is retried and resumes from its checkpoint; a refusing quality gate
fails the run without touching the approved model or the live snapshot.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.kill import KillDescendantWhen, checkpoint_written
from tests.support.paths import REPO

pytestmark = pytest.mark.slow

VENV_BIN = Path(sys.executable).parent
TRAIN_DATE, TEST_DATE = "2026-11-17", "2026-11-24"


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, tiny_llama_dir, spark_cluster):
    base = tmp_path_factory.mktemp("e2e")
    root, home = base / "pipeline", base / "airflow"
    env = {
        **os.environ,
        "NOTELLM_ROOT": str(root), "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps({"conn_type": "spark", "host": "spark://127.0.0.1",
                                                  "port": spark_cluster.port}),
        "NOTELLM_PACKAGE_DIR": str(base / "packages"),
        "SPARK_LOCAL_IP": "127.0.0.1", "NOTELLM_PYTHON": sys.executable, "NOTELLM_RETRY_DELAY_SECONDS": "1",
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    subprocess.run([sys.executable, "-m", "jobs.sources.sample", "--out", str(root), "--notes", "160",
                    "--users", "120", "--events", "12000", "--days", "14", "--end-date", TEST_DATE, "--seed", "5"],
                   cwd=REPO, env=env, check=True, capture_output=True)
    subprocess.run(["airflow", "db", "migrate"], cwd=REPO, env=env, check=True, capture_output=True)

    def run(dag_id: str, date: str, conf: dict | None = None, extra_env: dict | None = None):
        cmd = ["airflow", "dags", "test", dag_id, date] + (["--conf", json.dumps(conf)] if conf else [])
        proc = subprocess.run(cmd, cwd=REPO, env={**env, **(extra_env or {})}, capture_output=True, text=True,
                              timeout=900)
        return proc, proc.stdout + proc.stderr

    return {"root": root, "run": run, "tiny": tiny_llama_dir}


def _ok(proc, log):
    assert proc.returncode == 0 and "state=success" in log, log[-6000:]


TRAIN_CONF = {"max_steps": 8, "batch_pairs": 4, "learning_rate": 0.001, "min_recall": 0.0,
              "template_version": "v2-short"}


@pytest.fixture(scope="module")
def published(pipeline):
    run = pipeline["run"]
    mining_logs = {}
    for date in (TRAIN_DATE, TEST_DATE):
        proc, log = run("notellm_pair_mining", date, {"min_events": 100, "min_pairs": 5})
        _ok(proc, log)
        mining_logs[date] = log
    # The first training attempt is SIGKILLed once its first checkpoint is written; the
    # task's retry must resume from it (metrics.json records resumed_from_step).
    conf = {**TRAIN_CONF, "base_model": str(pipeline["tiny"])}
    first_checkpoint = checkpoint_written(pipeline["root"] / "models" / "runs", pattern="*/checkpoints/latest")
    killer = KillDescendantWhen(first_checkpoint, "training.train", str(pipeline["root"]))
    killer.start()
    proc, log = run("notellm_retraining", TEST_DATE, conf)
    killer.stop()
    killer.join()
    assert killer.killed, "the training stage was never killed"
    _ok(proc, log)
    _ok(*run("notellm_nightly_index", TEST_DATE))
    return {"retrain_log": log, "mining_logs": mining_logs}


def test_pairs_partitions_are_marked(pipeline, published):
    from notellm.contracts import PAIRS, read_table, require_success

    packages = list((pipeline["root"].parent / "packages").glob("notellm-jobs-*.zip"))
    assert len(packages) == 1           # packaged once per code version, reused by every run
    digest = packages[0].stem.rsplit("-", 1)[1]
    for date in (TRAIN_DATE, TEST_DATE):
        part = pipeline["root"] / "pairs" / f"dt={date}"
        stats = require_success(part)
        assert stats["reconciles"] is True
        assert stats["code"].startswith(digest)           # the cluster ran the packaged code
        assert "spark://" in published["mining_logs"][date]
        assert read_table(part, PAIRS).num_rows == stats["pairs_written"] > 0


def test_killed_training_resumes_on_retry(pipeline, published):
    runs = list((pipeline["root"] / "models" / "runs").iterdir())
    assert len(runs) == 1
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert 2 <= metrics["resumed_from_step"] < 8 and metrics["steps"] == 8
    assert f"exit code {-signal.SIGKILL}" in published["retrain_log"]


def test_snapshot_is_published_and_opens(pipeline, published):
    from indexing.snapshot import Snapshot
    from notellm.contracts import NOTES, read_table
    from notellm.registry import current_approved

    snap = Snapshot.open(pipeline["root"] / "index")
    notes = read_table(pipeline["root"] / "notes" / "notes.parquet", NOTES, columns=["note_id"])
    info = snap.info()
    assert info["num_vectors"] == notes.num_rows
    assert info["model"]["model_id"] == current_approved(pipeline["root"] / "models")["model_id"]
    some = notes.column("note_id")[0].as_py()
    hits = snap.neighbors(some, 5)
    assert len(hits) == 5 and some not in [h[0] for h in hits]


def test_refusing_gate_keeps_model_and_snapshot(pipeline, published):
    from indexing.snapshot import current_name
    from notellm.registry import current_approved, history

    models, index = pipeline["root"] / "models", pipeline["root"] / "index"
    approved_before, current_before = current_approved(models), current_name(index)
    # An impossible floor: the new model must be refused, without retry.
    conf = {**TRAIN_CONF, "base_model": str(pipeline["tiny"]), "max_steps": 2, "min_recall": 1.01}
    proc, log = pipeline["run"]("notellm_retraining", TEST_DATE, conf)
    assert proc.returncode != 0 or "state=failed" in log
    assert "quality gate refused" in log
    assert current_approved(models) == approved_before
    assert history(models)[-1]["approved"] is False
    # The nightly index still publishes from the approved model, so CURRENT is unchanged.
    _ok(*pipeline["run"]("notellm_nightly_index", TEST_DATE))
    assert current_name(index) == current_before
