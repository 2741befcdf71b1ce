"""Quality report: NoteLLM against its baselines on real data, one command.

    python -m evaluation.compare [--data ../shared/data/stackexchange] [--work var/quality] [--out reports]
        [--steps 40] [--batch-pairs 8] [--eval-pairs 150] [--pool-size 800] [--gen-notes 24]

Writes ``<out>/<date>/report.md``, ``metrics.json`` and ``plots/*.png``. Every
stage is cached under ``--work`` with the parameters it depends on: the data
stages by their ``_SUCCESS`` markers, the test set by its sampling parameters,
each system by its own parameters and the test-set fingerprint, so a rerun
only redoes what changed (e.g. ``--steps 120`` retrains the NoteLLM variants
and the fine-tuned MiniLM, nothing else). ``make report`` runs it.

Systems (see :mod:`evaluation.systems`): BM25, all-MiniLM-L6-v2 zero-shot,
MiniLM fine-tuned on the training pairs, SmolLM2 PromptEOL zero-shot, NoteLLM
without CSFT (alpha = 0: contrastive only, same prompt), NoteLLM (r = 0.4,
alpha = 0.01) and NoteLLM with the short template (v2-short). The NoteLLM
variants and the fine-tuned MiniLM see the same number of training pairs
(steps x batch pairs). Protocol: :mod:`evaluation.protocol`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

from evaluation import protocol, scoring, systems, text_metrics
from notellm.metrics import test_set_fingerprint

KS = (10, 50, 100, 1000)
HEADLINE_K = 100  # the paper's headline metric; intervals and paired tests are at this K
SYSTEMS = {  # name -> (label, group)
    "bm25": ("BM25 (title + content)", "baseline"),
    "minilm": ("all-MiniLM-L6-v2 zero-shot (SentenceBERT)", "baseline"),
    "minilm_ft": ("all-MiniLM-L6-v2 fine-tuned on the pairs", "baseline"),
    "smollm_prompteol": ("SmolLM2-135M PromptEOL zero-shot", "baseline"),
    "notellm_no_csft": ("NoteLLM w/o CSFT (PromptEOL+CSE)", "notellm"),
    "notellm": ("NoteLLM (r = 0.4, alpha = 0.01)", "notellm"),
    "notellm_short": ("NoteLLM, short template (v2-short)", "notellm"),
}
NOTELLM_VARIANTS = {  # name -> training.train overrides
    # alpha = 0 and r = 0: only L_cl, and every note through the category prompt used at inference
    "notellm_no_csft": {"alpha": 0.0, "r": 0.0, "template_version": "v1-paper"},
    "notellm": {"template_version": "v1-paper"},
    "notellm_short": {"template_version": "v2-short"},
}
GENERATING = ("notellm_no_csft", "notellm", "notellm_short")
PAPER_TABLE2 = {"SentenceBERT": 70.72, "PromptEOL+CSE": 83.28, "RepLLaMA": 83.63, "NoteLLM": 84.02}


def _key_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


class SystemCache:
    """``<work>/systems/<name>/``: scores.npy + result.json, valid while its key matches."""

    def __init__(self, root: Path):
        self.root = root

    def load(self, name: str, key: dict):
        d = self.root / name
        try:
            result = json.loads((d / "result.json").read_text())
        except FileNotFoundError:
            return None
        if result.get("key_digest") != _key_digest(key):
            return None
        return np.load(d / "scores.npy"), result

    def save(self, name: str, key: dict, scores: np.ndarray, result: dict) -> None:
        d = self.root / name
        d.mkdir(parents=True, exist_ok=True)
        np.save(d / "scores.npy", scores.astype(np.float32))
        result = {**result, "key": key, "key_digest": _key_digest(key)}
        tmp = d / "result.json.tmp"
        tmp.write_text(json.dumps(result, indent=2, default=str))
        os.replace(tmp, d / "result.json")


def notellm_overrides(name: str, prepared: protocol.PreparedData, args) -> dict:
    return {"backbone": args.backbone, "pairs": prepared.train_pairs, "notes": prepared.notes,
            "max_steps": args.steps, "batch_pairs": args.batch_pairs,
            "lr": args.lr, "warmup_steps": args.warmup, "save_every": max(5, args.steps // 2),
            "log_every": 5, "seed": args.seed, **NOTELLM_VARIANTS[name]}


def train_notellm(name: str, prepared: protocol.PreparedData, work: Path, args) -> tuple[Path, dict]:
    """Run ``python -m training.train`` (resumable: an interrupted run continues from its checkpoint).

    The run folder is named by a digest of every override and of the training data, so a
    changed parameter never reuses (or resumes) a model trained with other settings."""
    overrides = notellm_overrides(name, prepared, args)
    digest = _key_digest({**overrides, "train_pairs": protocol.data_digest(prepared.train_pairs)})
    run_dir = work / "runs" / f"{name}-{digest}"
    overrides["output_dir"] = run_dir
    cmd = [sys.executable, "-m", "training.train"]
    for k, v in overrides.items():
        cmd += ["--set", f"{k}={v}"]
    t0 = time.perf_counter()
    if not (run_dir / "metrics.json").exists():
        print(f"[{name}] {' '.join(map(str, cmd))}", flush=True)
        subprocess.run([str(c) for c in cmd], cwd=protocol.REPO, check=True,
                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.perf_counter() - t0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    curve = {"step": [], "l_cl": [], "l_gen": []}
    for line in (run_dir / "train_log.jsonl").read_text().splitlines():
        row = json.loads(line)
        curve["step"].append(row["step"])
        curve["l_cl"].append(row["l_cl"])
        curve["l_gen"].append(row["l_gen"] if name != "notellm_no_csft" else None)
    return run_dir, {"train_wall_s": round(wall, 1) if wall > 1 else metrics.get("wall_s_this_run"),
            "train_wall_s_in_trainer": metrics.get("wall_s_this_run"),
            "train_samples_per_s": metrics.get("samples_per_s_this_run"),
            "loss_curve": curve, "command": " ".join(map(str, cmd))}


def generate_for(encoder, gen_notes: list[dict], categories: list[str]) -> dict:
    """Free and constrained category generation and hashtag generation on held-out notes."""
    rows = []
    for note in gen_notes:
        j = min(5, len(note["hashtags"]))
        text = encoder.generate(note, task="hashtag", j=j, max_new_tokens=24)
        rows.append({"note_id": note["note_id"],
                     "category_free": encoder.generate(note, task="category", max_new_tokens=16),
                     "category_constrained": encoder.generate(note, task="category", allowed_outputs=categories),
                     "hashtags_text": text, "hashtags": text_metrics.parse_hashtags(text)})
    return {"rows": rows, **generation_metrics(rows, gen_notes, categories)}


def generation_metrics(rows: list[dict], gen_notes: list[dict], categories: list[str]) -> dict:
    """Category accuracy / outside-known share and hashtag BLEU-4 / ROUGE from the
    raw generations, so a change of the parsing or the metrics applies to cached
    generations too (rows cached before the raw hashtag text was kept are
    re-parsed from their stored list)."""
    true_cat = [n["category"] for n in gen_notes]
    known = set(categories)
    tags = [row_hashtags(r) for r in rows]
    cands = [hashtag_words(t) for t in tags]
    refs = [hashtag_words([text_metrics.normalise_tag(t) for t in n["hashtags"]]) for n in gen_notes]
    return {"category_free": text_metrics.category_metrics([r["category_free"] for r in rows], true_cat, known),
            "category_constrained": text_metrics.category_metrics([r["category_constrained"] for r in rows],
                                                                  true_cat, known),
            "hashtags": {"bleu4": text_metrics.bleu4(cands, refs), **text_metrics.corpus_rouge(cands, refs),
                         "n": len(rows)}}


def row_hashtags(row: dict) -> list[str]:
    return text_metrics.parse_hashtags(row["hashtags_text"] if "hashtags_text" in row else ", ".join(row["hashtags"]))


def hashtag_words(tags: list[str]) -> list[str]:
    """Hashtags as word tokens for BLEU/ROUGE: '3d-printing' -> ['3d', 'printing']."""
    import re
    return [w for t in tags for w in re.split(r"[-_\s]+", t.lower().lstrip("#")) if w]


def run_system(name: str, pool_notes: list[dict], prepared, es, args, work: Path, notes_all: dict,
               gen_notes: list[dict], categories: list[str]) -> tuple[np.ndarray, dict]:
    """Compute (or reuse) one system's pool x pool scores, costs, loss curve and generations."""
    import torch
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    from notellm.backbone import ensure_default_backbone
    result: dict = {"cost": {"train_wall_s": None, "train_samples_per_s": None}, "loss_curve": None,
                    "generation": None}
    if name == "bm25":
        t0 = time.perf_counter()
        scores = systems.bm25_scores(pool_notes)
        wall = time.perf_counter() - t0
    elif name in ("minilm", "minilm_ft"):
        model_dir = None
        if name == "minilm_ft":
            ft_key = {"steps": args.steps, "batch_pairs": args.batch_pairs, "seed": args.seed,
                      "train_pairs": protocol.data_digest(prepared.train_pairs)}
            model_dir = work / "runs" / f"minilm_ft-{_key_digest(ft_key)}"
            if (model_dir / "finetune.json").exists():           # the model does not depend on the test set
                ft = json.loads((model_dir / "finetune.json").read_text())
            else:
                train_pairs = protocol.read_train_pairs(prepared)
                ft = systems.minilm_finetune(train_pairs, notes_all, model_dir, args.steps, args.batch_pairs,
                                             seed=args.seed)
                (model_dir / "finetune.json").write_text(json.dumps(ft))
            result["cost"].update(train_wall_s=ft["train_wall_s"], train_samples_per_s=ft["train_samples_per_s"])
            result["loss_curve"] = ft["loss_curve"]
        model = systems.load_minilm(model_dir)
        t0 = time.perf_counter()
        scores = systems.cosine_scores(systems.minilm_embed(model, pool_notes))
        wall = time.perf_counter() - t0
    elif name == "smollm_prompteol":
        backbone = ensure_default_backbone() if args.backbone == "smollm2" else args.backbone
        vectors, wall = systems.prompteol_embed(backbone, pool_notes)     # wall: embedding only, model loaded
        scores = systems.cosine_scores(vectors)
    elif name in NOTELLM_VARIANTS:
        from notellm.encoder import NoteEncoder
        run_dir, tr = train_notellm(name, prepared, work, args)
        result["cost"].update(train_wall_s=tr["train_wall_s"], train_samples_per_s=tr["train_samples_per_s"])
        result["loss_curve"], result["train_command"] = tr["loss_curve"], tr["command"]
        encoder = NoteEncoder.load(run_dir / "model")
        t0 = time.perf_counter()
        scores = systems.cosine_scores(encoder.embed_notes(pool_notes, batch_size=16))
        wall = time.perf_counter() - t0
        if name in GENERATING and gen_notes:
            t1 = time.perf_counter()
            result["generation"] = generate_for(encoder, gen_notes, categories)
            result["generation"]["wall_s"] = round(time.perf_counter() - t1, 1)
    else:
        raise ValueError(f"unknown system {name!r}; known: {sorted(SYSTEMS)}")
    result["cost"].update(embed_wall_s=round(wall, 2), embed_notes_per_s=len(pool_notes) / wall if wall else None)
    return scores, result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="NoteLLM vs baselines on real data -> reports/<date>/")
    p.add_argument("--data", type=Path, default=protocol.DEFAULT_DATA, help="Stack Exchange dumps folder")
    p.add_argument("--work", type=Path, default=protocol.REPO / "var" / "quality", help="cache of every stage")
    p.add_argument("--out", type=Path, default=protocol.REPO / "reports")
    p.add_argument("--date", default=date.today().isoformat(), help="report folder name")
    p.add_argument("--steps", type=int, default=40, help="training steps of every trained system (the budget)")
    p.add_argument("--batch-pairs", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4, help="NoteLLM learning rate")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--eval-pairs", type=int, default=150, help="sampled co-occurrence test pairs (0 = all)")
    p.add_argument("--pool-size", type=int, default=800)
    p.add_argument("--gen-notes", type=int, default=24, help="held-out notes for category/hashtag generation")
    p.add_argument("--cases", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backbone", default="smollm2",
                   help="LLM backbone of NoteLLM and PromptEOL: 'smollm2' or a HF causal-LM dir (tests use a tiny Llama)")
    p.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset")
    p.add_argument("--discussion", type=Path, default=None, help="Markdown appended as the discussion")
    args = p.parse_args(argv)
    names = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(names) - set(SYSTEMS))
    if unknown:
        p.error(f"unknown system(s) {unknown}; known: {list(SYSTEMS)}")

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    stages: dict = {}
    prepared = protocol.prepare_data(work, args.data, stages)
    es = protocol.load_or_build_eval_set(work / "eval_set.json", prepared, args.eval_pairs, args.pool_size, args.seed)
    fingerprint = test_set_fingerprint(es.cooccurrence + es.postlinks, es.pool)
    notes_all = protocol.notes_by_id(prepared.notes, None)
    pool_notes = [notes_all[n] for n in es.pool]
    row = {n: i for i, n in enumerate(es.pool)}
    categories = sorted({n["category"] for n in notes_all.values()})
    rng = random.Random(args.seed)
    gen_candidates = [n for n in pool_notes if n["hashtags"]]
    gen_notes = rng.sample(gen_candidates, min(args.gen_notes, len(gen_candidates)))

    cache = SystemCache(work / "systems")
    per_system: dict[str, tuple[np.ndarray, dict]] = {}
    for name in names:
        key = {"system": name, "test_set": fingerprint, "seed": args.seed,
               "gen_notes": [n["note_id"] for n in gen_notes] if name in GENERATING else None}
        if name in NOTELLM_VARIANTS or name == "minilm_ft":
            key.update(steps=args.steps, batch_pairs=args.batch_pairs,
                       train_pairs=protocol.data_digest(prepared.train_pairs))
        if name in NOTELLM_VARIANTS or name == "smollm_prompteol":
            key.update(backbone=args.backbone)
        if name in NOTELLM_VARIANTS:
            key.update(lr=args.lr, warmup=args.warmup, variant=NOTELLM_VARIANTS[name])
        hit = cache.load(name, key)
        if hit is None:
            print(f"[{name}] computing", flush=True)
            scores, result = run_system(name, pool_notes, prepared, es, args, work, notes_all, gen_notes, categories)
            cache.save(name, key, scores, result)
        else:
            print(f"[{name}] reused from {cache.root / name}", flush=True)
            scores, result = hit
        per_system[name] = (scores, result)

    results = assemble_results(args, names, per_system, es, row, prepared, stages, notes_all, pool_notes,
                               gen_notes, categories, time.perf_counter() - t_start)
    from evaluation.report import render_report
    out_dir = args.out / args.date
    render_report(results, out_dir)
    print(f"report: {out_dir / 'report.md'}")
    return 0


def assemble_results(args, names, per_system, es, row, prepared, stages, notes_all, pool_notes, gen_notes,
                     categories, wall_s) -> dict:
    n_pool = len(es.pool)
    signals = {"cooccurrence": es.cooccurrence, "postlinks": es.postlinks}
    rows_of = {s: ([row[q] for q, _ in pairs], [row[t] for _, t in pairs]) for s, pairs in signals.items()}
    # a link or pair present in both directions is one cluster for the bootstrap
    clusters = {s: ["|".join(sorted(p)) for p in pairs] for s, pairs in signals.items()}
    cooc_buckets = [es.bucket(q) for q, _ in es.cooccurrence]
    new_sel = np.array([q in es.new_queries for q, _ in es.cooccurrence])
    sys_out = []
    hits = {}  # signal -> name -> hit vector at the headline K, for intervals and paired tests
    for name in names:
        scores, result = per_system[name]
        entry = {"name": name, "label": SYSTEMS[name][0], "group": SYSTEMS[name][1], "recall": {},
                 "k_capped": {}, "pairs": {}, "recall_curve": {}, "cost": result["cost"],
                 "loss_curve": result.get("loss_curve")}
        ranks = {}
        for s, (qr, tr) in rows_of.items():
            ranks[s] = scoring.ranks_from_scores(scores, qr, tr)
            ev = scoring.evaluate_signal(ranks[s], n_pool, KS)
            entry["recall"][s], entry["k_capped"], entry["pairs"][s] = ev["recall"], ev["k_capped"], ev["pairs"]
            entry["recall_curve"][s] = ev["curve"]
            h = scoring.hits_at_k(ranks[s], n_pool, HEADLINE_K)
            hits.setdefault(s, {})[name] = h
            if len(h):
                entry.setdefault("recall_ci", {})[s] = {str(HEADLINE_K): list(scoring.bootstrap_interval(
                    h, seed=args.seed, clusters=clusters[s]))}
        entry["by_exposure"] = scoring.evaluate_buckets(ranks["cooccurrence"], cooc_buckets, n_pool, KS)
        entry["new_notes"] = ({"recall": scoring.evaluate_signal(ranks["cooccurrence"][new_sel], n_pool, KS)["recall"],
                               "pairs": int(new_sel.sum())} if new_sel.any() else None)
        gen = result.get("generation")
        if gen:
            entry["generation"] = generation_metrics(gen["rows"], gen_notes, categories)
            entry["generation_wall_s"] = gen.get("wall_s")
        else:
            entry["generation"] = None
        if result.get("train_command"):
            # as a reader reruns it: no interpreter or checkout prefix of this machine
            entry["train_command"] = protocol.display_command(result["train_command"])
        sys_out.append(entry)

    cats = [n["category"] for n in pool_notes]
    floor = {"recall": {}, "trials": 0, "definition": "exact expectation of ranking the query's category first, "
                                                      "randomly, then the rest randomly"}
    for s, (qr, tr) in rows_of.items():
        floor["recall"][s] = {str(k): v for k, v in systems.random_within_category_recall(cats, qr, tr, KS).items()}
    floor["by_exposure"] = {}
    for b in ("low", "high"):
        sel = [i for i, lab in enumerate(cooc_buckets) if lab == b]
        qr, tr = rows_of["cooccurrence"]
        floor["by_exposure"][b] = {"recall": {str(k): v for k, v in systems.random_within_category_recall(
            cats, [qr[i] for i in sel], [tr[i] for i in sel], KS).items()}, "pairs": len(sel)}
    qr, tr = rows_of["cooccurrence"]
    sel = np.flatnonzero(new_sel)
    floor["new_notes"] = {"recall": {str(k): v for k, v in systems.random_within_category_recall(
        cats, [qr[i] for i in sel], [tr[i] for i in sel], KS).items()}, "pairs": int(len(sel))} if len(sel) else None

    # every pair of systems on the same test pairs, later (in SYSTEMS order) vs earlier
    paired = {s: [{"a": a, "b": b, "k": HEADLINE_K,
                   **scoring.paired_comparison(by[a], by[b], seed=args.seed, clusters=clusters[s])}
                  for j, a in enumerate(names) for b in names[:j] if len(by[a])]
              for s, by in hits.items()}

    cases = build_cases(args, names, per_system, es, row, pool_notes, gen_notes)
    split_counts = prepared.stats["split"].get("counts", {})
    return {
        "schema": "notellm-quality-report/1",
        "date": args.date,
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, no GPU; Python {platform.python_version()}",
        "command": "python -m evaluation.compare " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in (("steps", args.steps), ("batch_pairs", args.batch_pairs),
                                                         ("lr", args.lr), ("eval_pairs", args.eval_pairs),
                                                         ("pool_size", args.pool_size), ("gen_notes", args.gen_notes),
                                                         ("seed", args.seed))),
        "wall_s": round(wall_s, 1),
        "compute_s": round(_compute_seconds(stages, per_system)[0], 1),
        "compute_s_complete": _compute_seconds(stages, per_system)[1],
        "config": {"training_steps": args.steps, "batch_pairs": args.batch_pairs,
                   "training_pairs_seen": args.steps * args.batch_pairs, "notellm_lr": args.lr,
                   "notellm_warmup_steps": args.warmup, "minilm_lr": 2e-5, "backbone": "SmolLM2-135M-Instruct (fp32)",
                   "embedding_dim_notellm": 128, "tau_init": 3.0,
                   "notellm_variants": {k: {"r": v.get("r", 0.4), "alpha": v.get("alpha", 0.01),
                                            "template": v["template_version"]} for k, v in NOTELLM_VARIANTS.items()},
                   "train_window": f"2009-10-01 .. {protocol.TRAIN_RUN_DATE}",
                   "test_window": f"{protocol.TEST_WINDOW_START} .. {protocol.TEST_RUN_DATE}",
                   "samples": "notes (a pair is two samples)"},
        "data": {"train_pairs": split_counts.get("train_pairs"), "train_notes": split_counts.get("train_notes"),
                 **es.meta, "stages": stages,
                 "adapter": prepared.stats["adapter"]},
        "signals": {"cooccurrence": "co-engagement pairs mined by the Spark job in the test window (query = first note)",
                    "postlinks": "human-made PostLinks (linked/duplicate) between two test-pool questions"},
        "systems": sys_out,
        "random_within_category": floor,
        "paired": paired,
        "uncertainty": {"k": HEADLINE_K, "level": 0.95, "bootstrap_resamples": 2000,
                        "interval": "percentile bootstrap over test pairs, a pair and its reverse resampled together",
                        "paired_test": "exact two-sided McNemar on the discordant pairs (uncorrected)",
                        "pairs_in_both_directions": {s: len(c) - len(set(c)) for s, c in clusters.items()}},
        "paper_table2": PAPER_TABLE2,
        "cases": cases,
        **({"discussion_md": args.discussion.read_text()} if args.discussion else {}),
    }


def _compute_seconds(stages: dict, per_system: dict) -> tuple[float, bool]:
    """What the whole comparison costs from scratch: every data stage and every
    system's training, embedding and generation as first computed (cached
    stages keep the wall time of the run that computed them). Returns the sum
    and whether every part had a recorded time (else the sum is a lower bound)."""
    complete = all(e.get("wall_s") is not None for e in stages.values())
    total = sum(e.get("wall_s") or 0.0 for e in stages.values())
    for name, (_, result) in per_system.items():
        cost = result.get("cost") or {}
        complete &= cost.get("embed_wall_s") is not None
        complete &= name not in NOTELLM_VARIANTS and name != "minilm_ft" or cost.get("train_wall_s") is not None
        total += (cost.get("train_wall_s") or 0.0) + (cost.get("embed_wall_s") or 0.0)
        total += (result.get("generation") or {}).get("wall_s") or 0.0
    return total, complete


def _note_view(note: dict) -> dict:
    return {"note_id": note["note_id"], "title": note["title"], "category": note["category"],
            "hashtags": list(note["hashtags"])}


def build_cases(args, names, per_system, es, row, pool_notes, gen_notes) -> dict:
    """Paper Figure 3 style: a dozen random queries, each system's top 3; generations vs truth."""
    rng = random.Random(args.seed + 1)
    picks = rng.sample(es.cooccurrence, min(args.cases, len(es.cooccurrence)))
    queries = []
    for q, t in picks:
        truths = {b for a, b in es.cooccurrence if a == q}
        neigh = {}
        for name in names:
            scores = per_system[name][0]
            neigh[name] = [{**_note_view(pool_notes[i]), "is_truth": pool_notes[i]["note_id"] in truths}
                           for i in scoring.top_neighbours(scores, row[q], 3)]
        queries.append({"query": _note_view(pool_notes[row[q]]), "truth": _note_view(pool_notes[row[t]]),
                        "neighbours": neigh})
    generation = []
    for i, note in enumerate(gen_notes[: args.cases]):
        gen = {}
        for name in names:
            g = per_system[name][1].get("generation")
            if g:
                r = g["rows"][i]
                gen[name] = {"category_free": r["category_free"], "category_constrained": r["category_constrained"],
                             "hashtags": row_hashtags(r)}
        generation.append({"note_id": note["note_id"], "title": note["title"], "true_category": note["category"],
                           "true_hashtags": list(note["hashtags"]), "generated": gen})
    return {"queries": queries, "generation": generation}


if __name__ == "__main__":
    sys.exit(main())
