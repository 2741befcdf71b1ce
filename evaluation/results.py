"""The results dict of the quality report (schema ``notellm-quality-report/1``,
rendered by :mod:`evaluation.report`) from every system's scores and results:
per-system recall, intervals and generation metrics, the random-within-category
floor, the paired tests, the run's header and configuration."""

from __future__ import annotations

import dataclasses
import os
import platform
from typing import Mapping, Sequence

import numpy as np

from evaluation import cases, protocol, scoring, systems
from evaluation.generation import generation_metrics
from evaluation.paper import PAPER_TABLE2
from evaluation.registry import SYSTEMS, Context, NoteLLMSystem

KS = (10, 50, 100, 1000)
HEADLINE_K = 100  # the paper's headline metric; intervals and paired tests are at this K
SIGNALS = {"cooccurrence": "co-engagement pairs mined by the Spark job in the test window (query = first note)",
           "postlinks": "human-made PostLinks (linked/duplicate) between two test-pool questions"}


@dataclasses.dataclass
class TestRows:
    """The test set in pool rows: per signal the query and target rows and the bootstrap clusters."""
    rows_of: dict[str, tuple[list[int], list[int]]]
    clusters: dict[str, list[str]]    # a pair present in both directions is one cluster
    cooc_buckets: list[str]           # exposure bucket of each co-occurrence query
    new_sel: np.ndarray               # co-occurrence queries created in the test window
    n_pool: int

    @classmethod
    def of(cls, es: protocol.EvalSet, row: Mapping[str, int]) -> "TestRows":
        signals = {"cooccurrence": es.cooccurrence, "postlinks": es.postlinks}
        return cls({s: ([row[q] for q, _ in pairs], [row[t] for _, t in pairs]) for s, pairs in signals.items()},
                   {s: ["|".join(sorted(p)) for p in pairs] for s, pairs in signals.items()},
                   [es.bucket(q) for q, _ in es.cooccurrence],
                   np.array([q in es.new_queries for q, _ in es.cooccurrence]), len(es.pool))


def system_entry(name: str, scores: np.ndarray, result: dict, tr: TestRows, ctx: Context
                 ) -> tuple[dict, dict[str, np.ndarray]]:
    """One system's block of the results and its hit vector per signal at the headline K."""
    system = SYSTEMS[name]
    entry = {"name": name, "label": system.label, "group": system.group, "recall": {}, "k_capped": {},
             "pairs": {}, "recall_curve": {}, "cost": result["cost"], "loss_curve": result.get("loss_curve")}
    ranks, hits = {}, {}
    for s, (qr, trg) in tr.rows_of.items():
        ranks[s] = scoring.ranks_from_scores(scores, qr, trg)
        ev = scoring.evaluate_signal(ranks[s], tr.n_pool, KS)
        entry["recall"][s], entry["k_capped"], entry["pairs"][s] = ev["recall"], ev["k_capped"], ev["pairs"]
        entry["recall_curve"][s] = ev["curve"]
        hits[s] = scoring.hits_at_k(ranks[s], tr.n_pool, HEADLINE_K)
        if len(hits[s]):
            entry.setdefault("recall_ci", {})[s] = {str(HEADLINE_K): list(scoring.bootstrap_interval(
                hits[s], seed=ctx.cfg.seed, clusters=tr.clusters[s]))}
    cooc = ranks["cooccurrence"]
    entry["by_exposure"] = scoring.evaluate_buckets(cooc, tr.cooc_buckets, tr.n_pool, KS)
    entry["new_notes"] = ({"recall": scoring.evaluate_signal(cooc[tr.new_sel], tr.n_pool, KS)["recall"],
                           "pairs": int(tr.new_sel.sum())} if tr.new_sel.any() else None)
    gen = result.get("generation")
    entry["generation"] = generation_metrics(gen["rows"], ctx.gen_notes, ctx.categories) if gen else None
    if gen:
        entry["generation_wall_s"] = gen.get("wall_s")
    if result.get("train_command"):
        # as a reader reruns it: no interpreter or checkout prefix of this machine
        entry["train_command"] = protocol.display_command(result["train_command"])
    return entry, hits


def _floor_recall(cats: Sequence[str], qr: Sequence[int], trg: Sequence[int]) -> dict[str, float]:
    return {str(k): v for k, v in systems.random_within_category_recall(cats, qr, trg, KS).items()}


def random_floor(pool_notes: Sequence[Mapping], tr: TestRows) -> dict:
    """The random-within-category floor per signal, exposure bucket and for new notes."""
    cats = [n["category"] for n in pool_notes]
    floor = {"recall": {s: _floor_recall(cats, qr, trg) for s, (qr, trg) in tr.rows_of.items()}, "trials": 0,
             "definition": "exact expectation of ranking the query's category first, randomly, then the rest randomly"}
    qr, trg = tr.rows_of["cooccurrence"]

    def subset(sel: Sequence[int]) -> dict:
        return {"recall": _floor_recall(cats, [qr[i] for i in sel], [trg[i] for i in sel]), "pairs": len(sel)}

    floor["by_exposure"] = {b: subset([i for i, lab in enumerate(tr.cooc_buckets) if lab == b])
                            for b in ("low", "high")}
    new = [int(i) for i in np.flatnonzero(tr.new_sel)]
    floor["new_notes"] = subset(new) if new else None
    return floor


def paired_tests(names: Sequence[str], hits: Mapping[str, Mapping[str, np.ndarray]], tr: TestRows, seed: int
                 ) -> dict:
    """Every pair of systems on the same test pairs, later (in registry order) vs earlier."""
    return {s: [{"a": a, "b": b, "k": HEADLINE_K,
                 **scoring.paired_comparison(by[a], by[b], seed=seed, clusters=tr.clusters[s])}
                for j, a in enumerate(names) for b in names[:j] if len(by[a])]
            for s, by in hits.items()}


def report_command(cfg) -> str:
    return "python -m evaluation.compare " + " ".join(
        f"--{k.replace('_', '-')} {getattr(cfg, k)}"
        for k in ("steps", "batch_pairs", "lr", "eval_pairs", "pool_size", "gen_notes", "seed"))


def run_config(cfg) -> dict:
    return {"training_steps": cfg.steps, "batch_pairs": cfg.batch_pairs,
            "training_pairs_seen": cfg.steps * cfg.batch_pairs, "notellm_lr": cfg.lr,
            "notellm_warmup_steps": cfg.warmup, "minilm_lr": 2e-5, "backbone": "SmolLM2-135M-Instruct (fp32)",
            "embedding_dim_notellm": 128, "tau_init": 3.0,
            "notellm_variants": {k: s.paper_config() for k, s in SYSTEMS.items() if isinstance(s, NoteLLMSystem)},
            "train_window": f"2009-10-01 .. {protocol.TRAIN_RUN_DATE}",
            "test_window": f"{protocol.TEST_WINDOW_START} .. {protocol.TEST_RUN_DATE}",
            "samples": "notes (a pair is two samples)"}


def compute_seconds(stages: Mapping, per_system: Mapping[str, tuple[np.ndarray, dict]]) -> tuple[float, bool]:
    """What the whole comparison costs from scratch: every data stage and every
    system's training, embedding and generation as first computed (cached
    stages keep the wall time of the run that computed them). Returns the sum
    and whether every part had a recorded time (else the sum is a lower bound)."""
    complete = all(e.get("wall_s") is not None for e in stages.values())
    total = sum(e.get("wall_s") or 0.0 for e in stages.values())
    for name, (_, result) in per_system.items():
        cost = result.get("cost") or {}
        complete &= cost.get("embed_wall_s") is not None
        complete &= not SYSTEMS[name].trained or cost.get("train_wall_s") is not None
        total += (cost.get("train_wall_s") or 0.0) + (cost.get("embed_wall_s") or 0.0)
        total += (result.get("generation") or {}).get("wall_s") or 0.0
    return total, complete


def uncertainty(tr: TestRows) -> dict:
    return {"k": HEADLINE_K, "level": 0.95, "bootstrap_resamples": 2000,
            "interval": "percentile bootstrap over test pairs, a pair and its reverse resampled together",
            "paired_test": "exact two-sided McNemar on the discordant pairs (uncorrected)",
            "pairs_in_both_directions": {s: len(c) - len(set(c)) for s, c in tr.clusters.items()}}


def assemble_results(ctx: Context, per_system: Mapping[str, tuple[np.ndarray, dict]], stages: dict,
                     wall_s: float) -> dict:
    """The whole results dict, systems in the order of ``per_system``."""
    cfg, tr, names = ctx.cfg, TestRows.of(ctx.es, ctx.row), list(per_system)
    entries, hits = [], {}
    for name in names:
        entry, h = system_entry(name, *per_system[name], tr, ctx)
        entries.append(entry)
        for s, v in h.items():
            hits.setdefault(s, {})[name] = v
    split_counts = ctx.prepared.stats["split"].get("counts", {})
    total, complete = compute_seconds(stages, per_system)
    return {
        "schema": "notellm-quality-report/1", "date": cfg.date,
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, no GPU; Python {platform.python_version()}",
        "command": report_command(cfg), "wall_s": round(wall_s, 1),
        "compute_s": round(total, 1), "compute_s_complete": complete, "config": run_config(cfg),
        "data": {"train_pairs": split_counts.get("train_pairs"), "train_notes": split_counts.get("train_notes"),
                 **ctx.es.meta, "stages": stages, "adapter": ctx.prepared.stats["adapter"]},
        "signals": SIGNALS, "systems": entries,
        "random_within_category": random_floor(ctx.pool_notes, tr),
        "paired": paired_tests(names, hits, tr, cfg.seed), "uncertainty": uncertainty(tr),
        "paper_table2": PAPER_TABLE2,
        "cases": {"queries": cases.query_cases(ctx.es.cooccurrence, {n: per_system[n][0] for n in names},
                                               ctx.pool_notes, ctx.row, cfg.cases, cfg.seed),
                  "generation": cases.generation_cases({n: per_system[n][1].get("generation") for n in names},
                                                       ctx.gen_notes, cfg.cases)},
        **({"discussion_md": cfg.discussion.read_text()} if cfg.discussion else {}),
    }
