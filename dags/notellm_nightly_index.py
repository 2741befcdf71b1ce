"""
### NoteLLM nightly index

Every night at 02:00 UTC, and whenever a new model is approved (the
`notellm_model` Asset):

1. `embed_notes`: embeds the note corpus with the approved model into the
   bucketed embedding store (only new or changed notes; unchanged ones reuse
   their stored vectors). `embed_gpus_per_node` > 0 runs it under `torchrun`,
   one rank per GPU; with `embed_nodes` > 1 the same command must be started on
   every node against `rdzv_endpoint` (docs/operations.md). A rerun recomputes
   only the buckets a killed run did not finish.
2. `publish_snapshot`: builds the FAISS index chosen under `max_index_memory`,
   runs the quality gates and publishes an atomic snapshot.

Consumers follow `<root>/index/snapshots/CURRENT`; the `notellm_index` Asset event carries
the snapshot path and the manifest's sha256. A failing gate fails
`publish_snapshot` without retry and leaves the previous snapshot live.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pendulum
from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task

# Airflow 3 does not put the DAG folder on sys.path; the shared helpers live beside this file.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))
from notellm_common import DEFAULT_ARGS, INDEX_ASSET, MODEL_ASSET

# The Params' defaults and help come from the indexing stage's settings (standard library only).
if str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from indexing.config import EmbedConfig, GateConfig, IndexConfig, RetentionConfig
from notellm.config import defaults, help_of

_INDEX, _GATE = defaults(IndexConfig), defaults(GateConfig)


@dag(
    dag_id="notellm_nightly_index",
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 2 * * *", timezone="UTC"), assets=MODEL_ASSET),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["notellm", "indexing", "faiss"],
    doc_md=__doc__,
    params={
        "index_key": Param(_INDEX["index_key"], type="string", description=help_of(IndexConfig, "index_key")),
        "max_index_memory": Param(_INDEX["max_index_memory"], type="string",
                                  description=help_of(IndexConfig, "max_index_memory")),
        "embed_gpus_per_node": Param(0, type="integer", minimum=0,
                                     description="GPUs per node for the embedding (torchrun ranks); 0 = one "
                                                 "process on this worker (CPU, or its first GPU)"),
        "embed_nodes": Param(1, type="integer", minimum=1,
                             description="nodes of the torchrun embedding job (each must run the same command)"),
        "rdzv_endpoint": Param("127.0.0.1:29517", type="string",
                               description="torchrun rendezvous host:port (with embed_nodes > 1: a host all "
                                           "nodes reach)"),
        "keep": Param(defaults(RetentionConfig)["keep"], type="integer", minimum=1,
                      description=help_of(RetentionConfig, "keep")),
        "min_ann_recall": Param(_GATE["min_ann_recall"], type="number",
                                description=help_of(GateConfig, "min_ann_recall")),
        "max_recall_drop": Param(_GATE["max_recall_drop"], type="number",
                                 description=help_of(GateConfig, "max_recall_drop")),
        "incremental": Param(defaults(EmbedConfig)["incremental"], type="boolean",
                             description=help_of(EmbedConfig, "incremental")),
    },
)
def notellm_nightly_index():
    @task(execution_timeout=pendulum.duration(hours=6))
    def embed_notes(params=None) -> dict:
        from notellm_common import last_json_line, paths, python, run_stage, torchrun_launcher

        p = paths()
        args = ["-m", "indexing.cli", "embed", "--models-root", str(p["models"]), "--notes", str(p["notes"]),
                "--emb-root", str(p["embeddings"]),
                "--incremental" if params["incremental"] else "--no-incremental"]
        gpus = params["embed_gpus_per_node"]
        if gpus > 0:
            launcher = torchrun_launcher(python(), params["embed_nodes"], gpus, "notellm-embed",
                                         params["rdzv_endpoint"])
            return last_json_line(run_stage(launcher + args))
        return last_json_line(run_stage([python(), *args]))

    @task(outlets=[INDEX_ASSET], execution_timeout=pendulum.duration(hours=4))
    def publish_snapshot(embedded: dict, ds=None, params=None, outlet_events=None) -> dict:
        from notellm_common import last_json_line, paths, python, run_stage

        p = paths()
        cmd = [python(), "-m", "indexing.cli", "publish", "--no-embed",
               "--models-root", str(p["models"]), "--notes", str(p["notes"]),
               "--emb-root", str(p["embeddings"]), "--snapshot-root", str(p["index"]),
               "--date", ds, "--index-key", params["index_key"], "--max-index-memory", params["max_index_memory"],
               "--keep", str(params["keep"]), "--min-ann-recall", str(params["min_ann_recall"]),
               "--max-recall-drop", str(params["max_recall_drop"])]
        # The newest complete split (if any) feeds the Recall@K gate against the live snapshot.
        splits = sorted(d for d in p["splits"].glob("dt=*") if (d / "_SUCCESS").exists() and d.name <= f"dt={ds}")
        if splits:
            cmd += ["--test-pairs", str(splits[-1] / "test_pairs"), "--pool", str(splits[-1] / "pool")]
        result = last_json_line(run_stage(cmd))
        result["embed"] = {k: embedded.get(k) for k in ("notes", "embedded", "reused")}
        outlet_events[INDEX_ASSET].extra = {"snapshot": result["snapshot"], "path": result["path"],
                                            "manifest_sha256": result["manifest_sha256"]}
        return result

    @task
    def verify_snapshot(published: dict) -> dict:
        """Open what consumers will open: CURRENT, checksums verified."""
        from notellm_common import last_json_line, paths, python, run_stage

        info = last_json_line(run_stage([python(), "-m", "indexing.cli", "info",
                                         "--snapshot-root", str(paths()["index"])]))
        if info["current"] != published["snapshot"]:
            raise RuntimeError(f"CURRENT points to {info['current']}, expected {published['snapshot']}")
        manifest = info["manifest"]
        return {"snapshot": info["current"], "num_vectors": manifest["num_vectors"], "metrics": manifest["metrics"]}

    verify_snapshot(publish_snapshot(embed_notes()))


notellm_nightly_index()
