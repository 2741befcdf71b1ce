"""Settings and helpers shared by the NoteLLM DAGs.

Kept cheap to import: the DAG processor parses this file often, so nothing
here touches the metadata database, a connection, torch or Spark at import
time. Tasks call the pipeline stages through their command lines
(:func:`run_stage`), so the Airflow worker needs only the `airflow` extra and
each stage can run on its own hardware.

Configuration (read at task run time, first hit wins):

* Airflow Variable ``notellm_root`` / environment ``NOTELLM_ROOT``: the data
  root (notes, events, pairs, models, embeddings, index).
* Environment ``NOTELLM_PYTHON``: the interpreter that has the stage extras
  installed (default: the worker's own).
* Environment ``NOTELLM_RETRY_DELAY_SECONDS``: retry delay (default 300).
* Environment ``NOTELLM_PACKAGE_DIR``: the local folder the Spark jobs are
  packaged into for spark-submit (``python -m jobs.package``; default
  ``var/packages`` in the repository).
* Connection ``spark_default`` (type spark): the Spark master (``local[*]``,
  ``spark://host:7077``, ``yarn``, ``k8s://...``; deploy mode and queue in its
  extra). The jobs are submitted from the packaged zip, so a cluster-mode driver
  needs no repository (docs/operations.md, "Running the Spark jobs on a cluster").
"""

from __future__ import annotations

import datetime as dt
import os
import shlex
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

from airflow.sdk import Asset

from notellm.cli import EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_GATE_FAILED, result_line
from notellm.layout import Layout, asset_uri

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = os.environ.get("NOTELLM_ROOT", str(REPO / "var" / "pipeline"))
DEFAULT_LAYOUT = Layout(DEFAULT_ROOT)

# Assets: static URIs; the concrete partition / model / snapshot travels in the event extra.
PAIRS_ASSET = Asset(name="notellm_pairs", uri=asset_uri(DEFAULT_LAYOUT.pairs))
MODEL_ASSET = Asset(name="notellm_model", uri=asset_uri(DEFAULT_LAYOUT.approved))
INDEX_ASSET = Asset(name="notellm_index", uri=asset_uri(DEFAULT_LAYOUT.current_snapshot))

# notellm.cli's exit codes that a retry of the same input cannot fix: bad input,
# a quality-gate refusal (the live model / snapshot is kept), a diverged run.
NO_RETRY_EXITS = {EXIT_BAD_INPUT: "bad input", EXIT_GATE_FAILED: "quality gate refused",
                  EXIT_DIVERGED: "training diverged"}

DEFAULT_ARGS = {
    "owner": "notellm",
    "retries": 2,
    "retry_delay": dt.timedelta(seconds=int(os.environ.get("NOTELLM_RETRY_DELAY_SECONDS", "300"))),
    "retry_exponential_backoff": False,
}

# Spark driver class-data sharing (docs/operations.md, "Spark driver start-up"):
# the archive `python -m jobs.spark_cds` records, named by the same variable
# jobs/spark_session.py reads. Under spark-submit the JVM starts before the job's
# Python runs, so the option has to go into the submit conf. The JVM ignores a
# missing or stale archive (it never fails a task), so parse time may set it.
SPARK_CDS_ARCHIVE = os.environ.get("NOTELLM_SPARK_CDS_ARCHIVE", "")


def spark_driver_conf() -> dict:
    """Driver settings for SparkSubmitOperator: the CDS archive when one is
    configured. A path with whitespace or quotes is not passed: spark-submit
    splits extraJavaOptions on whitespace and the driver would not start.
    Note: this conf replaces any spark.driver.extraJavaOptions of spark-defaults.conf."""
    if not SPARK_CDS_ARCHIVE or any(ch.isspace() or ch in "'\"" for ch in SPARK_CDS_ARCHIVE):
        return {}
    return {"spark.driver.extraJavaOptions": f"-XX:SharedArchiveFile={SPARK_CDS_ARCHIVE} -Xshare:auto"}


PACKAGE_DIR = os.environ.get("NOTELLM_PACKAGE_DIR", str(REPO / "var" / "packages"))
PACKAGE_TASK = "package_jobs"


def packaged(key: str) -> str:
    """Template of one path of the ``package_jobs`` task's result (``py_files``, or a job's entry script)."""
    return "{{ ti.xcom_pull(task_ids='%s')['%s'] }}" % (PACKAGE_TASK, key)


def package_jobs() -> dict:
    """Package the Spark jobs (content-addressed: a rerun reuses the same files)."""
    return last_json_line(run_stage([python(), "-m", "jobs.package", "--out", PACKAGE_DIR]))


def spark_submit_conf() -> dict:
    """The submit conf both Spark DAGs use. No shuffle partition count: the jobs
    size their shuffles from the input bytes (jobs.spark_input.size_shuffle);
    a ``spark.sql.shuffle.partitions`` in the connection or spark-defaults wins."""
    return {"spark.ui.enabled": "false", **spark_driver_conf()}


def spark_env() -> dict:
    """The driver and the executors run the interpreter that has the ``spark`` extra."""
    return {"PYSPARK_PYTHON": python(), "PYSPARK_DRIVER_PYTHON": python()}


def spark_job(task_id: str, job: str, application_args: list[str], hours: float = 2):
    """The SparkSubmitOperator of a packaged job (``job``: an entry script of
    ``python -m jobs.package``), submitted through the ``spark_default`` connection."""
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    return SparkSubmitOperator(
        task_id=task_id, conn_id="spark_default", application=packaged(job), py_files=packaged("py_files"),
        name=f"notellm-{job}-{{{{ ds_nodash }}}}", application_args=application_args, conf=spark_submit_conf(),
        env_vars=spark_env(), execution_timeout=dt.timedelta(hours=hours))


def layout() -> Layout:
    """notellm.layout's URIs under the run-time data root (strings: the root may be hdfs:// or s3a://)."""
    return Layout(root_uri())


# Template used by operator arguments (rendered at run time, not parse time).
ROOT_TEMPLATE = "{{ var.value.get('notellm_root', '" + DEFAULT_ROOT + "') }}"


def root_uri() -> str:
    """The data root at task run time (Variable, then environment, then default), as given: a path or a URI."""
    from airflow.sdk import Variable

    try:
        value = Variable.get("notellm_root", default=None)
    except Exception:  # no metadata DB reachable (e.g. plain unit use): fall back
        value = None
    return value or os.environ.get("NOTELLM_ROOT") or DEFAULT_ROOT


def data_root() -> Path:
    """The data root as a local Path (the stages that still take local paths)."""
    return Path(root_uri())


def paths(root: Path | None = None) -> dict[str, Path]:
    """notellm.layout's paths under the run-time data root, as Paths for the tasks."""
    layout = Layout(str(root or data_root()))
    names = ("notes", "events", "pairs", "pairs_quarantine", "splits", "models", "embeddings", "index")
    return {"root": Path(layout.root), **{name: Path(getattr(layout, name)) for name in names}}


def python() -> str:
    return os.environ.get("NOTELLM_PYTHON", sys.executable)


LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def torchrun_launcher(python: str, nodes: int, gpus_per_node: int, rdzv_id: str, rdzv_endpoint: str = "",
                      port: int = 29400) -> list[str]:
    """``torchrun`` (the stage interpreter's ``python -m torch.distributed.run``) of ``nodes`` x
    ``gpus_per_node`` ranks over a c10d rendezvous; append ``-m <module> ...``. The task runs it on
    its own worker; with ``nodes`` > 1 every other node must run the very same command (same
    ``--rdzv-id`` and ``--rdzv-endpoint``), and the endpoint must be a host:port they all reach.
    c10d's store is hosted by the agent on the endpoint's host, so an empty ``rdzv_endpoint`` means
    this worker: 127.0.0.1 and a free port for one node, its FQDN and ``port`` for several.
    ValueError for a setting that cannot launch (no retry helps)."""
    import socket

    if nodes < 1 or gpus_per_node < 1:
        raise ValueError(f"torchrun needs nodes >= 1 and gpus_per_node >= 1, got {nodes} x {gpus_per_node}")
    given = rdzv_endpoint
    if not rdzv_endpoint:
        if nodes == 1:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        rdzv_endpoint = f"{'127.0.0.1' if nodes == 1 else socket.getfqdn()}:{port}"
    host, _, port_text = rdzv_endpoint.rpartition(":")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"rdzv_endpoint {rdzv_endpoint!r}: expected host:port")
    if nodes > 1 and host in LOOPBACK:
        where = "" if given else " (this worker's FQDN)"
        raise ValueError(f"rdzv_endpoint {rdzv_endpoint!r}{where} with {nodes} "
                         "nodes: the other nodes cannot reach a loopback address; set rdzv_endpoint to this "
                         "worker's host:port as the other nodes reach it")
    return [python, "-m", "torch.distributed.run", "--nnodes", str(nodes), "--nproc-per-node", str(gpus_per_node),
            "--rdzv-backend", "c10d", "--rdzv-endpoint", rdzv_endpoint, "--rdzv-id", rdzv_id]


class StageFailed(RuntimeError):
    """A stage command failed; the message carries its exit code and output tail."""

    def __init__(self, cmd: list[str], code: int, tail: str):
        self.code = code
        super().__init__(f"command failed with exit code {code}: {shlex.join(cmd)}\n--- last output ---\n{tail}")


def run_stage(cmd: list[str], timeout: float | None = None, env: dict | None = None) -> str:
    """Run a stage command, stream its output into the task log, and return
    stdout. Non-zero exit -> :class:`StageFailed` with the output tail (retried);
    bad input, a gate refusal or divergence (NO_RETRY_EXITS) -> AirflowFailException."""
    from airflow.sdk.exceptions import AirflowFailException

    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    print(f"+ {shlex.join(cmd)}", flush=True)
    start = time.monotonic()
    tail: deque[str] = deque(maxlen=60)
    out_lines: list[str] = []
    proc = subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1, start_new_session=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
            tail.append(line)
            out_lines.append(line)
            if timeout is not None and time.monotonic() - start > timeout:
                raise TimeoutError(f"stage ran longer than {timeout} s: {shlex.join(cmd)}")
        code = proc.wait()
    except BaseException:
        # Airflow's execution_timeout or a kill of the task: stop the whole process group
        # (a launcher's workers included) so a retry does not race a stale run.
        _kill_group(proc)
        raise
    if code in NO_RETRY_EXITS:
        raise AirflowFailException(f"{NO_RETRY_EXITS[code]} (exit {code}): " + "".join(list(tail)[-15:]))
    if code != 0:
        raise StageFailed(cmd, code, "".join(tail))
    return "".join(out_lines)


def _kill_group(proc: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except Exception:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except Exception:
            pass


def last_json_line(output: str) -> dict:
    """The stage's result: one JSON object on its last JSON line (notellm.cli's contract)."""
    return result_line(output)
