"""Quality report: NoteLLM against its baselines on real data, one command.

    python -m evaluation.compare [--data ../shared/data/stackexchange] [--work var/quality] [--out reports]
        [--steps 40] [--batch-pairs 8] [--eval-pairs 150] [--pool-size 800] [--gen-notes 24]

Writes ``<out>/<date>/report.md``, ``metrics.json`` and ``plots/*.png`` and
prints one JSON result line (:mod:`notellm.cli`). Every stage is cached under
``--work`` with the parameters it depends on: the data stages by their
``_SUCCESS`` markers, the test set by its sampling parameters, each system by
its own parameters and the test-set fingerprint, so a rerun only redoes what
changed (e.g. ``--steps 120`` retrains the NoteLLM variants and the fine-tuned
MiniLM, nothing else). ``make report`` runs it.

Systems (:mod:`evaluation.registry`): BM25, all-MiniLM-L6-v2 zero-shot,
MiniLM fine-tuned on the training pairs, SmolLM2 PromptEOL zero-shot, NoteLLM
without CSFT (alpha = 0: contrastive only, same prompt), NoteLLM (r = 0.4,
alpha = 0.01) and NoteLLM with the short template (v2-short). The NoteLLM
variants and the fine-tuned MiniLM see the same number of training pairs
(steps x batch pairs). Protocol: :mod:`evaluation.protocol`; results:
:mod:`evaluation.results`; rendering: :mod:`evaluation.report`.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

from evaluation import protocol
from evaluation.cache import SystemCache
from evaluation.registry import SYSTEMS, Context
from notellm import cli
from notellm.config import option
from notellm.metrics import test_set_fingerprint

log = logging.getLogger(__name__)


@dataclasses.dataclass
class CompareConfig:
    """NoteLLM vs baselines on real data -> reports/<date>/"""

    data: Path = option(protocol.DEFAULT_DATA, help="Stack Exchange dumps folder")
    work: Path = option(protocol.REPO / "var" / "quality", help="cache of every stage")
    out: Path = option(protocol.REPO / "reports", help="reports folder; the report goes to <out>/<date>/")
    date: str | None = option(None, help="report folder name (default: today, ISO)")
    steps: int = option(40, help="training steps of every trained system (the budget)")
    batch_pairs: int = option(8, help="pairs per training batch of every trained system")
    lr: float = option(1e-4, help="NoteLLM learning rate")
    warmup: int = option(3, help="NoteLLM linear warm-up steps")
    eval_pairs: int = option(150, help="sampled co-occurrence test pairs (0 = all)")
    pool_size: int = option(800, help="test pool size: the sampled pairs' endpoints plus random pool notes")
    gen_notes: int = option(24, help="held-out notes for category/hashtag generation")
    cases: int = option(12, help="queries and generations shown as cases")
    seed: int = option(0, help="seed of the test sample, the training runs and the bootstrap")
    backbone: str = option("smollm2", help="LLM backbone of NoteLLM and PromptEOL: 'smollm2' or a HF causal-LM dir "
                                           "(tests use a tiny Llama)")
    systems: str = option(",".join(SYSTEMS), help=f"comma-separated subset of {', '.join(SYSTEMS)}")
    discussion: Path | None = option(None, help="Markdown appended as the discussion")

    def validate(self) -> None:
        unknown = sorted(set(self.system_names()) - set(SYSTEMS))
        if unknown or not self.system_names():
            raise ValueError(f"unknown or no system(s) {unknown}; known: {list(SYSTEMS)}")
        for name in ("steps", "batch_pairs", "pool_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        for name in ("warmup", "eval_pairs", "gen_notes", "cases"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")

    def system_names(self) -> list[str]:
        return [s.strip() for s in self.systems.split(",") if s.strip()]


def build_context(cfg: CompareConfig, stages: dict) -> Context:
    """Prepared data (cached stages), the one test set and the held-out generation notes."""
    work = cfg.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        prepared = protocol.prepare_data(work, cfg.data, stages)
    except FileNotFoundError as exc:                       # the dumps are absent
        raise cli.BadInput(str(exc)) from exc
    try:
        es = protocol.load_or_build_eval_set(work / "eval_set.json", prepared, cfg.eval_pairs, cfg.pool_size,
                                             cfg.seed)
    except ValueError as exc:                              # e.g. a pool too small for the sampled pairs
        raise cli.BadInput(str(exc)) from exc
    notes_all = protocol.notes_by_id(prepared.notes, None)
    pool_notes = [notes_all[n] for n in es.pool]
    gen_candidates = [n for n in pool_notes if n["hashtags"]]
    gen_notes = random.Random(cfg.seed).sample(gen_candidates, min(cfg.gen_notes, len(gen_candidates)))
    return Context(cfg=cfg, work=work, prepared=prepared, notes_all=notes_all, pool_notes=pool_notes,
                   gen_notes=gen_notes, categories=sorted({n["category"] for n in notes_all.values()}),
                   es=es, row={n: i for i, n in enumerate(es.pool)},
                   fingerprint=test_set_fingerprint(es.cooccurrence + es.postlinks, es.pool))


def score_systems(ctx: Context, names: list[str], timer: cli.Timer) -> tuple[dict, dict]:
    """Each system's (scores, result), reused from the cache while its key matches."""
    cache = SystemCache(ctx.work / "systems")
    per_system: dict[str, tuple[np.ndarray, dict]] = {}
    how: dict[str, str] = {}
    for name in names:
        system = SYSTEMS[name]
        key = system.cache_key(ctx)
        hit = cache.load(name, key)
        if hit is None:
            log.info("[%s] computing", name)
            with timer.phase(name):
                hit = system.compute(ctx)
            cache.save(name, key, *hit)
            how[name] = "computed"
        else:
            log.info("[%s] reused from %s", name, cache.root / name)
            how[name] = "reused"
        per_system[name] = hit
    return per_system, how


def run(cfg: CompareConfig, timer: cli.Timer) -> dict:
    from evaluation.report import render_report
    from evaluation.results import assemble_results

    cfg = dataclasses.replace(cfg, date=cfg.date or date.today().isoformat())
    t_start = time.perf_counter()
    stages: dict = {}
    with timer.phase("data"):
        ctx = build_context(cfg, stages)
    per_system, how = score_systems(ctx, cfg.system_names(), timer)
    with timer.phase("report"):
        results = assemble_results(ctx, per_system, stages, time.perf_counter() - t_start)
        out_dir = cfg.out / cfg.date
        report = render_report(results, out_dir)
    log.info("report: %s", report)
    return {"report": str(report), "metrics": str(out_dir / "metrics.json"), "systems": how,
            "test_pairs": {"cooccurrence": len(ctx.es.cooccurrence), "postlinks": len(ctx.es.postlinks)},
            "pool": len(ctx.es.pool)}


def main(argv=None) -> int:
    return cli.main(run, CompareConfig, argv, prog="python -m evaluation.compare")


if __name__ == "__main__":
    sys.exit(main())
