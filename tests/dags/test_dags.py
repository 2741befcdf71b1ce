"""DAG integrity: every file in dags/ imports into a DagBag with no errors,
every task retries, nothing heavy or connection-bound happens at parse time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.paths import REPO

DAGS = REPO / "dags"
EXPECTED = {"notellm_pair_mining", "notellm_retraining", "notellm_nightly_index"}

# Runs in a fresh interpreter so sys.modules shows exactly what parsing imported.
# Connection lookups are turned into errors: a DAG file that looks one up at
# parse time fails to import and shows up in import_errors.
PARSE_SCRIPT = textwrap.dedent("""
    import json, sys, time
    t0 = time.monotonic()
    from airflow.sdk import BaseHook, Connection
    def _no_lookup(*a, **k):
        raise RuntimeError("connection lookup at parse time")
    BaseHook.get_connection = classmethod(_no_lookup)
    Connection.get = classmethod(_no_lookup)
    from airflow.dag_processing.dagbag import DagBag
    t1 = time.monotonic()
    bag = DagBag(dag_folder=sys.argv[1])
    t2 = time.monotonic()
    dags = {}
    for dag_id, dag in bag.dags.items():
        dags[dag_id] = {
            "tags": sorted(dag.tags), "catchup": dag.catchup, "doc_md": bool(dag.doc_md),
            "fileloc": dag.fileloc,
            "tasks": {t.task_id: {"retries": t.retries, "retry_delay": t.retry_delay.total_seconds(),
                                  "conf": getattr(t, "conf", None),
                                  "application": getattr(t, "application", None),
                                  "py_files": getattr(t, "py_files", None),
                                  "upstream": sorted(t.upstream_task_ids)}
                      for t in dag.tasks},
        }
    heavy = [m for m in ("torch", "pyspark", "faiss", "deepspeed", "transformers", "pandas") if m in sys.modules]
    print(json.dumps({"errors": {str(k): v for k, v in bag.import_errors.items()}, "dags": dags,
                      "heavy": heavy, "parse_seconds": t2 - t1, "import_seconds": t1 - t0}))
""")


@pytest.fixture(scope="module")
def parsed(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow_home")
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS)}
    env.pop("AIRFLOW_CONN_SPARK_DEFAULT", None)
    env["NOTELLM_SPARK_CDS_ARCHIVE"] = "/opt/notellm/driver.jsa"   # need not exist: the JVM ignores a missing one
    out = subprocess.run([sys.executable, "-c", PARSE_SCRIPT, str(DAGS)], env=env, capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_dag_file_imports_without_errors(parsed):
    assert parsed["errors"] == {}
    assert set(parsed["dags"]) == EXPECTED
    files_with_dags = {Path(d["fileloc"]).name for d in parsed["dags"].values()}
    dag_files = {p.name for p in DAGS.glob("*.py") if "@dag(" in p.read_text()}
    assert files_with_dags == dag_files


def test_tags_catchup_docs(parsed):
    for dag_id, dag in parsed["dags"].items():
        assert "notellm" in dag["tags"], dag_id
        assert dag["catchup"] is False, dag_id
        assert dag["doc_md"], dag_id


def test_every_task_retries_with_delay(parsed):
    for dag_id, dag in parsed["dags"].items():
        for task_id, task in dag["tasks"].items():
            assert task["retries"] >= 2, f"{dag_id}.{task_id}"
            assert task["retry_delay"] > 0, f"{dag_id}.{task_id}"


def test_parsing_is_light_and_fast(parsed):
    assert parsed["heavy"] == [], f"DAG parsing imported heavy modules: {parsed['heavy']}"
    # Generous bound for a loaded 2-core machine; parsing is ~0.1 s when idle.
    assert parsed["parse_seconds"] < 10


def test_no_connection_lookup_at_parse_time(parsed):
    # The lookup tripwire turns any parse-time lookup into an import error.
    assert not any("connection lookup" in e for e in parsed["errors"].values())


@pytest.mark.parametrize("code, retried", [(1, True), (2, False), (3, False), (4, False)])
def test_run_stage_retries_only_what_a_retry_can_fix(code, retried):
    """Exit codes of notellm.cli: bad input (2), a gate refusal (3) and divergence (4)
    fail the task without retry; any other failure is retried."""
    from airflow.sdk.exceptions import AirflowFailException

    sys.path.insert(0, str(DAGS))
    try:
        import notellm_common
    finally:
        sys.path.remove(str(DAGS))
    cmd = [sys.executable, "-c", f"import sys; print('working'); sys.exit({code})"]
    expected = notellm_common.StageFailed if retried else AirflowFailException
    with pytest.raises(expected) as err:
        notellm_common.run_stage(cmd)
    assert "working" in str(err.value) and not (retried and isinstance(err.value, AirflowFailException))


def test_spark_submit_passes_the_driver_cds_archive(parsed):
    conf = parsed["dags"]["notellm_pair_mining"]["tasks"]["mine_pairs"]["conf"]
    assert conf["spark.driver.extraJavaOptions"] == "-XX:SharedArchiveFile=/opt/notellm/driver.jsa -Xshare:auto"
    assert conf["spark.ui.enabled"] == "false"


@pytest.mark.parametrize("dag_id, task_id, job", [("notellm_pair_mining", "mine_pairs", "cooccurrence"),
                                                  ("notellm_retraining", "split_pairs", "split")])
def test_spark_jobs_are_submitted_from_the_package_with_no_fixed_shuffle(parsed, dag_id, task_id, job):
    task = parsed["dags"][dag_id]["tasks"][task_id]
    assert task["application"] == "{{ ti.xcom_pull(task_ids='package_jobs')['%s'] }}" % job
    assert task["py_files"] == "{{ ti.xcom_pull(task_ids='package_jobs')['py_files'] }}"
    assert "package_jobs" in task["upstream"]
    assert not [k for k in task["conf"] if "partitions" in k]     # sized from the input by the job


def test_split_arguments_parse_with_the_jobs_parser():
    sys.path.insert(0, str(DAGS))
    try:
        import notellm_retraining as dag_file
    finally:
        sys.path.remove(str(DAGS))
    import jinja2

    from jobs.config import SplitConfig
    from notellm import config
    from notellm.layout import Layout

    rendered = [jinja2.Environment().from_string(a).render(
        ds="2026-11-24", params={"test_days": 7}, macros={"ds_add": lambda ds, n: "2026-11-17"})
        for a in dag_file.split_args(Layout("hdfs://nn/notellm"))]
    import argparse

    parser = argparse.ArgumentParser()
    config.add_arguments(parser, SplitConfig)
    cfg = config.from_namespace(SplitConfig, parser.parse_args(rendered))
    assert str(cfg.train_date) == "2026-11-17" and str(cfg.test_date) == "2026-11-24"
    assert cfg.out == "hdfs://nn/notellm/splits/dt=2026-11-24" and cfg.pairs == "hdfs://nn/notellm/pairs"


def test_pair_mining_passes_only_settings_the_job_has():
    """The DAG's spark-submit arguments parse with the job's own generated parser
    (rendered with the Params' defaults), so a renamed setting fails here, not at 2 am."""
    import argparse

    sys.path.insert(0, str(DAGS))
    try:
        import notellm_pair_mining as dag_file
    finally:
        sys.path.remove(str(DAGS))
    from jobs.config import CooccurrenceConfig
    from notellm import config
    from notellm.layout import Layout

    rendered = []
    for arg in dag_file.cooccurrence_args(Layout("/data/notellm")):
        if arg == "{{ ds }}":
            arg = "2026-11-24"
        elif arg.startswith("{{ params."):
            value = dag_file.JOB[arg[len("{{ params."):-len(" }}")]]
            arg = ",".join(value) if isinstance(value, (list, tuple)) else str(value)
        rendered.append(arg)
    parser = argparse.ArgumentParser()
    config.add_arguments(parser, CooccurrenceConfig)
    cfg = config.from_namespace(CooccurrenceConfig, parser.parse_args(rendered))
    assert str(cfg.events) == "/data/notellm/events" and str(cfg.out) == "/data/notellm/pairs"
    assert all(getattr(cfg, name) == value for name, value in dag_file.JOB.items() if name in dag_file.SCORE_PARAMS)
