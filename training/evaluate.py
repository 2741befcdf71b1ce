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

Cost levers: the models run on the GPU when there is one (``--device auto``; loaded in
bf16 with ``--precision auto``); ``--pool-sample N`` evaluates on at most N pool notes
(every test pair's endpoints plus a seeded random sample of the rest; ``pool_sampling``
in the result says how); ``--embeddings-root`` reuses the approved model's vectors from
the nightly embedding store (``notellm.embedding_store``): only notes stored by that
model_id with the note's current text fingerprint are reused, the rest (new or changed
notes) are embedded; the approved entry's ``reuse`` counts both.
"""

from __future__ import annotations

import dataclasses
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


def sample_pool(pool: list[str], pairs: list[tuple[str, str]], max_notes: int, seed: int = 0) -> tuple[list, dict]:
    """At most ``max_notes`` pool notes (0 = all): every test pair's endpoints that are in the pool, plus
    a seeded random sample of the others; pool order is kept (ties rank by pool order)."""
    info = {"max_notes": max_notes, "seed": seed, "full_pool_size": len(pool)}
    if max_notes <= 0 or len(pool) <= max_notes:
        return pool, {**info, "sampled": False, "pool_size": len(pool)}
    ends = {n for pair in pairs for n in pair}
    keep = np.fromiter((n in ends for n in pool), dtype=bool, count=len(pool))
    rest = np.nonzero(~keep)[0]
    room = max(0, max_notes - int(keep.sum()))
    keep[np.random.default_rng(seed).choice(rest, size=min(room, len(rest)), replace=False)] = True
    sampled = [n for n, k in zip(pool, keep) if k]
    endpoints = len(pool) - len(rest)
    return sampled, {**info, "sampled": len(sampled) < len(pool), "pool_size": len(sampled),
                     "endpoints": endpoints, "random": len(sampled) - endpoints}


def needed_notes(pool: list[str], pairs: list[tuple[str, str]]) -> list[str]:
    """The notes whose vectors an evaluation needs: the pool, then the pairs' endpoints not in it."""
    return list(dict.fromkeys([*pool, *(n for p in pairs for n in p)]))


def score(needed: list[str], vectors: np.ndarray, pairs, pool, ks=(10, 50, 100, 1000), batch_pairs: int = 16,
          seed: int = 0) -> dict:
    """Recall@K over ``pool`` and in-batch accuracy on ``pairs`` from the vectors of ``needed``."""
    row = {n: i for i, n in enumerate(needed)}
    pool_vecs = vectors[[row[n] for n in pool]]
    queries = {q: vectors[row[q]] for q, _ in pairs}
    rec = recall_at_k(pool, pool_vecs, pairs, ks=ks, query_vectors=queries, with_ranks=True)
    b = min(batch_pairs, max(1, len(pairs)))
    plan = plan_epoch(pairs, b, seed, 0)
    accs = [in_batch_accuracy(vectors[[row[pairs[i][0]] for i in batch]], vectors[[row[pairs[i][1]] for i in batch]])
            for batch in plan.batches]
    return {"recall": {str(k): v for k, v in rec["recall"].items()},
            "k_capped": {str(k): v for k, v in rec["k_capped"].items()},
            "targets_missing_from_pool": rec["targets_missing"],
            "in_batch_accuracy": float(np.mean(accs)) if accs else float("nan"),
            "in_batch_batches": len(accs), "in_batch_batch_pairs": b, "in_batch_chance": 1.0 / (2 * b - 1),
            "ranks": rec["ranks"].tolist()}


def evaluate_encoder(encoder, pairs, pool, notes, ks=(10, 50, 100, 1000), batch_pairs: int = 16,
                     batch_size: int = 32, autocast_bf16: bool = False, seed: int = 0) -> dict:
    """Recall@K over ``pool`` and in-batch accuracy on ``pairs`` (all notes must be in ``notes``)."""
    t0 = time.perf_counter()
    needed = needed_notes(pool, pairs)
    vectors = encoder.embed_notes([notes[n] for n in needed], batch_size=batch_size, autocast_bf16=autocast_bf16)
    embed_s = time.perf_counter() - t0
    return {**score(needed, vectors, pairs, pool, ks, batch_pairs, seed), "embed_s": embed_s,
            "notes_embedded": len(needed)}


@dataclasses.dataclass
class Placement:
    """Where and in which dtype the models run: on a GPU the weights themselves are bf16 (with
    precision auto / bf16, as the indexing embeds); on a CPU they stay fp32 with bf16 autocast
    where notellm.precision says so."""

    device: str
    dtype: str            # "bfloat16" | "float32": the weights
    autocast: bool
    bf16: bool

    @classmethod
    def choose(cls, device: str, precision: str) -> "Placement":
        import torch

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise RuntimeError(f"--device {device}: no CUDA device is visible")
            bf16 = use_bf16(precision, "cuda")
            return cls(device, "bfloat16" if bf16 else "float32", False, bf16)
        bf16 = use_bf16(precision, "cpu")
        return cls(device, "float32", bf16, bf16)

    def load(self, model_dir):
        import torch

        from notellm.encoder import NoteEncoder
        return NoteEncoder.load(model_dir, dtype=getattr(torch, self.dtype)).to(self.device)

    def build(self, cfg):
        """The untrained backbone with the model's settings and seed."""
        import torch

        from notellm.encoder import NoteEncoder
        return NoteEncoder.build(cfg.base_model, dim=cfg.dim, template_version=cfg.template_version,
                                 max_title_tokens=cfg.max_title_tokens, max_content_tokens=cfg.max_content_tokens,
                                 dtype=getattr(torch, self.dtype), seed=int(cfg.extra.get("seed", 0))).to(self.device)

    def release(self) -> None:
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()


def approved_vectors(record: dict, needed: list[str], notes: dict, args, place: Placement) -> tuple[np.ndarray, dict]:
    """The approved model's vectors of ``needed``: stored ones from the embedding store (same model_id,
    current text fingerprint), the rest embedded. Returns (vectors in ``needed`` order, reuse counts)."""
    from notellm.contracts import ContractError
    from notellm.embedding_store import lookup
    from notellm.encoder import SIDECAR, EncoderConfig
    from notellm.prompts import note_fingerprint

    model_id = record["model_id"]
    sidecar = EncoderConfig.from_json(Path(record["model_dir"]) / SIDECAR)
    reuse = {"embeddings_root": args.embeddings_root, "reused": 0, "stale": 0, "embedded": 0, "skipped": None}
    have: dict[str, np.ndarray] = {}
    if not args.embeddings_root:
        reuse["skipped"] = "no --embeddings-root"
    elif sidecar.model_id != model_id:
        reuse["skipped"] = f"APPROVED.json names {model_id}, the model's side-car {sidecar.model_id}"
    else:
        fingerprints = [note_fingerprint(notes[n], sidecar.prompt_config) for n in needed]
        try:
            found = lookup(args.embeddings_root, model_id, needed, fingerprints, dim=sidecar.dim)
        except (ContractError, OSError) as exc:
            reuse["skipped"] = str(exc)
        else:
            have = dict(zip(found.ids, found.vectors))
            reuse.update(reused=len(found.ids), stale=found.stale, buckets_read=found.buckets_read)
    if reuse["skipped"]:
        log.warning("approved model %s: not reusing stored vectors (%s); embedding all %d notes", model_id,
                    reuse["skipped"], len(needed))
    todo = [n for n in needed if n not in have]
    if todo:
        approved = place.load(record["model_dir"])
        if approved.config.model_id != model_id:
            raise RuntimeError(f"{record['model_dir']}: model_id {approved.config.model_id}, APPROVED.json says "
                               f"{model_id}")
        have.update(zip(todo, approved.embed_notes([notes[n] for n in todo], batch_size=args.batch_size,
                                                   autocast_bf16=place.autocast)))
        del approved
        place.release()
    reuse["embedded"] = len(todo)
    log.info("approved model %s: %d vectors reused from the embedding store, %d embedded (%d stale: text changed)",
             model_id, reuse["reused"], reuse["embedded"], reuse["stale"])
    return np.stack([have[n] for n in needed]).astype(np.float32, copy=False), reuse


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

    raw_pairs, meta = load_pairs(args.pairs)
    full_pool = load_pool(args.pool)
    wanted = set(full_pool) | {n for p in raw_pairs for n in p}
    notes = load_notes(args.notes, wanted)
    pairs, report = clean_pairs(raw_pairs, notes)
    missing_pool = [n for n in full_pool if n not in notes]
    if missing_pool:
        raise cli.BadInput(f"{args.pool}: {len(missing_pool)} pool notes are missing from {args.notes}, "
                           f"e.g. {missing_pool[:5]}")
    if args.limit_pairs:
        pairs = pairs[:args.limit_pairs]
    if not pairs:
        raise cli.BadInput(f"{args.pairs}: no usable test pairs ({report.summary()})")
    pool, sampling = sample_pool(full_pool, pairs, args.pool_sample, args.seed)
    log.info("test pairs: %s; pool %d notes%s", report.summary(), len(pool),
             f" (sampled from {len(full_pool)}: {sampling['endpoints']} test-pair endpoints + "
             f"{sampling['random']} random, seed {args.seed})" if "endpoints" in sampling else "")
    ks = tuple(int(k) for k in args.ks)
    place = Placement.choose(args.device, args.precision)
    log.info("models on %s, weights %s, bf16 autocast %s", place.device, place.dtype, place.autocast)
    needed = needed_notes(pool, pairs)
    result = {"test_pairs": len(pairs), "pool_size": len(pool), "ks": list(ks),
              "pool_sampling": sampling, "device": place.device, "weights_dtype": place.dtype,
              "test_fingerprint": test_set_fingerprint(pairs, pool), "pairs_report": report.__dict__,
              "test_window": {"start": meta.get("window_start"), "end": meta.get("window_end")}}

    def scored(vectors, name, model_id, seconds, embedded):
        res = score(needed, vectors, pairs, pool, ks, args.batch_pairs, args.seed)
        res.update(embed_s=seconds, notes_embedded=embedded, bf16=place.bf16, device=place.device,
                   model_id=model_id)
        log.info("%s: recall %s in-batch acc %.3f (chance %.3f)", name, res["recall"], res["in_batch_accuracy"],
                 res["in_batch_chance"])
        return res

    def one(encoder, name):
        torch.manual_seed(0)
        t0 = time.perf_counter()
        vectors = encoder.embed_notes([notes[n] for n in needed], batch_size=args.batch_size,
                                      autocast_bf16=place.autocast)
        return scored(vectors, name, encoder.config.model_id, time.perf_counter() - t0, len(needed))

    model = place.load(args.model)
    cfg = model.config
    result["model"] = one(model, "model")
    result["model"]["model_dir"] = str(Path(args.model).resolve())
    del model
    place.release()
    if args.backbone_baseline:
        base = place.build(cfg)
        result["backbone"] = one(base, "backbone")
        result["backbone"]["base_model"] = cfg.base_model
        result["gain_over_backbone"] = gain_over(result["model"], result["backbone"], pairs, len(pool), ks)
        del base
        place.release()
    if args.approved_root:
        from notellm.registry import current_approved
        record = current_approved(args.approved_root)
        if record is not None:
            t0 = time.perf_counter()
            vectors, reuse = approved_vectors(record, needed, notes, args, place)
            result["approved"] = scored(vectors, "approved", record["model_id"], time.perf_counter() - t0,
                                        reuse["embedded"])
            result["approved"].update(model_dir=record["model_dir"], notes_reused=reuse["reused"], reuse=reuse)
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
