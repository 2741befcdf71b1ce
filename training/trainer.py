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
import sys
import time
from pathlib import Path

import torch

from notellm import cli, precision
from notellm.backbone import resolve_backbone
from notellm.faults import fault_point
from notellm.files import atomic_write_json, atomic_write_text
from notellm.integrity import verify_sums, write_sums
from notellm.metrics import in_batch_accuracy
from notellm.schedule import linear_warmup_decay
from training.config import TrainConfig, deepspeed_config_path, resolve_deepspeed_config, resolve_zero3_auto
from training.gradcache import RngStates, backward_chunks, cached_loss, chunk_rows, embed_without_graph
from training.loss import combined_loss, gather_with_local_grad
from training.model import (
    NoteLLMTrainModel,
    all_reduce_sum,
    output_tokens,
    parameter_groups,
    train_only_top_layers,
    unwrap_encoder_state,
)
from training.prepared import PreparedData, open_for_training
from training.run_files import LATEST, JsonlLog, latest_checkpoint, prune_checkpoints

log = logging.getLogger(__name__)

def total_steps(cfg: TrainConfig, data: PreparedData) -> int:
    if cfg.max_steps is not None:
        return int(cfg.max_steps)
    whole = int(math.floor(cfg.epochs))
    steps = sum(data.steps_per_epoch(e) for e in range(whole))
    if cfg.epochs > whole:   # the next epoch's plan only when a fraction of it runs
        steps += int(round((cfg.epochs - whole) * data.steps_per_epoch(whole)))
    return max(1, steps)


def materialised_parameters(module: torch.nn.Module) -> dict:
    """Parameter elements this rank holds in memory vs the model's total. Under ZeRO-3 a
    partitioned parameter keeps an empty ``data`` and its shard in ``ds_tensor``."""
    held = total = whole = 0
    for param in module.parameters():
        if hasattr(param, "ds_tensor"):
            total += int(param.ds_numel)
            held += int(param.ds_tensor.numel()) + int(param.data.numel())
        else:
            total += param.numel()
            held += param.numel()
            whole += param.numel()
    return {"held": held, "total": total, "unpartitioned": whole, "share": held / total if total else 0.0}


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
        # only part of the weights trains (LoRA or the top blocks): checkpoints hold that part
        self.partial = bool(cfg.train_top_layers or cfg.lora_r)

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
        """The prepared data, memory-mapped (training/prepare.py: rank 0 prepares <output_dir>/prepared,
        or reuses it, while the other ranks wait; ``prepared_dir`` is only read)."""
        cfg = self.cfg
        if cfg.batch_pairs % self.world:
            raise ValueError(f"batch_pairs={cfg.batch_pairs} must be divisible by the world size {self.world}")
        self.data = open_for_training(cfg, self.out_dir, self.rank, self.world, self.dist)
        self.report = self.data.report
        if self.rank == 0:
            log.info("data: %s", self.report.summary())
            atomic_write_json(self.out_dir / "data_report.json", self.report.__dict__)
        self.steps = total_steps(cfg, self.data)
        self._batches = None   # the BatchStream, built once the encoder's prompts exist

    def _setup_model(self, deepspeed) -> None:
        from transformers import AutoConfig

        from notellm.encoder import NoteEncoder

        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        backbone = resolve_backbone(cfg.backbone)
        ds = resolve_deepspeed_config(json.loads(deepspeed_config_path(cfg.deepspeed_config).read_text()),
                                      cfg, self.world, self.use_bf16)
        self.ds_config = resolve_zero3_auto(ds, AutoConfig.from_pretrained(backbone).hidden_size)
        self.zero_stage = int(self.ds_config.get("zero_optimization", {}).get("stage", 0))
        # Under ZeRO-3 the config object must be alive before from_pretrained: transformers then
        # builds every layer inside deepspeed.zero.Init and loads the checkpoint shard by shard
        # into the partitions, so no rank ever holds the whole model (7B: 28 GB fp32 per rank).
        self._hf_ds_config = None
        if self.zero_stage == 3:
            from transformers.integrations import HfDeepSpeedConfig

            self._hf_ds_config = HfDeepSpeedConfig(self.ds_config)
        dtype = torch.bfloat16 if self.use_bf16 else torch.float32
        self.encoder = NoteEncoder.build(backbone, dim=cfg.dim, template_version=cfg.template_version,
                                         max_title_tokens=cfg.max_title_tokens,
                                         max_content_tokens=cfg.max_content_tokens, dtype=dtype, seed=cfg.seed)
        if cfg.gradient_checkpointing:
            # non-reentrant: works with frozen inputs (LoRA, top layers) and ZeRO-3's parameter hooks
            self.encoder.lm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        if cfg.lora_r:
            from training.lora import apply_lora

            counts = apply_lora(self.encoder, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules,
                                seed=cfg.seed)
            if self.rank == 0:
                log.info("LoRA r=%d on %s: %d of %d parameters train", cfg.lora_r, ",".join(cfg.lora_target_modules),
                         counts["trainable"], counts["total"])
        if cfg.train_top_layers:
            counts = train_only_top_layers(self.encoder, cfg.train_top_layers)
            if self.rank == 0:
                log.info("training the top %d blocks only: %d of %d parameters", cfg.train_top_layers,
                         counts["trainable"], counts["total"])
        if self.zero_stage == 3:
            # transformers builds a resized embedding (the [EMB] row) outside zero.Init on purpose
            # (vocab x hidden, ~2% of a 7B model, held whole for the row write); the projection and
            # LoRA adapters are new too. Partition both now instead of at deepspeed.initialize.
            built = materialised_parameters(self.encoder)
            deepspeed.zero.Init(module=self.encoder, config_dict_or_path=self.ds_config)
            self.load_report = {**materialised_parameters(self.encoder),
                                "unpartitioned_after_build": built["unpartitioned"]}
        else:
            self.load_report = materialised_parameters(self.encoder)
        if self.rank == 0:
            log.info("model built (ZeRO stage %d, %s): %s", self.zero_stage, dtype, self.load_report)
        model = NoteLLMTrainModel(self.encoder, tau_init=cfg.tau_init, alpha=cfg.alpha)
        groups = parameter_groups(model, cfg.weight_decay)
        if cfg.lora_r:
            from training.lora import without_decay_on_masked

            groups = without_decay_on_masked(groups)   # decay would shrink the frozen embedding rows
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_decay(cfg.warmup_steps, self.steps))
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
                                                       load_module_strict=not self.partial)
            if path is None:
                raise RuntimeError(f"{self.ckpt_dir}: 'latest' exists but the checkpoint could not be loaded")
            self.start_step = self.last_saved = int(client["step"])
            expected = list(self.data.position(self.start_step))
            saved = client.get("sampler", {})
            if saved.get("next_position") != expected or saved.get("data", self.data.digest) != self.data.digest:
                raise RuntimeError(f"{self.ckpt_dir}: sampler position {saved} does not match the data "
                                   f"({expected}, {self.data.digest}); the pairs or batch size changed since the "
                                   "checkpoint")
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
        batch = {k: v.to(self.device) for k, v in self._local_batch(step).items()}
        lr_now = self.engine.get_lr()[0]  # the rate this step uses
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=self.cpu_autocast):
            if cfg.chunk_notes:
                losses, emb_a, emb_b, n_tokens = self._chunked_update(batch, step)
            else:
                losses, emb_a, emb_b, n_tokens = self._whole_update(batch, step)
        took = time.perf_counter() - t0
        self.notes_done += 2 * cfg.batch_pairs
        self.tokens_done += int(n_tokens)
        row = {"step": step + 1, **losses, "lr": lr_now, "samples_per_s": 2 * cfg.batch_pairs / took,
               "tokens_per_s": n_tokens / took, "step_s": took}
        if step % cfg.log_every == 0 or step == self.steps - 1:
            # in-batch retrieval accuracy of the global batch (collective on every rank)
            a = gather_with_local_grad(emb_a).float().cpu().numpy()
            b = gather_with_local_grad(emb_b).float().cpu().numpy()
            row["in_batch_acc"] = in_batch_accuracy(a, b)
        return row

    def _whole_update(self, batch: dict, step: int) -> tuple[dict, torch.Tensor, torch.Tensor, float]:
        """The local batch in one forward/backward (activations of all its notes alive at once)."""
        out = self.engine(**batch)
        losses = {"l_cl": out.l_cl.item(), "l_gen": out.l_gen.item(), "loss": out.total.item(),
                  "tau": out.tau.item()}
        n_tokens = self._stop_unless_finite(batch, out.total, losses, step)
        self.engine.backward(out.loss)
        self.engine.step()
        return losses, out.emb_a, out.emb_b, n_tokens

    def _chunked_update(self, batch: dict, step: int) -> tuple[dict, torch.Tensor, torch.Tensor, float]:
        """GradCache (training/gradcache.py): chunks of ``chunk_notes`` notes, each a DeepSpeed
        micro-step of one accumulated optimizer step (gradient_accumulation_steps = chunks)."""
        model = self.engine.module
        chunks = chunk_rows(batch["input_ids"].shape[0], self.cfg.chunk_notes)
        rng = RngStates()
        emb, tau = embed_without_graph(self.engine, batch, chunks, rng)
        cache = cached_loss(emb, tau, model.alpha)
        tokens_global = all_reduce_sum(output_tokens(batch["labels"]))
        losses: dict = {"l_cl": cache.l_cl.item(), "tau": float(tau.float().item())}
        n_tokens: list[float] = []

        def check(gen_share_local: torch.Tensor) -> None:   # before the last micro-step's update
            l_gen = all_reduce_sum(gen_share_local.to(self.device))
            total = combined_loss(cache.l_cl, l_gen, model.alpha)
            losses.update(l_gen=l_gen.item(), loss=total.item())
            n_tokens.append(self._stop_unless_finite(batch, total, losses, step))

        def backward(surrogate: torch.Tensor) -> None:
            # the surrogate already carries the chunk's exact share: no 1/GA scaling
            self.engine.backward(surrogate, scale_wrt_gas=False)
            self.engine.step()   # an update only at the accumulation boundary (the last chunk)

        backward_chunks(self.engine, backward, batch, chunks, cache, tokens_global, rng, before_last_backward=check)
        half = emb.shape[0] // 2
        return losses, emb[:half], emb[half:], n_tokens[0]

    def _stop_unless_finite(self, batch: dict, total: torch.Tensor, losses: dict, step: int) -> float:
        """[tokens, non-finite losses] summed over ranks: every rank stops together, before the
        update, so no non-finite weights reach a checkpoint. Returns the global token count."""
        counts = torch.tensor([float(batch["attention_mask"].sum().item()),
                               0.0 if math.isfinite(total.item()) else 1.0], device=self.device)
        if self.world > 1:
            self.dist.all_reduce(counts)
        if counts[1].item() > 0:
            raise cli.Diverged(f"non-finite loss at step {step + 1} (l_cl={losses.get('l_cl')}, "
                               f"l_gen={losses.get('l_gen')}, tau={losses.get('tau')}); the last checkpoint is kept",
                               {"step": step + 1, "last_checkpoint_step": self.last_saved})
        return float(counts[0].item())

    def _local_batch(self, step: int) -> dict:
        """This rank's collated rows of global batch ``step`` (CPU tensors, [a; b] layout), read and
        tokenised ahead by ``dataloader_workers`` processes while steps come in order."""
        if self._batches is None:
            from training.batches import BatchStream, StepBatches

            cfg = self.cfg
            dataset = StepBatches(self.data, self.encoder.prompts, self.encoder.tokenizer.pad_token_id, cfg.r,
                                  cfg.seed, self.rank, self.world, self.steps)
            self._batches = BatchStream(dataset, cfg.dataloader_workers)
        return self._batches.get(step)

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
        client = {"step": done, "sampler": {"seed": cfg.seed, "batch_pairs": cfg.batch_pairs, "data": self.data.digest,
                                            "next_position": list(self.data.position(done))}}
        # Frozen weights are the backbone's own: a resume rebuilds them, so only what trains is saved.
        tag = f"step{done}"
        # DeepSpeed's own 'latest' is a plain write; ours moves only once every rank's files are
        # durable and listed in the tag's SHA256SUMS.json, then by an atomic replace.
        self.engine.save_checkpoint(str(self.ckpt_dir), tag=tag, client_state=client, save_latest=False,
                                    exclude_frozen_parameters=self.partial)
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
            categories = self.data.categories
            state = unwrap_encoder_state(full_state)
            if cfg.lora_r:   # indexing loads a plain model directory: W + (alpha / r) B A
                from training.lora import lora_scale, merge_lora_state_dict

                state = merge_lora_state_dict(state, lora_scale(self.encoder))
            self.encoder.save(self.out_dir / "model", state_dict=state, tau=tau,
                              data_window={"start": self.report.window_start, "end": self.report.window_end},
                              extra={"seed": cfg.seed, "categories": categories, "train_steps": self.steps,
                                     "pairs": str(cfg.pairs), "r": cfg.r, "alpha": cfg.alpha,
                                     "zero_stage": self.zero_stage, "world_size": self.world})
            rows, wall = self.train_log.rows(), self.wall_s
            metrics = {
                "steps": self.steps, "resumed_from_step": self.start_step, "world_size": self.world,
                "zero_stage": self.zero_stage, "bf16": self.use_bf16, "cpu_autocast_bf16": self.cpu_autocast,
                "params_held_at_load": self.load_report, "chunk_notes": cfg.chunk_notes,
                "gradient_checkpointing": cfg.gradient_checkpointing, "lora_r": cfg.lora_r,
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
