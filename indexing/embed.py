"""Embedding the note corpus with the approved NoteLLM model into the store.

The store, its plan and its shard files are :mod:`indexing.store`; launching
several local worker processes is :mod:`indexing.launch`. This module is the
loop of one worker. What makes it resumable and incremental:

* a planned shard whose file already holds exactly the planned
  ``(note_id, text_sha256)`` rows is skipped (resume after a crash, or nothing
  changed in it);
* incremental mode reuses every stored vector whose key matches and embeds
  only new or changed notes; shards past the end of the new plan (and with
  them deleted notes) are removed by :func:`indexing.store.finalize`;
* full mode ignores vectors from earlier runs, but resumes its own run: the
  plan digest in ``_run.json`` tells a crashed full run from an old one.

Work is split over ``world_size`` workers by shard (rank r takes shards
i with i % world_size == r); that works on CPU processes and on GPUs alike.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa

from indexing.config import EmbedConfig
from indexing.store import (
    SUCCESS,
    Plan,
    embeddings_table,
    existing_shards,
    finalize,
    full_run_ready,
    load_embeddings,
    make_plan,
    reusable_vectors,
    shard_is_complete,
    shard_path,
    start_full_run,
    wait_for,
)
from notellm.contracts import embeddings_contract, write_table
from notellm.precision import PRECISIONS, cpu_has_native_bf16, use_bf16  # noqa: F401 (re-exported)

__all__ = ["EmbedConfig", "EmbedStats", "embed_corpus", "existing_shards", "finalize", "load_embeddings",
           "make_plan"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class EmbedStats:
    notes: int = 0
    shards: int = 0
    shards_skipped: int = 0
    shards_written: int = 0
    embedded: int = 0
    reused: int = 0
    seconds: float = 0.0
    embed_seconds: float = 0.0

    @property
    def notes_per_s(self) -> float:
        return self.embedded / self.embed_seconds if self.embed_seconds > 0 else 0.0

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["notes_per_s"] = round(self.notes_per_s, 2)
        return d


class _Progress:
    """tqdm bar counting embedded notes (its rate is notes/s); silent when disabled."""

    def __init__(self, total: int, enabled: bool, desc: str):
        self.bar = None
        if enabled and total:
            from tqdm import tqdm
            self.bar = tqdm(total=total, unit="note", desc=desc, file=sys.stderr, smoothing=0.1)

    def __call__(self, n: int):
        if self.bar is not None:
            self.bar.update(n)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def embed_corpus(encoder, notes: pa.Table, emb_root: str | os.PathLike, config: EmbedConfig = EmbedConfig(),
                 rank: int = 0, world_size: int = 1, after_shard: Callable[[int], None] | None = None,
                 finalize_store: bool | None = None) -> EmbedStats:
    """Embed this worker's shards of ``notes`` (NOTES contract) into the store.

    ``after_shard(i)`` is called after shard i is safely written (a test hook:
    raising there simulates a crash after k shards). With ``world_size == 1``
    the store is finalised (stale shards removed, ``_SUCCESS`` written); with
    several workers call :func:`indexing.store.finalize` once all have finished.
    """
    t0 = time.perf_counter()
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world of size {world_size}")
    model_id = encoder.config.model_id
    if not model_id:
        raise ValueError("encoder has no model_id (load it with NoteEncoder.load from a saved directory)")
    plan, notes = make_plan(notes, encoder.config.prompt_config, config.shard_size)
    model_dir = Path(emb_root) / model_id
    model_dir.mkdir(parents=True, exist_ok=True)
    stats = EmbedStats(notes=len(plan.note_ids), shards=plan.num_shards)
    if not config.incremental:
        _prepare_full_run(model_dir, plan, rank, world_size)
    todo = _shards_to_write(model_dir, plan, model_id, rank, world_size, stats)
    if todo:
        # The store is about to change: it is no longer a complete, finalised set.
        (model_dir / SUCCESS).unlink(missing_ok=True)
        _write_shards(encoder, notes, model_dir, plan, todo, config, stats, f"embed rank {rank}/{world_size}",
                      after_shard)
    if finalize_store if finalize_store is not None else world_size == 1:
        finalize(emb_root, model_id, plan, stats)
    stats.seconds = time.perf_counter() - t0
    return stats


def _prepare_full_run(model_dir: Path, plan: Plan, rank: int, world_size: int) -> None:
    """Rank 0 starts the full run over (unless it is resuming); other ranks wait for it."""
    if rank == 0:
        start_full_run(model_dir, plan)
    elif world_size > 1:
        wait_for(lambda: full_run_ready(model_dir, plan))


def _shards_to_write(model_dir: Path, plan: Plan, model_id: str, rank: int, world_size: int,
                     stats: EmbedStats) -> list[int]:
    """This rank's shards that are not already stored complete (those count as skipped / reused)."""
    todo = []
    stored = existing_shards(model_dir)
    for i in range(rank, plan.num_shards, world_size):
        if i in stored and shard_is_complete(stored[i], plan, i, model_id):
            stats.shards_skipped += 1
            stats.reused += len(plan.shard_rows(i))
        else:
            todo.append(i)
    return todo


def _write_shards(encoder, notes: pa.Table, model_dir: Path, plan: Plan, todo: list[int], config: EmbedConfig,
                  stats: EmbedStats, desc: str, after_shard: Callable[[int], None] | None) -> None:
    """Embed (or reuse) the rows of each shard in ``todo`` and write the shard atomically."""
    wanted = {}
    for i in todo:
        wanted.update(zip(*plan.shard_keys(i)))
    reuse = reusable_vectors(model_dir, encoder.config.model_id, encoder.config.dim, wanted)
    progress = _Progress(len(wanted) - len(reuse), config.progress, desc)
    bf16 = use_bf16(config.precision, encoder.device.type)
    records = notes.select(["title", "content", "hashtags"])
    try:
        for i in todo:
            _write_shard(encoder, records, model_dir, plan, i, reuse, config.batch_size, bf16, progress, stats)
            if after_shard is not None:
                after_shard(i)
    finally:
        progress.close()


def _write_shard(encoder, records: pa.Table, model_dir: Path, plan: Plan, shard: int, reuse: dict,
                 batch_size: int, bf16: bool, progress: _Progress, stats: EmbedStats) -> None:
    rows = plan.shard_rows(shard)
    ids, fps = plan.shard_keys(shard)
    dim = encoder.config.dim
    vecs = np.zeros((len(ids), dim), dtype=np.float32)
    need = [j for j, nid in enumerate(ids) if nid not in reuse]
    for j, nid in enumerate(ids):
        if nid in reuse:
            vecs[j] = reuse[nid]
    if need:
        batch = records.take(pa.array([rows.start + j for j in need])).to_pylist()
        te = time.perf_counter()
        vecs[need] = encoder.embed_notes(batch, batch_size=batch_size, autocast_bf16=bf16,
                                         sort_by_length=True, progress=progress)
        stats.embed_seconds += time.perf_counter() - te
    stats.embedded += len(need)
    stats.reused += len(ids) - len(need)
    write_table(embeddings_table(ids, vecs, encoder.config.model_id, fps), shard_path(model_dir, shard),
                embeddings_contract(dim))
    stats.shards_written += 1
