"""NoteLLM training driver (GCL + CSFT, Zhang et al., WWW 2024) on DeepSpeed ZeRO.

Usage::

    python -m training.train --config cfg.json [--set key=value ...] [--lr 1e-4 ...]   # one process
    deepspeed --num_gpus N --module training.train --config cfg.json
    torchrun --nproc_per_node N -m training.train --config cfg.json

A plain process sets the single-rank launcher environment itself (DeepSpeed
otherwise tries mpi4py). Outputs under ``output_dir``::

    model/               NoteEncoder.save: HF safetensors + projection + notellm.json side-car
    checkpoints/         DeepSpeed checkpoints (engine, optimizer, scheduler, sampler position)
    train_log.jsonl      one row per step: step, l_cl, l_gen, loss, tau, lr, acc, samples_per_s, ...
    data_report.json     pairs read / used / refused and why
    metrics.json         run summary
    config.json          the resolved training config and DeepSpeed config

Re-running with the same ``output_dir`` resumes from the last checkpoint
(weights, optimizer, LR schedule and sampler position), so a killed job
continues with the same batches and loss trajectory. Every setting and its
help: ``training/config.py`` (``--help``). Rank 0 prints the result line
(the metrics); the other ranks print nothing.
"""

from __future__ import annotations

import os
import socket
import sys

from notellm import cli
from training.config import TrainConfig
from training.trainer import Trainer

LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_launch_env() -> bool:
    """Single-rank environment when no launcher set one. Returns True if set here."""
    if all(k in os.environ for k in LAUNCH_ENV):
        if os.environ["MASTER_PORT"] == "0" and os.environ["WORLD_SIZE"] != "1":
            # torchrun --master_port 0 hands port 0 to the workers, whose rendezvous then hangs
            raise RuntimeError("MASTER_PORT=0 with several ranks: pass a real --master_port to the launcher")
        return False
    if "RANK" in os.environ or "WORLD_SIZE" in os.environ:
        missing = [k for k in LAUNCH_ENV if k not in os.environ]
        raise RuntimeError(f"partial launcher environment: {missing} unset")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", LOCAL_RANK="0",
                      WORLD_SIZE="1")
    return True


def train(cfg: TrainConfig, return_model: bool = False):
    """Run (or resume) training; returns the metrics dict (rank 0 writes files), and with
    ``return_model`` also the in-memory NoteEncoder (for tests; under ZeRO-3 its
    parameters are partitioned). The process group is left up: DeepSpeed caches
    its groups per process, so a later train() in the same process reuses it."""
    ensure_launch_env()
    trainer = Trainer(cfg)
    trainer.setup()
    trainer.resume()
    trainer.fit()
    metrics = trainer.export()
    return (metrics, trainer.engine.module.encoder) if return_model else metrics


def _run(cfg: TrainConfig, timer: cli.Timer) -> dict | None:
    with timer.phase("train"):
        metrics = train(cfg)
    return metrics or None  # only rank 0 has metrics; the other ranks stay silent


def _strip_launcher_rank(argv: list[str]) -> list[str]:
    """The deepspeed launcher appends --local_rank=N; the rank travels in LOCAL_RANK as well."""
    kept, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg.startswith("--local_rank=") or arg.startswith("--local-rank="):
            os.environ.setdefault("LOCAL_RANK", arg.split("=", 1)[1])
        elif arg in ("--local_rank", "--local-rank") and i + 1 < len(argv):
            os.environ.setdefault("LOCAL_RANK", argv[i + 1])
            skip = True
        else:
            kept.append(arg)
    return kept


def main(argv: list[str] | None = None) -> int:
    argv = _strip_launcher_rank(list(sys.argv[1:] if argv is None else argv))
    return cli.main(_run, TrainConfig, argv, prog="python -m training.train")


if __name__ == "__main__":
    sys.exit(main())
