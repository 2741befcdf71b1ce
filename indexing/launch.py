"""Embedding with several worker processes on one host (one per GPU, or CPU
threads split between them), then finalising the store once.

Externally launched workers (torchrun, one per GPU) do not come through here:
each runs ``python -m indexing.cli embed --rank R --world-size W`` and then one
``embed --finalize`` checks and completes the store.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

from indexing.config import EmbedConfig
from indexing.store import finalize, make_plan, start_full_run
from notellm.contracts import NOTES, read_table


def _worker(args) -> dict:
    model_dir, notes_path, emb_root, config, rank, world_size, threads = args
    import torch

    from indexing.embed import embed_corpus
    from notellm.encoder import NoteEncoder
    torch.set_num_threads(threads)
    encoder = NoteEncoder.load(model_dir)
    if torch.cuda.is_available():
        encoder.to(f"cuda:{rank % torch.cuda.device_count()}")
    notes = read_table(notes_path, NOTES)
    config = dataclasses.replace(config, progress=config.progress and rank == 0)
    return embed_corpus(encoder, notes, emb_root, config, rank=rank, world_size=world_size,
                        finalize_store=False).as_dict()


def embed_multiprocess(model_dir: str | os.PathLike, notes_path: str | os.PathLike, emb_root: str | os.PathLike,
                       config: EmbedConfig, num_procs: int) -> dict:
    """Shard the corpus over ``num_procs`` local worker processes, then finalise;
    returns the summed :class:`indexing.embed.EmbedStats` as a dict."""
    import multiprocessing as mp

    from indexing.embed import EmbedStats
    from notellm.encoder import SIDECAR, EncoderConfig
    enc_config = EncoderConfig.from_json(Path(model_dir) / SIDECAR)
    plan, _ = make_plan(read_table(notes_path, NOTES), enc_config.prompt_config, config.shard_size)
    if not config.incremental:
        # Prepare the full run once here, so workers only resume it.
        start_full_run(Path(emb_root) / enc_config.model_id, plan)
    threads = max(1, (os.cpu_count() or 1) // num_procs)
    t0 = time.perf_counter()
    with mp.get_context("spawn").Pool(num_procs) as pool:
        results = pool.map(_worker, [(str(model_dir), str(notes_path), str(emb_root), config, r, num_procs, threads)
                                     for r in range(num_procs)])
    total = EmbedStats(notes=len(plan.note_ids), shards=plan.num_shards)
    for r in results:
        for key in ("shards_skipped", "shards_written", "embedded", "reused"):
            setattr(total, key, getattr(total, key) + r[key])
        total.embed_seconds = max(total.embed_seconds, r["embed_seconds"])
    finalize(emb_root, enc_config.model_id, plan, total)
    total.seconds = time.perf_counter() - t0
    return total.as_dict()
