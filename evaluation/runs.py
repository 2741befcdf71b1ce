"""Training runs of the quality report's trained systems, each in a run folder named
by a digest of everything it depends on (a changed parameter never reuses, or
resumes, a model trained with other settings).

* NoteLLM variants: ``python -m training.train`` as a subprocess, exactly as the
  retraining DAG runs it (resumable: an interrupted run continues from its checkpoint).
* MiniLM fine-tuned on the same pairs: in process (:func:`evaluation.systems.minilm_finetune`).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from evaluation import protocol, systems
from evaluation.cache import key_digest
from notellm.files import atomic_write_json

# The MiniLM baseline's batches come from notellm.batching (the trainer's unique-note plan); part of its
# run key so a model fine-tuned on the earlier hand-copied batching is not reused.
MINILM_BATCHING = "notellm.batching.plan_epoch/1"


def notellm_overrides(variant: dict, prepared: protocol.PreparedData, cfg) -> dict:
    """The ``--set`` overrides of ``training.train`` for one NoteLLM variant."""
    return {"backbone": cfg.backbone, "pairs": prepared.train_pairs, "notes": prepared.notes,
            "max_steps": cfg.steps, "batch_pairs": cfg.batch_pairs,
            "lr": cfg.lr, "warmup_steps": cfg.warmup, "save_every": max(5, cfg.steps // 2),
            "log_every": 5, "seed": cfg.seed, **variant}


def train_notellm(name: str, variant: dict, prepared: protocol.PreparedData, work: Path, cfg,
                  generative_loss: bool = True) -> tuple[Path, dict]:
    """Train (or reuse) one NoteLLM variant; returns its run folder and the training costs and loss curve."""
    overrides = notellm_overrides(variant, prepared, cfg)
    digest = key_digest({**overrides, "train_pairs": protocol.data_digest(prepared.train_pairs)})
    run_dir = work / "runs" / f"{name}-{digest}"
    overrides["output_dir"] = run_dir
    cmd = [sys.executable, "-m", "training.train"]
    for k, v in overrides.items():
        cmd += ["--set", f"{k}={v}"]
    t0 = time.perf_counter()
    if not (run_dir / "metrics.json").exists():
        protocol.run_subprocess(name, cmd)
    wall = time.perf_counter() - t0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return run_dir, {"train_wall_s": round(wall, 1) if wall > 1 else metrics.get("wall_s_this_run"),
                     "train_wall_s_in_trainer": metrics.get("wall_s_this_run"),
                     "train_samples_per_s": metrics.get("samples_per_s_this_run"),
                     "loss_curve": read_loss_curve(run_dir / "train_log.jsonl", generative_loss),
                     "command": " ".join(map(str, cmd))}


def read_loss_curve(path: Path, generative_loss: bool = True) -> dict:
    """``{"step", "l_cl", "l_gen"}`` lists from a trainer's log (l_gen None where there is no CSFT)."""
    curve: dict[str, list] = {"step": [], "l_cl": [], "l_gen": []}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        curve["step"].append(row["step"])
        curve["l_cl"].append(row["l_cl"])
        curve["l_gen"].append(row["l_gen"] if generative_loss else None)
    return curve


def minilm_finetuned(prepared: protocol.PreparedData, notes_all: dict, work: Path, cfg,
                     device: str = "cpu") -> tuple[Path, dict]:
    """Fine-tune (or reuse) MiniLM on the training pairs; the model does not depend on the test set."""
    ft_key = {"steps": cfg.steps, "batch_pairs": cfg.batch_pairs, "seed": cfg.seed,
              "train_pairs": protocol.data_digest(prepared.train_pairs), "batching": MINILM_BATCHING}
    model_dir = work / "runs" / f"minilm_ft-{key_digest(ft_key)}"
    if (model_dir / "finetune.json").exists():
        return model_dir, json.loads((model_dir / "finetune.json").read_text())
    ft = systems.minilm_finetune(protocol.read_train_pairs(prepared), notes_all, model_dir, cfg.steps,
                                 cfg.batch_pairs, seed=cfg.seed, device=device)
    atomic_write_json(model_dir / "finetune.json", ft, indent=None)
    return model_dir, ft
