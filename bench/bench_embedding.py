"""Embedding throughput of the indexing stage with the default SmolLM2-135M backbone.

    flock /tmp/notellm-heavy.lock .venv/bin/python bench/bench_embedding.py [--notes 400] [--naive 96]

Notes: real Stack Exchange questions (beer + coffee sites) converted by
``jobs.sources.stackexchange`` from ../shared/data. Compares, on the same
machine in one run:

* naive: fp32, unsorted batches of 32 padded to the corpus' maximum prompt length;
* length-sorted fp32 (dynamic padding only);
* token-budget batches (``notellm.inference.embed_notes(max_batch_tokens=...)``:
  longest prompts first, as many notes per batch as fit the padded-token budget)
  in fp32 and with the project's precision ('auto': bf16 autocast with native CPU bf16);
* the project's embedder (``indexing.embed.embed_corpus`` with the default
  ``EmbedConfig``: token budget, precision auto, per-bucket batches), a full
  run over ``--notes`` notes into a fresh store.

Throughput is notes/s of model time; the model's projection is random (speed
does not depend on training). Also reports the bf16-vs-fp32 cosine. The
incremental run is ``bench/bench_embed_incremental.py``. One JSON result line
(notellm.cli contract); ``{"skipped": ...}`` when the data is absent.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from notellm import cli
from notellm.config import option

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "stackexchange"
SITES = ["beer.stackexchange.com", "coffee.stackexchange.com"]


def naive_embed(encoder, notes, batch_size=32):
    """fp32, input order, every batch padded to the longest prompt of the whole corpus."""
    encoded = [encoder.prompts.encode(n, task="category", with_output=False) for n in notes]
    width = max(len(e.input_ids) for e in encoded)
    pad = encoder.tokenizer.pad_token_id
    out = []
    with torch.no_grad():
        for s in range(0, len(encoded), batch_size):
            chunk = encoded[s:s + batch_size]
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, e in enumerate(chunk):
                ids[i, :len(e.input_ids)] = torch.tensor(e.input_ids)
                mask[i, :len(e.input_ids)] = 1
            emb_index = torch.tensor([e.emb_index for e in chunk])
            out.append(encoder(input_ids=ids, attention_mask=mask, emb_index=emb_index).embeddings.numpy())
    return np.concatenate(out), width, [len(e.input_ids) for e in encoded]


@dataclasses.dataclass
class BenchEmbeddingConfig:
    """Embedding throughput of the indexing stage with the default SmolLM2-135M backbone."""

    notes: int = option(400, help="notes of the project's full and incremental runs")
    naive: int = option(96, help="notes for the (slow) naive and fp32 references")
    work: Path | None = option(None, help="work directory (null: a new temporary one)")
    threads: int = option(2, help="torch CPU threads")


def run(args: BenchEmbeddingConfig, timer: cli.Timer) -> dict:
    if not DATA.is_dir():
        log.warning("skip: %s absent", DATA)
        return {"skipped": f"{DATA} absent"}
    import pyarrow as pa

    from indexing.embed import EmbedConfig, embed_corpus
    from jobs.sources.stackexchange import convert
    from notellm.backbone import ensure_default_backbone
    from notellm.contracts import NOTES, read_table
    from notellm.encoder import NoteEncoder
    from notellm.inference import embed_notes
    from notellm.precision import cpu_has_native_bf16, use_bf16

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-embed-"))
    convert(DATA, work / "se", SITES)
    notes_tab = read_table(work / "se" / "notes" / "notes.parquet", NOTES)
    rows = notes_tab.to_pylist()
    random.Random(0).shuffle(rows)
    rows = rows[:args.notes]
    table = pa.Table.from_pylist(rows, schema=NOTES.arrow_schema)

    enc = NoteEncoder.build(ensure_default_backbone(), dim=128)
    enc.save(work / "model")
    enc = NoteEncoder.load(work / "model")
    torch.set_num_threads(args.threads)
    ref = rows[:args.naive]
    enc.embed_notes(ref[:4])  # warm-up

    t = time.perf_counter()
    naive, width, lengths = naive_embed(enc, ref)
    naive_s = time.perf_counter() - t
    t = time.perf_counter()
    sorted_fp32 = enc.embed_notes(ref, batch_size=32, autocast_bf16=False)
    sorted_s = time.perf_counter() - t
    t = time.perf_counter()
    sorted_bf16 = enc.embed_notes(ref, batch_size=32, autocast_bf16=True)
    bf16_s = time.perf_counter() - t
    cos_bf16 = (sorted_fp32 * sorted_bf16).sum(1)
    cos_naive = (sorted_fp32 * naive).sum(1)

    cfg = EmbedConfig(incremental=False, progress=False)      # the defaults: token budget, precision auto
    auto_bf16 = use_bf16(cfg.precision, "cpu")
    timed = {}
    for name, bf16 in (("budget_fp32", False), ("budget_auto", auto_bf16)):
        t = time.perf_counter()
        out = embed_notes(enc, ref, batch_size=cfg.max_batch_notes, max_batch_tokens=cfg.max_batch_tokens,
                          autocast_bf16=bf16)
        timed[name] = (len(ref) / (time.perf_counter() - t), out)
    full = embed_corpus(enc, table, work / "emb", cfg)
    naive_rate = len(ref) / naive_s
    result = {
        "notes_full": len(rows), "reference_notes": len(ref), "prompt_tokens_mean": float(np.mean(lengths)),
        "prompt_tokens_max": int(width), "padding_share_naive": float(1 - np.mean(lengths) / width),
        "max_batch_tokens": cfg.max_batch_tokens, "max_batch_notes": cfg.max_batch_notes,
        "cpu_native_bf16": cpu_has_native_bf16(), "auto_means_bf16": auto_bf16,
        "naive_fp32_fixed_pad_notes_per_s": naive_rate,
        "sorted_fp32_b32_notes_per_s": len(ref) / sorted_s,
        "sorted_bf16_b32_notes_per_s": len(ref) / bf16_s,
        "budget_fp32_notes_per_s": timed["budget_fp32"][0],
        "budget_auto_notes_per_s": timed["budget_auto"][0],
        "ratio_budget_fp32_vs_naive": timed["budget_fp32"][0] / naive_rate,
        "ratio_budget_auto_vs_naive": timed["budget_auto"][0] / naive_rate,
        "project_full_run_notes_per_s": full.notes_per_s,
        "ratio_project_vs_naive": full.notes_per_s / naive_rate,
        "cosine_bf16_vs_fp32_min": float(cos_bf16.min()), "cosine_bf16_vs_fp32_mean": float(cos_bf16.mean()),
        "cosine_naive_vs_sorted_min": float(cos_naive.min()),
        "cosine_budget_auto_vs_fp32_min": float((timed["budget_auto"][1] * sorted_fp32).sum(1).min()),
        "full_run_s": full.seconds, "full_run_embedded": full.embedded,
        "torch_threads": torch.get_num_threads(),
    }
    return {k: round(v, 5) if isinstance(v, float) else v for k, v in result.items()}


def main(argv=None) -> int:
    return cli.main(run, BenchEmbeddingConfig, argv=argv, prog="bench/bench_embedding.py")


if __name__ == "__main__":
    sys.exit(main())
