"""
### NoteLLM pair mining (daily)

Turns the click log of the 7 days ending at the run's **logical date** into
related-note pairs (NoteLLM co-occurrence scores) with the Spark job
`jobs/cooccurrence.py`, submitted through the `spark_default` connection
(`local[*]` by default; `spark://`, `yarn` or `k8s://` to scale out). Paths
are URIs under the `notellm_root` Variable (`hdfs://`, `s3a://`, `file://`).

1. `check_click_log` fails loudly when the logical date's click-log partition is
   missing or empty (retried: late data may still land).
2. `package_jobs` packages the jobs (`python -m jobs.package`: one zip for
   `--py-files` and an entry script; content-addressed, so reruns reuse it).
3. `mine_pairs` spark-submits the packaged job for that date; the job
   rewrites only its own `pairs/dt=<date>/` partition, so reruns are idempotent.
4. `check_pairs` refuses a partition without `_SUCCESS`, checks the statistics
   (too few events or pairs fails the run) and emits the `notellm_pairs` Asset
   with the partition in the event extra.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pendulum
from airflow.sdk import Param, dag, task

# Airflow 3 does not put the DAG folder on sys.path; the shared helpers live beside this file.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))
from notellm_common import (
    DEFAULT_ARGS,
    PACKAGE_TASK,
    PAIRS_ASSET,
    ROOT_TEMPLATE,
    package_jobs,
    spark_job,
)

# The job's settings are defined once, in jobs.config (standard library only: no Spark at parse time).
if str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from jobs.config import CooccurrenceConfig
from notellm.config import defaults, help_of
from notellm.layout import Layout

JOB = defaults(CooccurrenceConfig)
# The job's flags, rendered at run time: the layout under the root Variable, the run date, the Params.
SCORE_PARAMS = ("window_days", "upper", "lower", "top", "max_events_per_user", "max_gap_hours", "view_types",
                "click_types")


def cooccurrence_args(layout: Layout) -> list[str]:
    """``jobs/cooccurrence.py``'s command line for the logical date under ``layout``."""
    args = ["--events", layout.events, "--notes", layout.notes, "--out", layout.pairs,
            "--quarantine-out", layout.pairs_quarantine, "--run-date", "{{ ds }}"]
    for name in SCORE_PARAMS:
        args += ["--" + name.replace("_", "-"), "{{ params.%s }}" % name]
    return args


def _param(name: str, **schema) -> Param:
    """A Param whose default and description are the job setting's."""
    default = JOB[name]
    if isinstance(default, (list, tuple)):
        default, schema = ",".join(default), {"type": "string", **schema}   # passed as one comma-separated flag
    return Param(default, description=help_of(CooccurrenceConfig, name), **schema)


@dag(
    dag_id="notellm_pair_mining",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["notellm", "spark", "pairs"],
    doc_md=__doc__,
    params={
        "window_days": _param("window_days", type="integer", minimum=1),
        "upper": _param("upper", type="number"),
        "lower": _param("lower", type="number"),
        "top": _param("top", type="integer", minimum=1),
        "max_events_per_user": _param("max_events_per_user", type="integer", minimum=2),
        "max_gap_hours": _param("max_gap_hours", type="number", minimum=0),
        "view_types": _param("view_types"),
        "click_types": _param("click_types"),
        "min_events": Param(100, type="integer", minimum=0, description="fewer events in the window fails the run"),
        "min_pairs": Param(10, type="integer", minimum=0, description="fewer pairs fails the run"),
    },
)
def notellm_pair_mining():
    @task
    def check_click_log(ds=None, params=None) -> dict:
        """The logical date's click-log partition must exist and hold rows (counted from the footers)."""
        from notellm_common import layout

        from notellm import storage

        store = storage.LOCAL
        part = storage.join(store.qualify(layout().events), f"dt={ds}")
        files = store.list_files(part, ".parquet") if store.is_dir(part) else []
        if not files:
            raise FileNotFoundError(f"click log partition {part} is missing or has no Parquet files")
        rows = sum(storage.parquet_metadata(store, f.uri).num_rows for f in files)
        if rows == 0:
            raise ValueError(f"click log partition {part} is empty (0 rows in {len(files)} files)")
        print(f"{part}: {rows} events in {len(files)} files")
        return {"partition": part, "rows": rows}

    package = task(task_id=PACKAGE_TASK)(package_jobs)()

    mine_pairs = spark_job("mine_pairs", "cooccurrence", cooccurrence_args(Layout(ROOT_TEMPLATE)))

    @task(outlets=[PAIRS_ASSET])
    def check_pairs(ds=None, params=None, outlet_events=None) -> dict:
        """Refuse an unmarked partition; fail on suspiciously small output."""
        from notellm_common import layout

        from jobs.spark_input import require_success
        from notellm import storage

        part = storage.join(storage.LOCAL.qualify(layout().pairs), f"dt={ds}")
        stats = require_success(storage.LOCAL, part, "pairs")
        events_in = int(stats.get("events_in", 0))
        pairs_out = int(stats["pairs_written"])
        if events_in < params["min_events"]:
            raise ValueError(f"{part}: only {events_in} events in the window (min_events={params['min_events']})")
        if pairs_out < params["min_pairs"]:
            raise ValueError(f"{part}: only {pairs_out} pairs (min_pairs={params['min_pairs']})")
        summary = {"partition": part, "run_date": ds, "events_in": events_in, "pairs": pairs_out}
        outlet_events[PAIRS_ASSET].extra = summary
        print(summary)
        return summary

    check_click_log() >> package >> mine_pairs >> check_pairs()


notellm_pair_mining()
