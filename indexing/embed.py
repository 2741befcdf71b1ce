"""Embedding the note corpus with the approved NoteLLM model into the bucketed store.

The store format is :mod:`indexing.store`, bucket assignment and reading a
rank's notes :mod:`indexing.buckets`, process groups and local workers
:mod:`indexing.launch`. This module is the loop of one rank, state-based so a
run is resumable and idempotent: for each of its buckets (b % world_size ==
rank) it folds the stored segments and compares them with the planned
``(note_id, text_sha256)`` rows of the bucket:

* incremental (default): nothing is written when they are equal; otherwise new
  and changed notes are embedded and written with tombstones for deleted notes
  as one delta segment, or, once the bucket's deltas would exceed
  ``compact_fraction`` of its base, as a new base (compaction);
* full (``--no-incremental``): every bucket gets a new base of freshly embedded
  vectors, except buckets whose base this same run already wrote (``_run.json``
  records the seq floor of the run), so a crashed full run resumes.

Each bucket is embedded on its own (notes length-sorted, token-budget batches),
so the files do not depend on the number of ranks: 2 ranks write byte for byte
what 1 rank writes. After writing, a bucket is folded again and checked.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from indexing.buckets import count_rows, keys_digest, rank_buckets, read_rank_notes
from indexing.config import EmbedConfig
from indexing.store import (
    SUCCESS,
    StoreInfo,
    clean_bucket,
    create_or_check_store,
    finalize,
    fold,
    full_run_floor,
    list_segments,
    live_segments,
    segment_table,
    start_or_resume_full_run,
    vectors_of,
    write_segment,
)
from notellm.locking import locked
from notellm.precision import use_bf16

__all__ = ["EmbedConfig", "EmbedStats", "combine_stats", "embed_corpus", "embed_rank", "load_encoder",
           "prepare_store"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class EmbedStats:
    """One rank's counts. ``notes`` = rows of the whole input (every rank reads them all);
    ``vectors`` = rows its buckets hold afterwards."""

    rank: int = 0
    notes: int = 0
    vectors: int = 0
    buckets: int = 0
    buckets_written: int = 0
    buckets_verified: int = 0
    segments_written: int = 0
    compactions: int = 0
    embedded: int = 0
    reused: int = 0
    deleted: int = 0
    bytes_written: int = 0
    seconds: float = 0.0
    embed_seconds: float = 0.0
    bucket_digests: dict = dataclasses.field(default_factory=dict)

    @property
    def notes_per_s(self) -> float:
        return self.embedded / self.embed_seconds if self.embed_seconds > 0 else 0.0

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("bucket_digests")
        d["notes_per_s"] = round(self.notes_per_s, 2)
        return d


def combine_stats(parts: list[EmbedStats], num_buckets: int) -> dict:
    """The run's figures from every rank's: sums, slowest rank's times, the plan digest (sha256
    over the bucket digests in bucket order), and the checks :func:`indexing.store.finalize` needs."""
    notes = {p.notes for p in parts}
    if len(notes) != 1:
        raise RuntimeError(f"ranks read different inputs: rows {sorted(notes)}")
    digests = {b: d for p in parts for b, d in p.bucket_digests.items()}
    out = {k: sum(getattr(p, k) for p in parts) for k in
           ("vectors", "buckets_written", "buckets_verified", "segments_written", "compactions", "embedded",
            "reused", "deleted", "bytes_written")}
    if out["buckets_verified"] != len(digests):
        raise RuntimeError(f"{out['buckets_verified']} bucket checks for {len(digests)} buckets: a bucket ran twice")
    embed_s = max(p.embed_seconds for p in parts)
    h = hashlib.sha256()
    for b in range(num_buckets):
        h.update(digests.get(b, "-").encode())
    out.update(notes=notes.pop(), world_size=len(parts), seconds=round(max(p.seconds for p in parts), 3),
               embed_seconds=round(embed_s, 3), notes_per_s=round(out["embedded"] / embed_s, 2) if embed_s else 0.0,
               plan_digest=h.hexdigest())
    return out


class _Progress:
    """tqdm bar counting notes (embedded or reused); silent when disabled."""

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


def load_encoder(model_dir: str | Path, precision: str = "auto", local_rank: int = 0):
    """(encoder, autocast_bf16) for inference: on CUDA the encoder goes to ``cuda:local_rank`` with
    bf16 weights (precision auto / bf16); on CPU it stays fp32 with bf16 autocast where
    :func:`notellm.precision.use_bf16` says so (native bf16 only, for auto)."""
    import torch

    from notellm.encoder import NoteEncoder
    encoder = NoteEncoder.load(model_dir)
    if torch.cuda.is_available():
        encoder.to(f"cuda:{local_rank % torch.cuda.device_count()}")
        if use_bf16(precision, "cuda"):
            encoder.to(torch.bfloat16)
        return encoder, False
    return encoder, use_bf16(precision, "cpu")


def prepare_store(model_dir: Path, model_id: str, dim: int, config: EmbedConfig, notes) -> StoreInfo:
    """Rank 0, before the other ranks start: create or check ``_store.json`` and, in full mode,
    start (or resume) the full run."""
    info = create_or_check_store(model_dir, model_id, dim, config.num_buckets, count_rows(notes))
    if not config.incremental:
        start_or_resume_full_run(info)
    return info


def embed_rank(encoder, notes, info: StoreInfo, config: EmbedConfig, rank: int = 0, world_size: int = 1,
               autocast_bf16: bool = False) -> EmbedStats:
    """Bring this rank's buckets in line with ``notes`` (NOTES Parquet path or table)."""
    t0 = time.perf_counter()
    if encoder.config.model_id != info.model_id or encoder.config.dim != info.dim:
        raise ValueError(f"encoder {encoder.config.model_id} (d={encoder.config.dim}) does not match the store "
                         f"{info.model_dir} ({info.model_id}, d={info.dim})")
    floor = None
    if not config.incremental:
        floor = full_run_floor(info)
        if floor is None:
            raise RuntimeError(f"{info.model_dir}: no full run prepared (_run.json); call prepare_store first")
    mine = read_rank_notes(notes, info.num_buckets, rank, world_size, encoder.config.prompt_config)
    stats = EmbedStats(rank=rank, notes=mine.rows_in)
    progress = _Progress(mine.table.num_rows, config.progress, f"embed rank {rank}/{world_size}")
    writer = _BucketWriter(encoder, info, config, autocast_bf16, stats, progress)
    try:
        for b in rank_buckets(info.num_buckets, rank, world_size):
            writer.run(b, mine.bucket(b), floor)
    finally:
        progress.close()
    stats.seconds = time.perf_counter() - t0
    return stats


def embed_corpus(encoder, notes, emb_root, config: EmbedConfig = EmbedConfig(), rank: int = 0,
                 world_size: int = 1, autocast_bf16: bool | None = None) -> EmbedStats:
    """One worker in this process, without a process group: rank 0 prepares the store; other ranks
    expect it prepared (:func:`indexing.launch.wait_for_store`). With ``world_size == 1`` the store is
    finalised; otherwise run ``embed --finalize`` once every worker has finished."""
    from indexing.launch import wait_for_store
    model_id, dim = encoder.config.model_id, encoder.config.dim
    if not model_id:
        raise ValueError("encoder has no model_id (load it with NoteEncoder.load from a saved directory)")
    model_dir = Path(emb_root) / model_id
    if rank == 0:
        info = prepare_store(model_dir, model_id, dim, config, notes)
    else:
        info = wait_for_store(model_dir, config)
    if autocast_bf16 is None:
        autocast_bf16 = use_bf16(config.precision, encoder.device.type)
    stats = embed_rank(encoder, notes, info, config, rank, world_size, autocast_bf16)
    if world_size == 1:
        finalize(info, combine_stats([stats], info.num_buckets))
    return stats


class _BucketWriter:
    """Compare one bucket's stored state with its planned rows; write what differs."""

    def __init__(self, encoder, info: StoreInfo, config: EmbedConfig, autocast_bf16: bool, stats: EmbedStats,
                 progress: _Progress):
        self.encoder, self.info, self.config = encoder, info, config
        self.autocast, self.stats, self.progress = autocast_bf16, stats, progress
        self.model_id = info.model_id

    def run(self, b: int, planned: pa.Table, floor: int | None) -> None:
        # One writer per bucket at a time, across ranks and across concurrent runs: the segment
        # seq numbers are chosen and written under the bucket's lock (notellm.locking).
        with locked(self.info.bucket_dir(b), f"embed bucket {b}"):
            self._run_locked(b, planned, floor)

    def _run_locked(self, b: int, planned: pa.Table, floor: int | None) -> None:
        info, stats = self.info, self.stats
        stats.buckets += 1
        clean_bucket(info, b)
        segments = live_segments(list_segments(info, b))
        ids = planned.column("note_id").to_pylist()
        fps = planned.column("text_sha256").to_pylist()
        stored = fold(info, segments)
        s_ids, s_fps = stored.column("note_id").to_pylist(), stored.column("text_sha256").to_pylist()
        s_models = set(stored.column("model_id").to_pylist())
        same = s_ids == ids and s_fps == fps and s_models <= {self.model_id}
        if floor is None:
            have = {n: f for n, f, m in zip(s_ids, s_fps, stored.column("model_id").to_pylist()) if m == self.model_id}
            changed = [j for j, (n, f) in enumerate(zip(ids, fps)) if have.get(n) != f]
            wanted = set(ids)
            gone = [n for n in s_ids if n not in wanted]
            done = same
        else:
            done = same and (not segments or (len(segments) == 1 and segments[0].seq >= floor))
            changed, gone = list(range(len(ids))), []
        if not done:
            (info.model_dir / SUCCESS).unlink(missing_ok=True)   # the store is about to change
            self._write(b, planned, segments, changed, gone, floor)
            self._verify(b, ids, fps)
        else:
            self.progress(len(ids))
        stats.reused += len(ids) - (0 if done else len(changed))
        stats.vectors += len(ids)
        stats.buckets_verified += 1
        stats.bucket_digests[b] = keys_digest(ids, fps)

    def _embed(self, rows: pa.Table) -> np.ndarray:
        from notellm.inference import embed_notes
        t = time.perf_counter()
        vecs = embed_notes(self.encoder, rows.select(["title", "content", "hashtags"]).to_pylist(),
                           batch_size=self.config.max_batch_notes, max_batch_tokens=self.config.max_batch_tokens,
                           autocast_bf16=self.autocast, progress=self.progress)
        self.stats.embed_seconds += time.perf_counter() - t
        self.stats.embedded += rows.num_rows
        return vecs

    def _write(self, b: int, planned: pa.Table, segments: list, changed: list[int], gone: list[str],
               floor: int | None) -> None:
        info, stats, dim = self.info, self.stats, self.info.dim
        upserts = planned.take(pa.array(changed, pa.int64()))
        new_vecs = self._embed(upserts)
        self.progress(planned.num_rows - len(changed))
        last = segments[-1].seq if segments else -1
        base_rows = segments[0].rows if segments and segments[0].kind == "base" else None
        delta_rows = sum(s.rows for s in segments if s.kind == "delta")
        if floor is None and base_rows is not None and \
                delta_rows + len(changed) + len(gone) <= self.config.compact_fraction * base_rows:
            vecs = np.concatenate([new_vecs, np.zeros((len(gone), dim), np.float32)])
            ids = upserts.column("note_id").to_pylist() + gone
            fps = upserts.column("text_sha256").to_pylist() + [""] * len(gone)
            deleted = np.concatenate([np.zeros(len(changed), bool), np.ones(len(gone), bool)])
            stats.bytes_written += write_segment(info, b, last + 1, "delta",
                                                 segment_table(ids, vecs, self.model_id, fps, deleted))
            stats.deleted += len(gone)
        else:
            vecs = np.zeros((planned.num_rows, dim), np.float32)
            vecs[changed] = new_vecs
            kept = np.setdiff1d(np.arange(planned.num_rows), np.asarray(changed, np.int64))
            if len(kept):   # unchanged notes: their stored vectors
                state = fold(info, segments, vectors=True)
                pos = pc.index_in(planned.column("note_id").take(pa.array(kept)), value_set=state.column("note_id"))
                vecs[kept] = vectors_of(state.take(pos))
            stats.deleted += len(gone)
            stats.compactions += int(floor is None and base_rows is not None)
            seq = max(last + 1, floor or 0)
            stats.bytes_written += write_segment(info, b, seq, "base",
                                                 segment_table(planned.column("note_id"), vecs, self.model_id,
                                                               planned.column("text_sha256")))
            clean_bucket(info, b)   # the new base is durable: older segments can go
        stats.segments_written += 1
        stats.buckets_written += 1

    def _verify(self, b: int, ids: list, fps: list) -> None:
        state = fold(self.info, live_segments(list_segments(self.info, b)))
        if state.column("note_id").to_pylist() != ids or state.column("text_sha256").to_pylist() != fps:
            raise RuntimeError(f"{self.info.bucket_dir(b)}: bucket does not match its notes after writing")
