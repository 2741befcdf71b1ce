"""Evaluate a trained NoteLLM model (and optionally baselines) on held-out pairs.

Usage::

    python -m training.evaluate --model RUN/model --pairs PAIRS_ROOT/dt=D --pool POOL_DIR --notes NOTES \\
        [--backbone-baseline] [--approved-root MODELS_ROOT] [--out eval.json]

Reports, per model, Recall@K over the test pool (NoteLLM protocol:
notellm.metrics.recall_at_k, query excluded) and the in-batch accuracy on the
held-out pairs grouped into batches of ``--batch-pairs`` pairs with distinct
notes (notellm.metrics.in_batch_accuracy; chance 1/(2B-1)).
``--backbone-baseline`` also evaluates the untrained backbone (a fresh
NoteEncoder built with the model's seed), ``--approved-root`` the currently
approved model, so the registration gate compares models on one test set.
With the backbone, ``gain_over_backbone`` gives the model's Recall@K gain per K with
a paired bootstrap 95% interval (clusters = query notes) and McNemar's p-value; each
system's ``ranks`` lists the target's rank per test pair.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import numpy as np

from notellm import cli
from notellm.batching import plan_epoch
from notellm.contracts import POOL, read_table, require_success
from notellm.files import atomic_write_json
from notellm.metrics import in_batch_accuracy, recall_at_k, test_set_fingerprint
from notellm.precision import use_bf16
from notellm.stats import hits_at_k, paired_comparison
from training.config import EvaluateConfig
from training.data import clean_pairs, load_notes, load_pairs

log = logging.getLogger(__name__)



def load_pool(path: str | Path) -> list[str]:
    path = Path(path)
    if path.is_dir():
        require_success(path)
    return read_table(path, POOL).column("note_id").to_pylist()




def evaluate_encoder(encoder, pairs, pool, notes, ks=(10, 50, 100, 1000), batch_pairs: int = 16,
                     batch_size: int = 32, autocast_bf16: bool = False, seed: int = 0) -> dict:
    """Recall@K over ``pool`` and in-batch accuracy on ``pairs`` (all notes must be in ``notes``)."""
    t0 = time.perf_counter()
    needed = list(dict.fromkeys([*pool, *(n for p in pairs for n in p)]))
    vectors = encoder.embed_notes([notes[n] for n in needed], batch_size=batch_size, autocast_bf16=autocast_bf16)
    row = {n: i for i, n in enumerate(needed)}
    pool_vecs = vectors[[row[n] for n in pool]]
    queries = {q: vectors[row[q]] for q, _ in pairs}
    rec = recall_at_k(pool, pool_vecs, pairs, ks=ks, query_vectors=queries, with_ranks=True)
    plan = plan_epoch(pairs, min(batch_pairs, max(1, len(pairs))), seed, 0)
    accs = [in_batch_accuracy(vectors[[row[pairs[i][0]] for i in b]], vectors[[row[pairs[i][1]] for i in b]])
            for b in plan.batches]
    b = min(batch_pairs, max(1, len(pairs)))
    return {"recall": {str(k): v for k, v in rec["recall"].items()},
            "k_capped": {str(k): v for k, v in rec["k_capped"].items()},
            "targets_missing_from_pool": rec["targets_missing"],
            "in_batch_accuracy": float(np.mean(accs)) if accs else float("nan"),
            "in_batch_batches": len(accs), "in_batch_batch_pairs": b, "in_batch_chance": 1.0 / (2 * b - 1),
            "embed_s": time.perf_counter() - t0, "notes_embedded": len(needed),
            "ranks": rec["ranks"].tolist()}


def gain_over(new: dict, reference: dict, pairs: list[tuple[str, str]], pool_size: int, ks, seed: int = 0) -> dict:
    """Recall@K of ``new`` minus ``reference`` on the same pairs, per K, with a paired
    cluster bootstrap 95% interval (the pairs of one query note are one cluster: they share
    the query's embedding) and the exact McNemar p-value (notellm.stats.paired_comparison)."""
    clusters = [q for q, _ in pairs]
    new_ranks, ref_ranks = np.asarray(new["ranks"]), np.asarray(reference["ranks"])
    return {str(k): paired_comparison(hits_at_k(new_ranks, pool_size, k), hits_at_k(ref_ranks, pool_size, k),
                                      seed=seed, clusters=clusters)
            for k in ks}


def run(args) -> dict:
    import torch

    from notellm.encoder import NoteEncoder

    raw_pairs, meta = load_pairs(args.pairs)
    pool = load_pool(args.pool)
    wanted = set(pool) | {n for p in raw_pairs for n in p}
    notes = load_notes(args.notes, wanted)
    pairs, report = clean_pairs(raw_pairs, notes)
    missing_pool = [n for n in pool if n not in notes]
    if missing_pool:
        raise cli.BadInput(f"{args.pool}: {len(missing_pool)} pool notes are missing from {args.notes}, "
                           f"e.g. {missing_pool[:5]}")
    if args.limit_pairs:
        pairs = pairs[:args.limit_pairs]
    log.info("test pairs: %s; pool %d notes", report.summary(), len(pool))
    if not pairs:
        raise cli.BadInput(f"{args.pairs}: no usable test pairs ({report.summary()})")
    ks = tuple(int(k) for k in args.ks)
    result = {"test_pairs": len(pairs), "pool_size": len(pool), "ks": list(ks),
              "test_fingerprint": test_set_fingerprint(pairs, pool), "pairs_report": report.__dict__,
              "test_window": {"start": meta.get("window_start"), "end": meta.get("window_end")}}

    def one(encoder, name):
        torch.manual_seed(0)
        bf16 = use_bf16(args.precision, encoder.device.type)
        res = evaluate_encoder(encoder, pairs, pool, notes, ks, args.batch_pairs, args.batch_size, bf16)
        res["bf16"] = bf16
        res["model_id"] = encoder.config.model_id
        log.info("%s: recall %s in-batch acc %.3f (chance %.3f)", name, res["recall"], res["in_batch_accuracy"],
                 res["in_batch_chance"])
        return res

    model = NoteEncoder.load(args.model)
    result["model"] = one(model, "model")
    result["model"]["model_dir"] = str(Path(args.model).resolve())
    if args.backbone_baseline:
        cfg = model.config
        base = NoteEncoder.build(cfg.base_model, dim=cfg.dim, template_version=cfg.template_version,
                                 max_title_tokens=cfg.max_title_tokens, max_content_tokens=cfg.max_content_tokens,
                                 seed=int(cfg.extra.get("seed", 0)))
        result["backbone"] = one(base, "backbone")
        result["backbone"]["base_model"] = cfg.base_model
        result["gain_over_backbone"] = gain_over(result["model"], result["backbone"], pairs, len(pool), ks)
        del base
    if args.approved_root:
        from notellm.registry import current_approved
        record = current_approved(args.approved_root)
        if record is not None:
            approved = NoteEncoder.load(record["model_dir"])
            result["approved"] = one(approved, "approved")
            result["approved"]["model_dir"] = record["model_dir"]
    return result


def summary(result: dict) -> dict:
    """The evaluation without the per-pair ranks (the result line when --out holds the whole)."""
    return {k: ({kk: vv for kk, vv in v.items() if kk != "ranks"} if isinstance(v, dict) else v)
            for k, v in result.items()}


def _run(cfg: EvaluateConfig, timer: cli.Timer) -> dict:
    with timer.phase("evaluate"):
        result = run(cfg)
    if cfg.out:
        atomic_write_json(cfg.out, result)
        return {"out": str(cfg.out), **summary(result)}
    return result


def main(argv=None) -> int:
    return cli.main(_run, EvaluateConfig, argv, prog="python -m training.evaluate")


if __name__ == "__main__":
    sys.exit(main())
