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


def _retraining():
    sys.path.insert(0, str(DAGS))
    try:
        import notellm_retraining as dag_file
    finally:
        sys.path.remove(str(DAGS))
    return dag_file


def _train_params(**kw) -> dict:
    """The retraining DAG's Param defaults, with ``kw`` on top (what a trigger's conf gives)."""
    dag_file = _retraining()
    params = dag_file.notellm_retraining().params
    return {**{k: params.get_param(k).value for k in params.keys()}, **kw}


def test_retraining_params_are_nodes_times_gpus_and_a_global_batch():
    dag_file = _retraining()
    params = dag_file.notellm_retraining().params
    assert "num_gpus" not in params and {"nodes", "gpus_per_node", "rdzv_endpoint", "eval_pool_sample"} <= set(params)
    assert {"nodes", "gpus_per_node", "batch_pairs"} <= set(dag_file.RUN_KEYS)
    text = params.get_param("batch_pairs").description
    assert "global batch" in text and "all ranks" in text and "divisible by nodes x gpus_per_node" in text
    assert "per gpu" not in text.lower() and "per-gpu" not in text.lower()
    assert params.get_param("gpus_per_node").value == 0 and params.get_param("nodes").value == 1
    assert params.get_param("eval_pool_sample").value == dag_file.EVAL_POOL_SAMPLE > 0


def test_cpu_default_is_one_plain_process(tmp_path):
    dag_file = _retraining()
    cmd = dag_file.train_command("/py", _train_params(), "/p/train_pairs", tmp_path / "notes", tmp_path / "run")
    assert cmd[:3] == ["/py", "-m", "training.train"] and "torch.distributed.run" not in cmd


def test_two_nodes_of_eight_gpus_launch_torchrun_with_a_c10d_rendezvous(tmp_path):
    import argparse

    from notellm import config
    from training.config import TrainConfig

    dag_file = _retraining()
    params = _train_params(nodes=2, gpus_per_node=8, batch_pairs=64, rdzv_endpoint="gpu-node-0.example:29518")
    run_dir = dag_file.run_dir_of(tmp_path / "models", "2026-11-24", params)
    cmd = dag_file.train_command("/py", params, "/p/train_pairs", tmp_path / "notes", run_dir)
    assert cmd[:14] == ["/py", "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "8",
                        "--rdzv-backend", "c10d", "--rdzv-endpoint", "gpu-node-0.example:29518",
                        "--rdzv-id", run_dir.name, "-m"]
    assert cmd[14] == "training.train" and run_dir.name.startswith("2026-11-24-")
    parser = argparse.ArgumentParser()
    config.add_arguments(parser, TrainConfig)
    cfg = config.from_namespace(TrainConfig, parser.parse_args(cmd[15:]))
    assert cfg.batch_pairs == 64 and cfg.output_dir == str(run_dir)
    # The run folder (and so the checkpoints a retry resumes) depends on the world size, not on the host.
    assert run_dir == dag_file.run_dir_of(tmp_path / "models", "2026-11-24", {**params, "rdzv_endpoint": "x:1"})
    assert run_dir != dag_file.run_dir_of(tmp_path / "models", "2026-11-24", {**params, "nodes": 1})
    # What the other node runs: the same argv, written beside the run.
    launch = json.loads(dag_file.write_launch(run_dir, cmd, params).read_text())
    assert launch["argv"] == cmd and launch["world_size"] == 16 and launch["rdzv_id"] == run_dir.name


@pytest.mark.parametrize("kw, problem", [
    ({"nodes": 2, "gpus_per_node": 8, "batch_pairs": 24}, "must be divisible"),     # 24 pairs over 16 ranks
    ({"nodes": 1, "gpus_per_node": 8, "batch_pairs": 12}, "must be divisible"),
    ({"nodes": 2, "gpus_per_node": 0}, "CPU run is one process"),
    ({"nodes": 2, "gpus_per_node": 8, "batch_pairs": 64, "rdzv_endpoint": "127.0.0.1:29518"}, "loopback"),
    ({"nodes": 2, "gpus_per_node": 8, "batch_pairs": 64, "rdzv_endpoint": "gpu-node-0"}, "host:port"),
])
def test_params_that_cannot_launch_are_refused(tmp_path, kw, problem):
    dag_file = _retraining()
    with pytest.raises(ValueError, match=problem):
        dag_file.train_command("/py", _train_params(**kw), "/p/train_pairs", tmp_path / "notes", tmp_path / "run")


def test_default_rendezvous_is_this_worker(tmp_path, monkeypatch):
    import socket

    dag_file = _retraining()
    one = dag_file.train_command("/py", _train_params(gpus_per_node=2), "/p", tmp_path / "n", tmp_path / "run")
    host, port = one[one.index("--rdzv-endpoint") + 1].split(":")
    assert host == "127.0.0.1" and int(port) > 0
    monkeypatch.setattr(socket, "getfqdn", lambda: "worker-7.example")
    two = dag_file.train_command("/py", _train_params(nodes=2, gpus_per_node=2), "/p", tmp_path / "n",
                                 tmp_path / "run")
    assert two[two.index("--rdzv-endpoint") + 1] == f"worker-7.example:{dag_file.RDZV_PORT}"
    monkeypatch.setattr(socket, "getfqdn", lambda: "localhost")   # a worker without a resolvable name
    with pytest.raises(ValueError, match="this worker.s FQDN.*set rdzv_endpoint"):
        dag_file.train_command("/py", _train_params(nodes=2, gpus_per_node=2), "/p", tmp_path / "n", tmp_path / "r")


def test_evaluate_arguments_parse_with_the_evaluate_parser(tmp_path):
    import argparse

    from notellm import config
    from training.config import EvaluateConfig

    dag_file = _retraining()
    p = {"notes": tmp_path / "notes", "models": tmp_path / "models", "embeddings": tmp_path / "embeddings"}
    split = {"test_pairs": "/s/test_pairs", "pool": "/s/pool"}
    cmd = dag_file.evaluate_command("/py", _train_params(), "/m/model", split, p, "/m/eval.json")
    assert cmd[:3] == ["/py", "-m", "training.evaluate"]
    parser = argparse.ArgumentParser()
    config.add_arguments(parser, EvaluateConfig)
    cfg = config.from_namespace(EvaluateConfig, parser.parse_args(cmd[3:]))
    assert cfg.embeddings_root == str(tmp_path / "embeddings") and cfg.approved_root == str(tmp_path / "models")
    assert cfg.pool_sample == dag_file.EVAL_POOL_SAMPLE and cfg.backbone_baseline and cfg.device == "auto"
