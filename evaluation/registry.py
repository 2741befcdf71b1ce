"""The systems of the quality report, one small class each, in one registry.

A system has a ``key`` (its name in flags, caches and metrics.json), a
``label`` and a ``group`` (baseline / notellm) for the report, the parameters
its cached result depends on (:meth:`System.cache_key`), ``fit`` (train or load
its model) and ``scores`` (the pool x pool score matrix ``S[i, j]``, higher =
more related). Ranking, Recall@K and the cases are then computed the same way
for every system (:mod:`evaluation.results`). The models themselves are in
:mod:`evaluation.systems` and :mod:`evaluation.runs`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from evaluation import protocol, runs, systems
from evaluation.generation import generate_for


@dataclasses.dataclass
class Context:
    """What every system sees: the settings, the prepared data and the one test set."""
    cfg: Any                          # evaluation.compare.CompareConfig
    work: Path
    prepared: protocol.PreparedData
    notes_all: dict[str, dict]
    pool_notes: list[dict]
    gen_notes: list[dict]
    categories: list[str]
    es: protocol.EvalSet              # the test pairs and pool every system is scored on
    row: dict[str, int]               # pool note id -> row of the score matrices
    fingerprint: str                  # of the test pairs and pool


@dataclasses.dataclass
class Fitted:
    model: Any = None
    train: dict = dataclasses.field(default_factory=dict)   # train_wall_s, train_samples_per_s, loss_curve, command


class System:
    key: ClassVar[str]
    label: ClassVar[str]
    group: ClassVar[str] = "baseline"
    trained: ClassVar[bool] = False        # sees the training pairs (the budget: steps x batch pairs)
    uses_backbone: ClassVar[bool] = False  # the LLM backbone of --backbone
    generates: ClassVar[bool] = False      # category and hashtag generation

    def __init__(self, device: str = "cpu"):
        self.device = device               # where its model lives (the GPU run: evaluation.gpu_systems)

    def cache_key(self, ctx: Context) -> dict:
        cfg = ctx.cfg
        key = {"system": self.key, "test_set": ctx.fingerprint, "seed": cfg.seed,
               "gen_notes": [n["note_id"] for n in ctx.gen_notes] if self.generates else None}
        if self.trained:
            key.update(steps=cfg.steps, batch_pairs=cfg.batch_pairs,
                       train_pairs=protocol.data_digest(ctx.prepared.train_pairs))
        if self.uses_backbone:
            key.update(backbone=cfg.backbone)
        return key

    def fit(self, ctx: Context) -> Fitted:
        return Fitted()

    def scores(self, fitted: Fitted, ctx: Context) -> tuple[np.ndarray, float]:
        """The pool x pool scores and the embedding wall time (model loading excluded)."""
        raise NotImplementedError

    def compute(self, ctx: Context) -> tuple[np.ndarray, dict]:
        """Scores, costs, loss curve (and generations) of this system, computed now."""
        import torch
        torch.set_num_threads(max(1, os.cpu_count() or 1))
        fitted = self.fit(ctx)
        tr = fitted.train
        result: dict = {"cost": {"train_wall_s": tr.get("train_wall_s"),
                                 "train_samples_per_s": tr.get("train_samples_per_s")},
                        "loss_curve": tr.get("loss_curve"), "generation": None}
        if tr.get("command"):
            result["train_command"] = tr["command"]
        scores, wall = self.scores(fitted, ctx)
        if self.generates and ctx.gen_notes:
            t0 = time.perf_counter()
            result["generation"] = generate_for(fitted.model, ctx.gen_notes, ctx.categories)
            result["generation"]["wall_s"] = round(time.perf_counter() - t0, 1)
        result["cost"].update(embed_wall_s=round(wall, 2),
                              embed_notes_per_s=len(ctx.pool_notes) / wall if wall else None)
        return scores, result


def _timed(fn) -> tuple[Any, float]:
    """``fn()`` and its wall time in seconds."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


class BM25(System):
    key, label = "bm25", "BM25 (title + content)"

    def scores(self, fitted, ctx):
        return _timed(lambda: systems.bm25_scores(ctx.pool_notes))


class MiniLM(System):
    key, label = "minilm", "all-MiniLM-L6-v2 zero-shot (SentenceBERT)"

    def fit(self, ctx):
        return Fitted(systems.load_minilm(device=self.device))

    def scores(self, fitted, ctx):
        return _timed(lambda: systems.cosine_scores(systems.minilm_embed(fitted.model, ctx.pool_notes)))


class MiniLMFineTuned(MiniLM):
    key, label, trained = "minilm_ft", "all-MiniLM-L6-v2 fine-tuned on the pairs", True

    def cache_key(self, ctx):
        return {**super().cache_key(ctx), "batching": runs.MINILM_BATCHING}

    def fit(self, ctx):
        model_dir, ft = runs.minilm_finetuned(ctx.prepared, ctx.notes_all, ctx.work, ctx.cfg, self.device)
        return Fitted(systems.load_minilm(model_dir, self.device), ft)


class SmolLMPromptEOL(System):
    key, label, uses_backbone = "smollm_prompteol", "SmolLM2-135M PromptEOL zero-shot", True

    def scores(self, fitted, ctx):
        from notellm.backbone import ensure_default_backbone
        backbone = ensure_default_backbone() if ctx.cfg.backbone == "smollm2" else ctx.cfg.backbone
        vectors, wall = systems.prompteol_embed(backbone, ctx.pool_notes)     # wall: embedding only
        return systems.cosine_scores(vectors), wall


class NoteLLMSystem(System):
    """A NoteLLM variant: ``training.train`` with ``variant`` overrides, embedded by NoteEncoder."""
    group, trained, uses_backbone, generates = "notellm", True, True, True
    variant: ClassVar[dict]
    generative_loss: ClassVar[bool] = True

    def cache_key(self, ctx):
        return {**super().cache_key(ctx), "lr": ctx.cfg.lr, "warmup": ctx.cfg.warmup, "variant": self.variant}

    def fit(self, ctx):
        from notellm.encoder import NoteEncoder
        run_dir, tr = runs.train_notellm(self.key, self.variant, ctx.prepared, ctx.work, ctx.cfg,
                                         self.generative_loss)
        return Fitted(NoteEncoder.load(run_dir / "model").to(self.device), tr)

    def scores(self, fitted, ctx):
        return _timed(lambda: systems.cosine_scores(fitted.model.embed_notes(ctx.pool_notes, batch_size=16)))

    def paper_config(self) -> dict:
        return {"r": self.variant.get("r", 0.4), "alpha": self.variant.get("alpha", 0.01),
                "template": self.variant["template_version"]}


class NoteLLMNoCSFT(NoteLLMSystem):
    # alpha = 0 and r = 0: only L_cl, and every note through the category prompt used at inference
    key, label = "notellm_no_csft", "NoteLLM w/o CSFT (PromptEOL+CSE)"
    variant = {"alpha": 0.0, "r": 0.0, "template_version": "v1-paper"}
    generative_loss = False


class NoteLLM(NoteLLMSystem):
    key, label = "notellm", "NoteLLM (r = 0.4, alpha = 0.01)"
    variant = {"template_version": "v1-paper"}


class NoteLLMShort(NoteLLMSystem):
    key, label = "notellm_short", "NoteLLM, short template (v2-short)"
    variant = {"template_version": "v2-short"}


# Report order: baselines first, then the NoteLLM variants.
SYSTEMS: dict[str, System] = {s.key: s for s in (BM25(), MiniLM(), MiniLMFineTuned(), SmolLMPromptEOL(),
                                                 NoteLLMNoCSFT(), NoteLLM(), NoteLLMShort())}
