"""The pair-mining job on a real standalone cluster (a master and two 1-core
workers on 127.0.0.1, tests/support/spark_cluster.py), submitted the way the
pair-mining DAG submits it: the packaged code (``python -m jobs.package``),
the DAG's own rendered arguments, ``file://`` URIs into folders whose names
hold a space.

* the cluster's output is row-for-row the local[2] output;
* an executor SIGKILLed mid-job costs a retry, not the job (reliable checkpoints);
* a heavy user (10^6 events) and a viral note (in half of all events) finish
  on 1 GB executors, every executor JVM's peak RSS bounded.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jinja2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from jobs import cooccurrence
from jobs.config import SampleConfig
from jobs.sources.sample import generate
from notellm import contracts
from notellm.cli import result_line
from notellm.layout import Layout
from tests.support.events import write_notes
from tests.support.paths import REPO

RUN_DATE = dt.date(2026, 11, 20)
PAIR_KEYS = ("src_note_id", "rank")
COUNT_KEYS = tuple(k for k in cooccurrence.RESULT_KEYS if k != "code")


def dag_args(root_uri: str, out_uri: str, quarantine_uri: str) -> list[str]:
    """The pair-mining DAG's application_args for RUN_DATE, rendered with its
    Param defaults; the outputs moved to this test's folders."""
    sys.path.insert(0, str(REPO / "dags"))
    try:
        import notellm_pair_mining as dag_module
    finally:
        sys.path.remove(str(REPO / "dags"))
    params = {k: (",".join(v) if isinstance(v, (list, tuple)) else v) for k, v in dag_module.JOB.items()}
    args = [jinja2.Template(a).render(ds=RUN_DATE.isoformat(), params=params)
            for a in dag_module.cooccurrence_args(Layout(root_uri))]
    args[args.index("--out") + 1] = out_uri
    args[args.index("--quarantine-out") + 1] = quarantine_uri
    return args


def uri(path: Path) -> str:
    return "file://" + str(path)


def pairs_of(root: Path) -> pa.Table:
    part = root / f"dt={RUN_DATE.isoformat()}"
    assert (part / contracts.SUCCESS_MARKER).exists()
    files = sorted(p for p in part.glob("*.parquet"))
    table = pa.concat_tables([pq.read_table(f) for f in files])
    return table.cast(contracts.PAIRS.schema).sort_by([(k, "ascending") for k in PAIR_KEYS])


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cluster") / "click data"      # a space in every path below
    generate(SampleConfig(notes=300, users=400, events=40_000, days=9, end_date=RUN_DATE.isoformat(), seed=11),
             out=root)
    return root


@pytest.fixture(scope="module")
def local_reference(spark, sample_root) -> dict:
    """The same run on the tests' local[2] session."""
    layout = Layout(str(sample_root))
    out = sample_root / "local" / "pairs"
    stats = cooccurrence.run(spark, cooccurrence.Config(
        events=layout.events, notes=layout.notes, out=str(out), quarantine_out=str(sample_root / "local" / "q"),
        run_date=RUN_DATE))
    return {"stats": stats, "pairs": pairs_of(out)}


def test_cluster_output_equals_local(spark_cluster, jobs_package, sample_root, local_reference):
    out = sample_root / "cluster run" / "pairs"
    result = spark_cluster.submit(jobs_package, "cooccurrence",
                                  dag_args(uri(sample_root), uri(out), uri(sample_root / "cluster run" / "q")))
    assert result["code"] == jobs_package["digest"]          # the packaged code ran, not the repository's
    assert {k: result[k] for k in COUNT_KEYS} == {k: local_reference["stats"][k] for k in COUNT_KEYS}
    assert result["pairs_written"] > 1000
    cluster_pairs = pairs_of(out)
    assert cluster_pairs.equals(local_reference["pairs"])
    stats = contracts.require_success(out / f"dt={RUN_DATE.isoformat()}")
    assert stats["reconciles"] is True
    assert stats["spark"]["shuffle_partitions"] >= 2
    # No scratch left behind: the work dir (reliable checkpoints) is removed after the commit.
    assert not any((out / "_work").iterdir()) if (out / "_work").exists() else True


def test_executor_killed_mid_job_gives_identical_output(spark_cluster, jobs_package, sample_root,
                                                        local_reference, tmp_path):
    out = sample_root / "killed run" / "pairs"
    cmd = spark_cluster.submit_command(jobs_package, "cooccurrence",
                                       dag_args(uri(sample_root), uri(out), uri(sample_root / "killed run" / "q")))
    work = out / "_work"
    killed = []
    with open(tmp_path / "stderr", "w") as err:
        proc = subprocess.Popen(cmd, env=spark_cluster.env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=err,
                                text=True)
        deadline = time.monotonic() + 300
        # Kill once the capped events are being checkpointed: the keys and the classified
        # events are kept as Parquet by then, and the rest of the job reads them back.
        while proc.poll() is None and time.monotonic() < deadline and not killed:
            if work.exists() and list(work.glob("*/checkpoints/cooc_capped_events")):
                pids = spark_cluster.executor_pids()
                if pids:
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])
                    break
            time.sleep(0.05)
        assert killed, "no executor was killed before the job ended"
        assert not (out / f"dt={RUN_DATE.isoformat()}").exists(), "the kill came after the commit"
        stdout, _ = proc.communicate(timeout=600)
    log = (tmp_path / "stderr").read_text()
    assert proc.returncode == 0, log[-4000:]
    assert "Lost executor" in log or "ExecutorLost" in log or "lost executor" in log.lower(), log[-4000:]
    assert pairs_of(out).equals(local_reference["pairs"])


def _vm_hwm_mb(pid: int) -> float:
    try:
        for line in (Path("/proc") / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@pytest.mark.slow
def test_heavy_user_and_viral_note_finish_with_bounded_memory(spark_cluster, jobs_package, tmp_path):
    """One user with 10^6 events, one note in half of all 2*10^6 events."""
    heavy, rest_users, per_user = 10**6, 2000, 500
    rng = np.random.default_rng(3)
    n = heavy + rest_users * per_user
    notes = [f"n{i:05d}" for i in range(5000)]
    note_idx = rng.integers(1, len(notes), n)
    note_idx[rng.random(n) < 0.5] = 0                                   # the viral note
    users = np.concatenate([np.zeros(heavy, np.int64), 1 + np.repeat(np.arange(rest_users), per_user)])
    start = dt.datetime(2026, 11, 14, tzinfo=dt.timezone.utc)
    seconds = rng.integers(0, 7 * 86400, n)
    root = tmp_path / "skew data"
    write_notes(root / "notes" / "notes.parquet", notes)
    times = pa.array(np.datetime64(start.replace(tzinfo=None), "us") + seconds.astype("timedelta64[s]"),
                     pa.timestamp("us", tz="UTC"))
    table = pa.table({"user_id": pa.array([f"u{u}" for u in users]), "note_id": pa.array(np.array(notes)[note_idx]),
                      "event_type": pa.array(np.where(rng.random(n) < 0.3, "click", "view")), "event_time": times})
    table = table.cast(contracts.EVENTS.schema)
    days = pc.cast(pc.floor_temporal(times, unit="day"), pa.date32()).to_numpy(zero_copy_only=False)
    for day in np.unique(days):
        part = root / "events" / f"dt={day}"
        part.mkdir(parents=True)
        pq.write_table(table.filter(pa.array(days == day)), part / "part-00000.parquet")
        contracts.mark_success(part, {"rows": int((days == day).sum())})
    out = tmp_path / "out" / "pairs"
    cmd = spark_cluster.submit_command(jobs_package, "cooccurrence",
                                       dag_args(uri(root), uri(out), uri(tmp_path / "out" / "q")))
    peak: dict[int, float] = {}
    with open(tmp_path / "stderr", "w") as err:
        proc = subprocess.Popen(cmd, env=spark_cluster.env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=err,
                                text=True)
        while proc.poll() is None:
            for pid in spark_cluster.executor_pids():
                peak[pid] = max(peak.get(pid, 0.0), _vm_hwm_mb(pid))
            time.sleep(0.5)
        stdout = proc.stdout.read()
    assert proc.returncode == 0, (tmp_path / "stderr").read_text()[-4000:]
    result = result_line(stdout)
    stats = contracts.require_success(out / f"dt={RUN_DATE.isoformat()}")
    assert stats["events_in"] == n and stats["reconciles"] is True
    # The cap keeps max_events_per_user of the heavy user's 10^6.
    assert stats["capped"] >= heavy - stats["params"]["max_events_per_user"]
    assert peak and max(peak.values()) < 2048, peak          # 1 GB heap executors stay bounded
    assert result["pairs_written"] == stats["pairs_written"]
