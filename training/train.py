"""NoteLLM training driver (GCL + CSFT, Zhang et al., WWW 2024) on DeepSpeed ZeRO.

Usage::

    python -m training.train --config cfg.json [--set key=value ...]          # one process
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
continues with the same batches and loss trajectory.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import socket
import sys
import time
from pathlib import Path

import torch

from notellm.backbone import resolve_backbone
from notellm.metrics import in_batch_accuracy
from notellm import precision
from training.config import TrainConfig, deepspeed_config_path, resolve_deepspeed_config, resolve_zero3_auto
from training.loss import gather_with_local_grad
from training.data import batch_examples, load_training_pairs, local_examples
from training.model import NoteLLMTrainModel, parameter_groups, train_only_top_layers, unwrap_encoder_state
from training.sampler import UniqueNoteBatchSampler

log = logging.getLogger("training.train")

LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE")
# Test hook: exit abruptly (like SIGKILL, no cleanup) right after this step.
KILL_AFTER_ENV = "NOTELLM_TRAIN_KILL_AFTER_STEP"


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


def lr_lambda(warmup: int, total: int):
    """Linear warm-up to the peak, then linear decay to 0 at ``total`` steps."""
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))
    return f


def total_steps(cfg: TrainConfig, sampler: UniqueNoteBatchSampler) -> int:
    if cfg.max_steps is not None:
        return int(cfg.max_steps)
    whole = int(math.floor(cfg.epochs))
    steps = sum(sampler.steps_per_epoch(e) for e in range(whole))
    steps += int(round((cfg.epochs - whole) * sampler.steps_per_epoch(whole)))
    return max(1, steps)


class JsonlLog:
    """train_log.jsonl, truncated to the resumed step so a restart never duplicates rows."""

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        rows = []
        if path.exists():
            rows = [line for line in path.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= resume_step]
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(r + "\n" for r in rows))
        os.replace(tmp, path)

    def write(self, row: dict) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row, sort_keys=True) + "\n")


def _prune_checkpoints(ckpt_dir: Path, keep: int) -> None:
    tags = sorted((p for p in ckpt_dir.glob("step*") if p.is_dir()), key=lambda p: int(p.name[4:]))
    for old in tags[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def train(cfg: TrainConfig, return_model: bool = False):
    """Run (or resume) training; returns the metrics dict (rank 0 writes files), and with
    ``return_model`` also the in-memory NoteEncoder (for tests; under ZeRO-3 its
    parameters are partitioned)."""
    import deepspeed
    import torch.distributed as dist
    from deepspeed.accelerator import get_accelerator

    from notellm.encoder import NoteEncoder

    ensure_launch_env()
    accelerator = get_accelerator()
    deepspeed.init_distributed(dist_backend=accelerator.communication_backend_name(), verbose=False)
    rank, world = dist.get_rank(), dist.get_world_size()
    on_cuda = accelerator.device_name() == "cuda"
    use_bf16 = on_cuda if cfg.bf16 == "auto" else bool(cfg.bf16)
    if not on_cuda and world > 1 and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))

    out_dir = Path(cfg.output_dir)
    ckpt_dir = out_dir / "checkpoints"
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)

    # ---------------------------------------------------------------- data
    pairs, notes, report = load_training_pairs(cfg.pairs, cfg.notes, cfg.max_missing_fraction)
    if rank == 0:
        log.info("data: %s", report.summary())
        (out_dir / "data_report.json").write_text(json.dumps(report.__dict__, indent=2, default=str))
    sampler = UniqueNoteBatchSampler(pairs, cfg.batch_pairs, cfg.seed, world, rank)
    steps = total_steps(cfg, sampler)

    # ---------------------------------------------------------------- model
    torch.manual_seed(cfg.seed)
    backbone = resolve_backbone(cfg.backbone)
    encoder = NoteEncoder.build(backbone, dim=cfg.dim, template_version=cfg.template_version,
                                max_title_tokens=cfg.max_title_tokens, max_content_tokens=cfg.max_content_tokens,
                                seed=cfg.seed)
    if cfg.train_top_layers:
        counts = train_only_top_layers(encoder, cfg.train_top_layers)
        if rank == 0:
            log.info("training the top %d blocks only: %d of %d parameters", cfg.train_top_layers,
                     counts["trainable"], counts["total"])
    model = NoteLLMTrainModel(encoder, tau_init=cfg.tau_init, alpha=cfg.alpha)
    optimizer = torch.optim.AdamW(parameter_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999),
                                  eps=1e-8)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.warmup_steps, steps))
    ds_config = resolve_deepspeed_config(json.loads(deepspeed_config_path(cfg.deepspeed_config).read_text()),
                                         cfg, world, use_bf16)
    ds_config = resolve_zero3_auto(ds_config, encoder.lm.config.hidden_size)
    zero_stage = int(ds_config.get("zero_optimization", {}).get("stage", 0))
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=ds_config)
    device = engine.device

    # ---------------------------------------------------------------- resume
    start_step = 0
    if (ckpt_dir / "latest").exists():
        path, client = engine.load_checkpoint(str(ckpt_dir), load_module_strict=not cfg.train_top_layers)
        if path is None:
            raise RuntimeError(f"{ckpt_dir}: 'latest' exists but the checkpoint could not be loaded")
        start_step = int(client["step"])
        expected = list(sampler.position(start_step))
        if client.get("sampler", {}).get("next_position") != expected:
            raise RuntimeError(f"{ckpt_dir}: sampler position {client.get('sampler')} does not match the data "
                               f"({expected}); the pairs or batch size changed since the checkpoint")
        if rank == 0:
            log.info("resumed from %s at step %d", path, start_step)
    if rank == 0:
        (out_dir / "config.json").write_text(json.dumps({"train": cfg.to_dict(), "deepspeed": ds_config,
                                                         "world_size": world}, indent=2))
    train_log = JsonlLog(out_dir / "train_log.jsonl", start_step) if rank == 0 else None

    bar = None
    interactive = sys.stderr.isatty() if cfg.progress_bar == "auto" else bool(cfg.progress_bar)
    if rank == 0 and interactive:
        from tqdm import tqdm
        bar = tqdm(total=steps, initial=start_step, unit="step", dynamic_ncols=True)

    # "auto": notellm.precision's policy, so only where the CPU has native bf16.
    cpu_autocast = device.type == "cpu" and precision.use_bf16(
        {True: "bf16", False: "fp32", "auto": "auto"}[cfg.cpu_autocast_bf16], "cpu")
    kill_after = int(os.environ.get(KILL_AFTER_ENV, "-1"))
    engine.train()
    t_start = time.perf_counter()
    notes_done = tokens_done = 0
    for step in range(start_step, steps):
        t0 = time.perf_counter()
        examples = batch_examples(sampler.global_batch(step), pairs, notes, cfg.r, cfg.seed, step)
        mine = local_examples(examples, rank, world)
        encoded = [encoder.prompts.encode(e.note, task=e.task, hashtags_out=e.hashtags_out) for e in mine]
        batch = {k: v.to(device) for k, v in encoder.collate(encoded, with_labels=True).items()}
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=cpu_autocast):
            out = engine(**batch)
        lr_now = engine.get_lr()[0]  # the rate this step uses
        engine.backward(out.loss)
        engine.step()
        dt = time.perf_counter() - t0

        n_tokens = torch.tensor(float(batch["attention_mask"].sum().item()))
        if world > 1:
            dist.all_reduce(n_tokens)
        notes_done += 2 * cfg.batch_pairs
        tokens_done += int(n_tokens.item())
        acc = float("nan")
        if step % cfg.log_every == 0 or step == steps - 1:
            # in-batch retrieval accuracy of the global batch (collective on every rank)
            a = gather_with_local_grad(out.emb_a).float().cpu().numpy()
            b = gather_with_local_grad(out.emb_b).float().cpu().numpy()
            acc = in_batch_accuracy(a, b)
        row = {"step": step + 1, "l_cl": out.l_cl.item(), "l_gen": out.l_gen.item(), "loss": out.total.item(),
               "tau": out.tau.item(), "lr": lr_now, "samples_per_s": 2 * cfg.batch_pairs / dt, "tokens_per_s": n_tokens.item() / dt,
               "step_s": dt}
        if not math.isnan(acc):
            row["in_batch_acc"] = acc
        if rank == 0:
            train_log.write(row)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(l_cl=f"{row['l_cl']:.3f}", l_gen=f"{row['l_gen']:.3f}", tau=f"{row['tau']:.3f}")
            if step % cfg.log_every == 0 or step == steps - 1:
                log.info("step %d/%d l_cl=%.4f l_gen=%.4f loss=%.4f tau=%.4f lr=%.2e acc=%.3f %.2f samples/s",
                         step + 1, steps, row["l_cl"], row["l_gen"], row["loss"], row["tau"], row["lr"], acc,
                         row["samples_per_s"])
        done = step + 1
        if done % cfg.save_every == 0 or done == steps:
            client = {"step": done, "sampler": {"seed": cfg.seed, "batch_pairs": cfg.batch_pairs,
                                                "next_position": list(sampler.position(done))}}
            # Frozen weights are the backbone's own: a resume rebuilds them, so only what trains is saved.
            engine.save_checkpoint(str(ckpt_dir), tag=f"step{done}", client_state=client,
                                   exclude_frozen_parameters=bool(cfg.train_top_layers))
            if rank == 0:
                _prune_checkpoints(ckpt_dir, cfg.keep_checkpoints)
        if done == kill_after:
            sys.stdout.flush(), sys.stderr.flush()
            os._exit(137)
    if bar is not None:
        bar.close()
    wall = time.perf_counter() - t_start

    # ---------------------------------------------------------------- export
    if zero_stage == 3:
        full_state = engine._zero3_consolidated_16bit_state_dict()  # collective: every rank calls it
    else:
        full_state = engine.module.state_dict() if rank == 0 else None
    metrics = {}
    if rank == 0:
        tau = float(full_state["tau"])
        enc_state = unwrap_encoder_state(full_state)
        categories = sorted({n["category"] for n in notes.values()})
        encoder.save(out_dir / "model", state_dict=enc_state, tau=tau,
                     data_window={"start": report.window_start, "end": report.window_end},
                     extra={"seed": cfg.seed, "categories": categories, "train_steps": steps,
                            "pairs": str(cfg.pairs), "r": cfg.r, "alpha": cfg.alpha,
                            "zero_stage": zero_stage, "world_size": world})
        rows = [json.loads(line) for line in (out_dir / "train_log.jsonl").read_text().splitlines()]
        metrics = {
            "steps": steps, "resumed_from_step": start_step, "world_size": world, "zero_stage": zero_stage,
            "bf16": use_bf16, "cpu_autocast_bf16": cpu_autocast,
            "first": rows[0] if rows else None, "last": rows[-1] if rows else None,
            "wall_s_this_run": wall,
            "samples_per_s_this_run": notes_done / wall if wall > 0 else None,
            "tokens_per_s_this_run": tokens_done / wall if wall > 0 else None,
            "data": report.__dict__, "model_dir": str(out_dir / "model"),
        }
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
        log.info("saved %s (tau=%.4f) after %d steps", out_dir / "model", tau, steps)
    if world > 1:
        dist.barrier()
    # The process group is left up: DeepSpeed caches its groups per process, so
    # a later train() in the same process (tests, notebooks) reuses it.
    return (metrics, engine.module.encoder) if return_model else metrics


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None,
                        help="training config JSON (see training/config.py); defaults are the paper's")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (JSON value), repeatable")
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # deepspeed launcher
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = TrainConfig.load(args.config, args.set)
    train(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
