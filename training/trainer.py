"""The NoteLLM trainer on DeepSpeed ZeRO: setup, resume, one step, checkpoint, export.

``training/train.py`` is the thin driver around it. One :class:`Trainer` per
run; every rank builds one, rank 0 writes the files. The loss is GCL + CSFT
(``training/model.py``); a global batch of ``batch_pairs`` unique-note pairs is
split over the ranks and the contrastive loss sees the whole batch through an
all-gather (``training/loss.py``), so gradient accumulation is never used.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path

import torch

from notellm import cli, precision
from notellm.backbone import resolve_backbone
from notellm.faults import fault_point
from notellm.files import atomic_path, atomic_write_json, atomic_write_text
from notellm.integrity import verify_sums, write_sums
from notellm.metrics import in_batch_accuracy
from notellm.schedule import linear_warmup_decay
from training.config import TrainConfig, deepspeed_config_path, resolve_deepspeed_config, resolve_zero3_auto
from training.data import batch_examples, load_training_pairs, local_examples
from training.loss import gather_with_local_grad
from training.model import NoteLLMTrainModel, parameter_groups, train_only_top_layers, unwrap_encoder_state
from training.sampler import UniqueNoteBatchSampler

log = logging.getLogger(__name__)

def total_steps(cfg: TrainConfig, sampler: UniqueNoteBatchSampler) -> int:
    if cfg.max_steps is not None:
        return int(cfg.max_steps)
    whole = int(math.floor(cfg.epochs))
    steps = sum(sampler.steps_per_epoch(e) for e in range(whole))
    steps += int(round((cfg.epochs - whole) * sampler.steps_per_epoch(whole)))
    return max(1, steps)


class JsonlLog:
    """train_log.jsonl, truncated to the resumed step so a restart never duplicates rows.

    A last line torn by a kill (no newline, or not JSON) is dropped; a damaged
    line before it is an error naming the file and line."""

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        rows = []
        if path.exists():
            lines = path.read_text(errors="replace").split("\n")
            torn = lines.pop()   # after the last newline: empty, or a torn write
            if torn.strip():
                log.warning("%s: dropping a torn last line (%d chars)", path, len(torn))
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError:
                    if number == len(lines):   # a complete-looking but cut last line
                        log.warning("%s: dropping an unparseable last line", path)
                        continue
                    raise cli.BadInput(f"{path}: line {number} is not JSON; the training log is damaged") from None
                if row["step"] <= resume_step:
                    rows.append(line)
        with atomic_path(path) as tmp:
            tmp.write_text("".join(r + "\n" for r in rows))

    def write(self, row: dict) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row, sort_keys=True) + "\n")

    def rows(self) -> list[dict]:
        return [json.loads(line) for line in self.path.read_text().splitlines()]


LATEST = "latest"
_TAG = re.compile(r"^step(\d+)$")


def latest_checkpoint(ckpt_dir: Path) -> str | None:
    """The tag ``latest`` names (None when there is none yet); refused unless it is ``step<N>``."""
    path = Path(ckpt_dir) / LATEST
    if not path.exists():
        return None
    tag = path.read_text(errors="replace").strip()
    if not _TAG.match(tag):
        raise cli.BadInput(f"{path}: names {tag[:80]!r}, not a checkpoint tag step<N>")
    return tag


def prune_checkpoints(ckpt_dir: Path, keep: int) -> None:
    """Keep the newest ``keep`` tags and always the one ``latest`` names; remove the rest
    (a tag newer than ``latest``, left by a save killed before it was listed, goes too)."""
    live = latest_checkpoint(ckpt_dir)
    tags = sorted((p for p in ckpt_dir.glob("step*") if p.is_dir() and _TAG.match(p.name)),
                  key=lambda p: int(p.name[4:]))
    live_step = int(live[4:]) if live else -1
    unlisted = [p for p in tags if int(p.name[4:]) > live_step]
    listed = [p for p in tags if int(p.name[4:]) <= live_step]
    for old in unlisted + (listed[:-keep] if keep > 0 else []):
        if old.name != live:
            shutil.rmtree(old, ignore_errors=True)


class Trainer:
    """Call :meth:`setup`, :meth:`resume`, :meth:`fit`, then :meth:`export`."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.out_dir = Path(cfg.output_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.start_step = 0
        self.last_saved: int | None = None
        self.notes_done = self.tokens_done = 0
        self.wall_s = 0.0

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        import deepspeed
        import torch.distributed as dist
        from deepspeed.accelerator import get_accelerator

        cfg = self.cfg
        accelerator = get_accelerator()
        deepspeed.init_distributed(dist_backend=accelerator.communication_backend_name(), verbose=False)
        self.dist = dist
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        on_cuda = accelerator.device_name() == "cuda"
        self.use_bf16 = on_cuda if cfg.bf16 == "auto" else bool(cfg.bf16)
        if not on_cuda and self.world > 1 and "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // self.world))
        if self.rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self._setup_data()
        self._setup_model(deepspeed)
        self.device = self.engine.device
        # "auto": notellm.precision's policy, so only where the CPU has native bf16.
        self.cpu_autocast = self.device.type == "cpu" and precision.use_bf16(
            {True: "bf16", False: "fp32", "auto": "auto"}[cfg.cpu_autocast_bf16], "cpu")

    def _setup_data(self) -> None:
        cfg = self.cfg
        self.pairs, self.notes, self.report = load_training_pairs(cfg.pairs, cfg.notes, cfg.max_missing_fraction)
        if self.rank == 0:
            log.info("data: %s", self.report.summary())
            atomic_write_json(self.out_dir / "data_report.json", self.report.__dict__)
        self.sampler = UniqueNoteBatchSampler(self.pairs, cfg.batch_pairs, cfg.seed, self.world, self.rank)
        self.steps = total_steps(cfg, self.sampler)

    def _setup_model(self, deepspeed) -> None:
        from notellm.encoder import NoteEncoder

        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        self.encoder = NoteEncoder.build(resolve_backbone(cfg.backbone), dim=cfg.dim,
                                         template_version=cfg.template_version,
                                         max_title_tokens=cfg.max_title_tokens,
                                         max_content_tokens=cfg.max_content_tokens, seed=cfg.seed)
        if cfg.train_top_layers:
            counts = train_only_top_layers(self.encoder, cfg.train_top_layers)
            if self.rank == 0:
                log.info("training the top %d blocks only: %d of %d parameters", cfg.train_top_layers,
                         counts["trainable"], counts["total"])
        model = NoteLLMTrainModel(self.encoder, tau_init=cfg.tau_init, alpha=cfg.alpha)
        optimizer = torch.optim.AdamW(parameter_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999),
                                      eps=1e-8)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_decay(cfg.warmup_steps, self.steps))
        ds = resolve_deepspeed_config(json.loads(deepspeed_config_path(cfg.deepspeed_config).read_text()),
                                      cfg, self.world, self.use_bf16)
        self.ds_config = resolve_zero3_auto(ds, self.encoder.lm.config.hidden_size)
        self.zero_stage = int(self.ds_config.get("zero_optimization", {}).get("stage", 0))
        self.engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                                    config=self.ds_config)

    # ------------------------------------------------------------------ resume
    def resume(self) -> int:
        """Continue from the latest checkpoint (weights, optimizer, schedule, sampler position)."""
        cfg = self.cfg
        tag = latest_checkpoint(self.ckpt_dir)
        if tag is not None:
            verify_sums(self.ckpt_dir / tag)   # before DeepSpeed unpickles anything of it
            path, client = self.engine.load_checkpoint(str(self.ckpt_dir), tag=tag,
                                                       load_module_strict=not cfg.train_top_layers)
            if path is None:
                raise RuntimeError(f"{self.ckpt_dir}: 'latest' exists but the checkpoint could not be loaded")
            self.start_step = self.last_saved = int(client["step"])
            expected = list(self.sampler.position(self.start_step))
            if client.get("sampler", {}).get("next_position") != expected:
                raise RuntimeError(f"{self.ckpt_dir}: sampler position {client.get('sampler')} does not match the "
                                   f"data ({expected}); the pairs or batch size changed since the checkpoint")
            if self.rank == 0:
                log.info("resumed from %s at step %d", path, self.start_step)
        if self.rank == 0:
            atomic_write_json(self.out_dir / "config.json", {"train": cfg.to_dict(), "deepspeed": self.ds_config,
                                                            "world_size": self.world})
        self.train_log = JsonlLog(self.out_dir / "train_log.jsonl", self.start_step) if self.rank == 0 else None
        return self.start_step

    # ------------------------------------------------------------------ loop
    def fit(self) -> None:
        cfg, bar = self.cfg, None
        interactive = sys.stderr.isatty() if cfg.progress_bar == "auto" else bool(cfg.progress_bar)
        if self.rank == 0 and interactive:
            from tqdm import tqdm
            bar = tqdm(total=self.steps, initial=self.start_step, unit="step", dynamic_ncols=True)
        self.engine.train()
        t_start = time.perf_counter()
        for step in range(self.start_step, self.steps):
            row = self.step(step)
            if self.rank == 0:
                self._record(row, step, bar)
            done = step + 1
            if done % cfg.save_every == 0 or done == self.steps:
                self.save_checkpoint(done)
        if bar is not None:
            bar.close()
        self.wall_s = time.perf_counter() - t_start

    def step(self, step: int) -> dict:
        """One optimizer step on the global batch ``step``; returns its log row."""
        cfg, t0 = self.cfg, time.perf_counter()
        examples = batch_examples(self.sampler.global_batch(step), self.pairs, self.notes, cfg.r, cfg.seed, step)
        mine = local_examples(examples, self.rank, self.world)
        encoded = [self.encoder.prompts.encode(e.note, task=e.task, hashtags_out=e.hashtags_out) for e in mine]
        batch = {k: v.to(self.device) for k, v in self.encoder.collate(encoded, with_labels=True).items()}
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=self.cpu_autocast):
            out = self.engine(**batch)
        lr_now = self.engine.get_lr()[0]  # the rate this step uses
        # [tokens, non-finite losses] summed over ranks: every rank stops together, before the
        # update, so no non-finite weights reach a checkpoint.
        counts = torch.tensor([float(batch["attention_mask"].sum().item()),
                               0.0 if math.isfinite(out.total.item()) else 1.0])
        if self.world > 1:
            self.dist.all_reduce(counts)
        if counts[1].item() > 0:
            raise cli.Diverged(f"non-finite loss at step {step + 1} (l_cl={out.l_cl.item()}, "
                               f"l_gen={out.l_gen.item()}, tau={out.tau.item()}); the last checkpoint is kept",
                               {"step": step + 1, "last_checkpoint_step": self.last_saved})
        self.engine.backward(out.loss)
        self.engine.step()
        took = time.perf_counter() - t0
        n_tokens = counts[0]
        self.notes_done += 2 * cfg.batch_pairs
        self.tokens_done += int(n_tokens.item())
        row = {"step": step + 1, "l_cl": out.l_cl.item(), "l_gen": out.l_gen.item(), "loss": out.total.item(),
               "tau": out.tau.item(), "lr": lr_now, "samples_per_s": 2 * cfg.batch_pairs / took,
               "tokens_per_s": n_tokens.item() / took, "step_s": took}
        if step % cfg.log_every == 0 or step == self.steps - 1:
            # in-batch retrieval accuracy of the global batch (collective on every rank)
            a = gather_with_local_grad(out.emb_a).float().cpu().numpy()
            b = gather_with_local_grad(out.emb_b).float().cpu().numpy()
            row["in_batch_acc"] = in_batch_accuracy(a, b)
        return row

    def _record(self, row: dict, step: int, bar) -> None:
        self.train_log.write(row)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(l_cl=f"{row['l_cl']:.3f}", l_gen=f"{row['l_gen']:.3f}", tau=f"{row['tau']:.3f}")
        if "in_batch_acc" in row:
            log.info("step %d/%d l_cl=%.4f l_gen=%.4f loss=%.4f tau=%.4f lr=%.2e acc=%.3f %.2f samples/s",
                     step + 1, self.steps, row["l_cl"], row["l_gen"], row["loss"], row["tau"], row["lr"],
                     row["in_batch_acc"], row["samples_per_s"])

    def save_checkpoint(self, done: int) -> None:
        cfg = self.cfg
        client = {"step": done, "sampler": {"seed": cfg.seed, "batch_pairs": cfg.batch_pairs,
                                            "next_position": list(self.sampler.position(done))}}
        # Frozen weights are the backbone's own: a resume rebuilds them, so only what trains is saved.
        tag = f"step{done}"
        # DeepSpeed's own 'latest' is a plain write; ours moves only once every rank's files are
        # durable and listed in the tag's SHA256SUMS.json, then by an atomic replace.
        self.engine.save_checkpoint(str(self.ckpt_dir), tag=tag, client_state=client, save_latest=False,
                                    exclude_frozen_parameters=bool(cfg.train_top_layers))
        if self.world > 1:
            self.dist.barrier()
        if self.rank == 0:
            fault_point("checkpoint", "files_written")
            write_sums(self.ckpt_dir / tag)
            fault_point("checkpoint", "sums_written")
            atomic_write_text(self.ckpt_dir / LATEST, tag)
            fault_point("checkpoint", "latest_swapped")
            prune_checkpoints(self.ckpt_dir, cfg.keep_checkpoints)
        if self.world > 1:
            self.dist.barrier()
        self.last_saved = done

    # ------------------------------------------------------------------ export
    def export(self) -> dict:
        """Save model/ (rank 0) and metrics.json; returns the metrics (empty on other ranks)."""
        cfg = self.cfg
        if self.zero_stage == 3:
            full_state = self.engine._zero3_consolidated_16bit_state_dict()  # collective: every rank calls it
        else:
            full_state = self.engine.module.state_dict() if self.rank == 0 else None
        metrics: dict = {}
        if self.rank == 0:
            tau = float(full_state["tau"])
            categories = sorted({n["category"] for n in self.notes.values()})
            self.encoder.save(self.out_dir / "model", state_dict=unwrap_encoder_state(full_state), tau=tau,
                              data_window={"start": self.report.window_start, "end": self.report.window_end},
                              extra={"seed": cfg.seed, "categories": categories, "train_steps": self.steps,
                                     "pairs": str(cfg.pairs), "r": cfg.r, "alpha": cfg.alpha,
                                     "zero_stage": self.zero_stage, "world_size": self.world})
            rows, wall = self.train_log.rows(), self.wall_s
            metrics = {
                "steps": self.steps, "resumed_from_step": self.start_step, "world_size": self.world,
                "zero_stage": self.zero_stage, "bf16": self.use_bf16, "cpu_autocast_bf16": self.cpu_autocast,
                "first": rows[0] if rows else None, "last": rows[-1] if rows else None,
                "wall_s_this_run": wall,
                "samples_per_s_this_run": self.notes_done / wall if wall > 0 else None,
                "tokens_per_s_this_run": self.tokens_done / wall if wall > 0 else None,
                "data": self.report.__dict__, "model_dir": str(self.out_dir / "model"),
            }
            atomic_write_json(self.out_dir / "metrics.json", metrics)
            log.info("saved %s (tau=%.4f) after %d steps", self.out_dir / "model", tau, self.steps)
        if self.world > 1:
            self.dist.barrier()
        return metrics
