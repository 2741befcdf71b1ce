"""
### NoteLLM retraining (weekly, or triggered by an ML engineer)

Trigger with **Params** (base model, steps, learning rate, nodes x GPUs, DeepSpeed
config; defaults and help from `training/config.py`) from the UI ("Trigger DAG w/ config") or
`airflow dags trigger notellm_retraining --conf '{"max_steps": 400}'`.

1. `package_jobs` + `split_pairs`: the split job, packaged and spark-submitted
   through `spark_default` like the pair-mining job: training pairs from the pairs partition `test_days` before the
   logical date (its window is the pair-mining DAG's `window_days`); test pairs +
   pool from the partition of the logical date, restricted to notes unseen in
   training (the NoteLLM protocol).
2. `train`: the DeepSpeed job in a subprocess: with `gpus_per_node` > 0 under
   `torchrun --nnodes {nodes} --nproc-per-node {gpus_per_node} --rdzv-backend c10d
   --rdzv-endpoint HOST:PORT --rdzv-id <run folder name>` (one rank per GPU), a
   single CPU process otherwise. With `nodes` > 1 this worker hosts the rendezvous
   and every other node must start the same command, which the task writes to
   `<run folder>/launch.json` (docs/operations.md, "Multi-node retraining").
   `batch_pairs` is the global batch over all nodes x GPUs and must be divisible
   by it. Its output directory is derived from the logical date and the Params, so
   a retried task resumes from the last checkpoint instead of starting over.
   Bounded by `execution_timeout`.
3. `evaluate`: Recall@K on the test pairs for the new model, the untrained
   backbone and the currently approved model (same test set; on this worker's GPU
   when it has one; at most `eval_pool_sample` pool notes; the approved model's
   vectors come from the nightly embedding store where it has them).
4. `register`: the quality gate (beat the untrained backbone, reach `min_recall`,
   lose at most `max_recall_regression` against the approved model); only a
   passing model becomes `APPROVED.json` and emits the `notellm_model` Asset
   (which triggers the nightly index). A refusal fails without retry.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pendulum
from airflow.sdk import CronTriggerTimetable, Param, dag, task

# Airflow 3 does not put the DAG folder on sys.path; the shared helpers live beside this file.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))
from notellm_common import (
    DEFAULT_ARGS,
    MODEL_ASSET,
    PACKAGE_TASK,
    ROOT_TEMPLATE,
    package_jobs,
    spark_job,
    torchrun_launcher,
)

from notellm.config import defaults, help_of
from notellm.layout import Layout
from notellm.prompts import TEMPLATE_VERSIONS
from training.config import EvaluateConfig, RegisterConfig, TrainConfig

TRAIN = defaults(TrainConfig)
REGISTER = defaults(RegisterConfig)
# The DAG bounds every run: TrainConfig trains one epoch unless max_steps is set.
DEFAULT_MAX_STEPS = 200
CPU_AUTOCAST = {"off": False, "auto": "auto", "on": True}  # Param value -> TrainConfig.cpu_autocast_bf16
# Params that decide what a training run computes: the run folder is named by their digest. The world
# size (nodes x gpus_per_node) is one of them: DeepSpeed's ZeRO checkpoints are partitioned per rank,
# so a run resumes only with the world size it started with (where the rendezvous is does not matter).
RUN_KEYS = ("base_model", "template_version", "test_days", "max_steps", "batch_pairs", "learning_rate", "nodes",
            "gpus_per_node", "deepspeed_config", "train_top_layers", "cpu_autocast_bf16")
RDZV_PORT = 29518          # default rendezvous port of a multi-node retrain (the nightly embedding uses 29517)
# Pool notes the evaluate task scores at most (docs/operations.md, "Evaluation cost"): every test
# pair's endpoints plus a seeded sample of the rest.
EVAL_POOL_SAMPLE = 20_000


def run_dir_of(models: Path, ds: str, params: dict) -> Path:
    """Same date + same Params -> same directory, so a retried task resumes from its checkpoints."""
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps({k: params[k] for k in RUN_KEYS}, sort_keys=True).encode()).hexdigest()[:8]
    return models / "runs" / f"{ds}-{digest}"


def split_args(layout: Layout) -> list[str]:
    """``jobs/split.py``'s command line for the logical date (train partition ``test_days`` earlier)."""
    return ["--pairs", layout.pairs, "--notes", layout.notes, "--events", layout.events,
            "--train-date", "{{ macros.ds_add(ds, -params.test_days) }}", "--test-date", "{{ ds }}",
            "--out", layout.splits + "/dt={{ ds }}"]


def world_size(params: dict) -> int:
    """Ranks of the training job: nodes x gpus_per_node, or the one CPU process."""
    return params["nodes"] * params["gpus_per_node"] if params["gpus_per_node"] > 0 else 1


def check_launch(params: dict) -> None:
    """ValueError for Params that cannot launch (the task fails without retry)."""
    world = world_size(params)
    if params["gpus_per_node"] == 0 and params["nodes"] > 1:
        raise ValueError(f"nodes={params['nodes']} with gpus_per_node=0: a CPU run is one process on this worker")
    if params["batch_pairs"] % world:
        raise ValueError(f"batch_pairs={params['batch_pairs']} is the global number of pairs per step over all "
                         f"{world} ranks ({params['nodes']} nodes x {params['gpus_per_node']} GPUs) and must be "
                         "divisible by it")


def train_command(python: str, params: dict, train_pairs: str, notes: Path, run_dir: Path) -> list[str]:
    """``training.train`` under the launcher the Params ask for: torchrun over nodes x gpus_per_node
    (rendezvous id = the run folder's name, the same on every node and for a retry), or one CPU
    process. ValueError for Params that cannot launch (:func:`check_launch`)."""
    check_launch(params)
    overrides = [
        f"backbone={params['base_model']}", f"pairs={train_pairs}", f"notes={notes}",
        f"output_dir={run_dir}", f"max_steps={params['max_steps']}", f"batch_pairs={params['batch_pairs']}",
        f"lr={params['learning_rate']}", f"template_version={params['template_version']}",
        f"deepspeed_config={params['deepspeed_config']}", f"train_top_layers={params['train_top_layers']}",
        "cpu_autocast_bf16=" + str(CPU_AUTOCAST[params["cpu_autocast_bf16"]]).lower(),
        f"save_every={max(1, params['max_steps'] // 4)}", "log_every=5",
    ]
    sets = [a for o in overrides for a in ("--set", o)]
    if params["gpus_per_node"] > 0:
        launcher = torchrun_launcher(python, params["nodes"], params["gpus_per_node"], run_dir.name,
                                     params["rdzv_endpoint"], RDZV_PORT)
        return launcher + ["-m", "training.train"] + sets
    return [python, "-m", "training.train"] + sets


def evaluate_command(python: str, params: dict, model_dir: str, split: dict, p: dict, out: str) -> list[str]:
    """``training.evaluate`` of the new model against the backbone and the approved model, on a pool
    sample, reusing the approved model's vectors from the nightly embedding store."""
    return [python, "-m", "training.evaluate", "--model", model_dir, "--pairs", split["test_pairs"],
            "--pool", split["pool"], "--notes", str(p["notes"]), "--backbone-baseline",
            "--approved-root", str(p["models"]), "--embeddings-root", str(p["embeddings"]),
            "--pool-sample", str(params["eval_pool_sample"]), "--out", out]


def write_launch(run_dir: Path, cmd: list[str], params: dict) -> Path:
    """``<run_dir>/launch.json``: the exact command every node of a multi-node run starts."""
    from notellm.files import atomic_write_json

    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "launch.json"
    atomic_write_json(path, {"argv": cmd, "nodes": params["nodes"], "gpus_per_node": params["gpus_per_node"],
                             "world_size": world_size(params), "rdzv_endpoint": cmd[cmd.index("--rdzv-endpoint") + 1],
                             "rdzv_id": cmd[cmd.index("--rdzv-id") + 1]})
    return path


@dag(
    dag_id="notellm_retraining",
    schedule=CronTriggerTimetable("0 3 * * 1", timezone="UTC"),  # Mondays 03:00 UTC
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["notellm", "training", "deepspeed"],
    doc_md=__doc__,
    params={
        "base_model": Param(TRAIN["backbone"], type="string", description=help_of(TrainConfig, "backbone")),
        "template_version": Param(TRAIN["template_version"], enum=list(TEMPLATE_VERSIONS)),
        "test_days": Param(7, type="integer", minimum=1, description="later days held out for the test set"),
        "max_steps": Param(DEFAULT_MAX_STEPS, type="integer", minimum=1, description=help_of(TrainConfig, "max_steps")),
        "batch_pairs": Param(TRAIN["batch_pairs"], type="integer", minimum=2,
                             description=help_of(TrainConfig, "batch_pairs") + "; must be divisible by nodes x "
                                         "gpus_per_node"),
        "learning_rate": Param(TRAIN["lr"], type="number", exclusiveMinimum=0, description=help_of(TrainConfig, "lr")),
        "cpu_autocast_bf16": Param({v: k for k, v in CPU_AUTOCAST.items()}[TRAIN["cpu_autocast_bf16"]],
                                   enum=list(CPU_AUTOCAST), description=help_of(TrainConfig, "cpu_autocast_bf16")),
        "train_top_layers": Param(TRAIN["train_top_layers"], type="integer", minimum=0,
                                  description=help_of(TrainConfig, "train_top_layers")),
        "nodes": Param(1, type="integer", minimum=1,
                       description="nodes of the torchrun job (> 1: this worker hosts the rendezvous, every other "
                                   "node starts the command of <run folder>/launch.json)"),
        "gpus_per_node": Param(0, type="integer", minimum=0,
                               description="GPUs (ranks) per node; 0 = one CPU process on this worker"),
        "rdzv_endpoint": Param("", type="string",
                               description="torchrun c10d rendezvous host:port; empty = this worker (127.0.0.1 for "
                                           f"one node, else its FQDN:{RDZV_PORT})"),
        "eval_pool_sample": Param(EVAL_POOL_SAMPLE, type="integer", minimum=0,
                                  description=help_of(EvaluateConfig, "pool_sample")),
        "deepspeed_config": Param(TRAIN["deepspeed_config"], enum=["zero2", "zero3"]),
        "timeout_minutes": Param(240, type="integer", minimum=1),
        "min_recall": Param(REGISTER["min_recall"], type="number", description=help_of(RegisterConfig, "min_recall")),
        "max_recall_regression": Param(REGISTER["max_regression"], type="number",
                                       description=help_of(RegisterConfig, "max_regression")),
    },
)
def notellm_retraining():
    package = task(task_id=PACKAGE_TASK)(package_jobs)()

    split_job = spark_job("split_pairs", "split", split_args(Layout(ROOT_TEMPLATE)))

    @task
    def split_outputs(ds=None) -> dict:
        """The split's tables, once its _SUCCESS is there."""
        from notellm_common import layout

        from jobs.spark_input import require_success
        from notellm import storage

        out = storage.join(storage.LOCAL.qualify(layout().splits), f"dt={ds}")
        require_success(storage.LOCAL, out, "split")
        return {"split": out, **{name: storage.join(out, name) for name in ("train_pairs", "test_pairs", "pool")}}

    @task(execution_timeout=pendulum.duration(hours=8))
    def train(split: dict, ds=None, params=None) -> dict:
        from airflow.sdk.exceptions import AirflowFailException
        from notellm_common import paths, python, run_stage

        p = paths()
        run_dir = run_dir_of(p["models"], ds, params)
        try:
            cmd = train_command(python(), params, split["train_pairs"], p["notes"], run_dir)
        except ValueError as exc:      # Params that cannot launch: a retry cannot fix them
            raise AirflowFailException(str(exc)) from None
        if params["nodes"] > 1:
            print(f"multi-node run: start this on the other {params['nodes'] - 1} node(s) "
                  f"(also in {write_launch(run_dir, cmd, params)}):\n  {shlex.join(cmd)}", flush=True)
        run_stage(cmd, timeout=params["timeout_minutes"] * 60)
        return {"run_dir": str(run_dir), "model_dir": str(run_dir / "model")}

    @task
    def evaluate(trained: dict, split: dict, params=None) -> dict:
        from notellm_common import paths, python, run_stage

        out = trained["run_dir"] + "/eval.json"
        run_stage(evaluate_command(python(), params, trained["model_dir"], split, paths(), out))
        return {"eval": out}

    @task(outlets=[MODEL_ASSET])
    def register(trained: dict, evaluation: dict, params=None, outlet_events=None) -> dict:
        from notellm_common import last_json_line, paths, python, run_stage

        record = last_json_line(run_stage([
            python(), "-m", "training.register", "--model", trained["model_dir"], "--metrics", evaluation["eval"],
            "--models-root", str(paths()["models"]), "--k", str(REGISTER["k"]),
            "--min-recall", str(params["min_recall"]), "--max-regression", str(params["max_recall_regression"])]))
        outlet_events[MODEL_ASSET].extra = {"model_dir": record["model_dir"], "model_id": record["model_id"]}
        return record

    split = split_outputs()
    package >> split_job >> split
    trained = train(split)
    register(trained, evaluate(trained, split))


notellm_retraining()
