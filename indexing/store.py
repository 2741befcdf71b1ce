"""The embedding store: buckets of small segment logs, its manifest, finalising and reading.

Layout (one folder per model, so vectors of two models never mix)::

    <emb_root>/<model_id>/_store.json                 format_version 2, num_buckets, hash, dim, model_id
    <emb_root>/<model_id>/b00042/000000-base.parquet  complete rows of bucket 42 (embeddings contract v2)
    <emb_root>/<model_id>/b00042/000001-delta.parquet upserts + tombstones (deleted = true) since that base
    <emb_root>/<model_id>/_run.json                   a full (--no-incremental) run in progress: min_seq
    <emb_root>/<model_id>/_stats.json, _SUCCESS       written last by :func:`finalize`

A note lives in bucket ``fnv1a64(note_id) % num_buckets`` (:mod:`indexing.buckets`).
A bucket's state is its latest base, then the later deltas in seq order: the
last row per note_id wins and a tombstone deletes. Every segment is written
atomically (:func:`notellm.files.atomic_path`), and a new base is written
before older segments are deleted, so a reader that starts at the latest base
never sees a half-written or half-compacted bucket. ``_SUCCESS`` means every
bucket matched the notes of the run that finalised it; a run removes it before
its first write.

The read side of the contract (``_store.json``, listing and folding segments, the finalised
check) is :mod:`notellm.embedding_store`, shared with training's evaluation; it is re-exported here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from indexing.buckets import auto_num_buckets, bucket_of
from notellm.contracts import ContractError, embeddings_contract, mark_success, validate_table
from notellm.embedding_store import (  # the read side of the contract, shared with training's evaluation
    FORMAT_VERSION,
    KEY_COLUMNS,
    STORE_FILE,
    SUCCESS,
    Segment,
    StoreInfo,
    check_unchanged,
    fold,
    list_segments,
    live_segments,
    read_finalized,
    read_store_info,
    vectors_of,
)
from notellm.faults import fault_point
from notellm.files import atomic_path, atomic_write_json
from notellm.locking import temp_owner, temp_owner_gone

__all__ = ["FORMAT_VERSION", "KEY_COLUMNS", "RUN_FILE", "STORE_FILE", "SUCCESS", "Segment", "StoreInfo",
           "StoreSource", "clean_bucket", "create_or_check_store", "finalize", "fold", "full_run_floor",
           "list_segments", "live_segments", "open_store", "read_store_info", "segment_path", "segment_table",
           "start_or_resume_full_run", "vectors_of", "write_segment"]

RUN_FILE = "_run.json"


# ---------------------------------------------------------------- the manifest


def create_or_check_store(model_dir: Path, model_id: str, dim: int, num_buckets: int | str,
                          num_notes: int) -> StoreInfo:
    """Rank 0, before any worker starts: create ``_store.json`` or check the existing one against
    the model and the asked bucket count ("auto" keeps an existing store's count)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    if not (model_dir / STORE_FILE).exists():
        if any(model_dir.glob("shard-*.parquet")):
            read_store_info(model_dir)        # raises: old format
        count = auto_num_buckets(num_notes) if num_buckets == "auto" else int(num_buckets)
        info = StoreInfo(model_dir, model_id, dim, count)
        atomic_write_json(model_dir / STORE_FILE, info.as_json())
        return info
    info = read_store_info(model_dir)
    path = str(model_dir / STORE_FILE)
    if info.model_id != model_id:
        raise ContractError(path, "model_id", f"store of model {info.model_id}, the encoder is {model_id}")
    if info.dim != dim:
        raise ContractError(path, "dim", f"store of dimension {info.dim}, the encoder gives {dim}")
    if num_buckets != "auto" and int(num_buckets) != info.num_buckets:
        raise ContractError(path, "num_buckets",
                            f"the store has {info.num_buckets} buckets, {num_buckets} were asked; the count is "
                            f"fixed when a store is created: keep --num-buckets auto, or rebuild into a new "
                            f"--emb-root (or delete {model_dir}) with --no-incremental")
    return info


# ---------------------------------------------------------------- segments


def segment_path(info: StoreInfo, b: int, seq: int, kind: str) -> Path:
    return info.bucket_dir(b) / f"{seq:06d}-{kind}.parquet"


def clean_bucket(info: StoreInfo, b: int) -> None:
    """Remove segments older than the latest base (a kill between a compaction's two steps leaves
    them) and temporary files of dead writers. Only the bucket's owner calls this."""
    segments = list_segments(info, b)
    live = live_segments(segments)
    for s in segments[:len(segments) - len(live)]:
        s.path.unlink(missing_ok=True)
    d = info.bucket_dir(b)
    if d.is_dir():
        for name in os.listdir(d):
            if name.startswith(".") and temp_owner(name) and temp_owner_gone(d / name):
                (d / name).unlink(missing_ok=True)


def segment_table(note_ids: Sequence[str] | pa.Array, vectors: np.ndarray, model_id: str,
                  fingerprints: Sequence[str] | pa.Array, deleted: np.ndarray | None = None) -> pa.Table:
    """Rows of a segment, sorted by note_id (tombstones: ``deleted`` true, zero vector, empty fingerprint)."""
    n, dim = vectors.shape
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    t = pa.Table.from_arrays(
        [pa.array(note_ids, pa.string()), pa.FixedSizeListArray.from_arrays(flat, dim),
         pa.array(np.full(n, model_id, dtype=object), pa.string()), pa.array(fingerprints, pa.string()),
         pa.array(np.zeros(n, bool) if deleted is None else deleted)],
        schema=embeddings_contract(dim).arrow_schema)
    return t.take(pc.sort_indices(t, [("note_id", "ascending")])) if n > 1 else t


def write_segment(info: StoreInfo, b: int, seq: int, kind: str, table: pa.Table) -> int:
    """Write one segment atomically; returns its size in bytes."""
    path = segment_path(info, b, seq, kind)
    table = validate_table(table, embeddings_contract(info.dim), str(path))
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
        fault_point("embed", "segment_temp_written")
    fault_point("embed", "segment_written")
    return path.stat().st_size


# ---------------------------------------------------------------- run state and completion


def start_or_resume_full_run(info: StoreInfo) -> int:
    """Full mode: the seq from which a base counts as written by this run. A crashed full run is
    resumed (its ``_run.json`` kept); otherwise the floor is one past every existing segment."""
    path = info.model_dir / RUN_FILE
    try:
        state = json.loads(path.read_text())
        if state.get("mode") == "full" and isinstance(state.get("min_seq"), int):
            return state["min_seq"]
    except (FileNotFoundError, json.JSONDecodeError):
        pass
    floor = 0
    for b in range(info.num_buckets):
        segments = list_segments(info, b)
        if segments:
            floor = max(floor, segments[-1].seq + 1)
    atomic_write_json(path, {"mode": "full", "min_seq": floor}, indent=None)
    return floor


def full_run_floor(info: StoreInfo) -> int | None:
    try:
        return json.loads((info.model_dir / RUN_FILE).read_text()).get("min_seq")
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def finalize(info: StoreInfo, payload: dict) -> dict:
    """Mark the store complete: ``payload`` must say every bucket matched (``buckets_verified`` ==
    num_buckets) and reconcile (notes in == vectors stored). Clears the run state, then writes
    ``_stats.json`` and ``_SUCCESS`` (last)."""
    where = str(info.model_dir)
    if payload.get("buckets_verified") != info.num_buckets:
        raise ContractError(where, None, f"{payload.get('buckets_verified')} of {info.num_buckets} buckets "
                                         "verified against the notes; rerun the embed step")
    if payload.get("notes") != payload.get("vectors"):
        raise ContractError(where, None, f"{payload.get('notes')} notes in, {payload.get('vectors')} vectors "
                                         "stored: the store does not reconcile")
    fault_point("embed", "before_finalize")
    (info.model_dir / RUN_FILE).unlink(missing_ok=True)
    payload = {**payload, "model_id": info.model_id, "num_buckets": info.num_buckets, "dim": info.dim,
               "hash": info.hash, "format_version": FORMAT_VERSION, "reconciles": True}
    mark_success(info.model_dir, payload)
    return payload


# ---------------------------------------------------------------- reading the finalised store


class StoreSource:
    """A finalised store as an :class:`indexing.source.VectorSource`: batches in canonical order
    (bucket 0..B-1, note_id ascending within a bucket), memory about one bucket."""

    def __init__(self, info: StoreInfo, stats_bytes: bytes):
        self.info = info
        self.num_vectors: int = int(json.loads(stats_bytes)["vectors"])
        self.dim: int = info.dim
        self.model_id: str = info.model_id
        self.num_buckets: int = info.num_buckets
        self._stats_bytes = stats_bytes

    def _bucket(self, b: int) -> pa.Table:
        return fold(self.info, live_segments(list_segments(self.info, b)), vectors=True)

    def _check_unchanged(self) -> None:
        check_unchanged(self.info, self._stats_bytes)

    def batches(self, rows: int = 65_536) -> Iterator[tuple[pa.Array, np.ndarray]]:
        carry: pa.Table | None = None        # rows of earlier buckets not yet handed out (< rows)
        seen = 0
        for b in range(self.num_buckets):
            t = self._bucket(b)
            seen += t.num_rows
            if carry is not None and carry.num_rows:
                t = pa.concat_tables([carry, t])
            t = t.combine_chunks()            # once per bucket; the slices below are zero-copy
            start = 0
            while t.num_rows - start >= rows:
                head = t.slice(start, rows)
                yield head.column("note_id").combine_chunks(), vectors_of(head)
                start += rows
            carry = t.slice(start)
        if carry is not None and carry.num_rows:
            yield carry.column("note_id").combine_chunks(), vectors_of(carry)
        self._check_unchanged()
        if seen != self.num_vectors:
            raise ContractError(str(self.info.model_dir), None, f"{seen} vectors read, _stats.json says "
                                                                f"{self.num_vectors}: segments changed or lost")

    def take(self, note_ids: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """Vectors of the ids that exist, in input order (missing ones left out); reads only their buckets."""
        ids = pa.array(list(note_ids), pa.string())
        found_pos = np.full(len(ids), -1, dtype=np.int64)
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        if len(ids):
            buckets = bucket_of(ids, self.num_buckets)
            for b in np.unique(buckets):
                rows = np.nonzero(buckets == b)[0]
                t = self._bucket(int(b))
                pos = pc.index_in(ids.take(pa.array(rows)), value_set=t.column("note_id")).to_numpy(
                    zero_copy_only=False)
                hit = ~np.isnan(pos.astype(float))
                if hit.any():
                    out[rows[hit]] = vectors_of(t.take(pa.array(pos[hit].astype(np.int64))))
                    found_pos[rows[hit]] = 1
        self._check_unchanged()
        keep = np.nonzero(found_pos >= 0)[0]
        return [ids[int(i)].as_py() for i in keep], out[keep]


def open_store(emb_root: str | os.PathLike, model_id: str, dim: int | None = None) -> StoreSource:
    """The finalised store of ``model_id``; ContractError when it is not finalised or does not match
    (:func:`notellm.embedding_store.read_finalized`)."""
    return StoreSource(*read_finalized(emb_root, model_id, dim))
