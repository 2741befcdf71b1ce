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
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from indexing.buckets import HASH_NAME, auto_num_buckets, bucket_of
from notellm.contracts import (
    STATS_FILE,
    SUCCESS_MARKER,
    ContractError,
    embeddings_contract,
    mark_success,
    read_table,
    validate_table,
)
from notellm.faults import fault_point
from notellm.files import atomic_path, atomic_write_json
from notellm.locking import temp_owner, temp_owner_gone

FORMAT_VERSION = 2
STORE_FILE = "_store.json"
RUN_FILE = "_run.json"
SUCCESS = SUCCESS_MARKER
KEY_COLUMNS = ["note_id", "text_sha256", "model_id", "deleted"]
_SEGMENT = re.compile(r"^(\d{6})-(base|delta)\.parquet$")


# ---------------------------------------------------------------- the manifest


@dataclasses.dataclass(frozen=True)
class StoreInfo:
    """What ``_store.json`` records about a store, plus where it is."""

    model_dir: Path
    model_id: str
    dim: int
    num_buckets: int
    hash: str = HASH_NAME

    def bucket_dir(self, b: int) -> Path:
        return self.model_dir / f"b{b:05d}"

    def as_json(self) -> dict:
        return {"format_version": FORMAT_VERSION, "num_buckets": self.num_buckets, "hash": self.hash,
                "dim": self.dim, "model_id": self.model_id}


def read_store_info(model_dir: str | os.PathLike) -> StoreInfo:
    """``_store.json`` of a store, validated; ContractError naming the file otherwise."""
    model_dir = Path(model_dir)
    path = model_dir / STORE_FILE
    if not path.exists():
        old = any(model_dir.glob("shard-*.parquet"))
        raise ContractError(str(path), None, "missing: " + ("an old-format store (shard-*.parquet); rebuild it with "
                                                            "`embed --no-incremental` into a new --emb-root"
                                                            if old else "no embedding store here (run embed)"))
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ContractError(str(path), None, f"not JSON: {exc}") from exc
    for key, tp in (("format_version", int), ("num_buckets", int), ("hash", str), ("dim", int), ("model_id", str)):
        if not isinstance(meta.get(key), tp) or isinstance(meta.get(key), bool):
            raise ContractError(str(path), key, f"expected {tp.__name__}, found {meta.get(key)!r}")
    if meta["format_version"] != FORMAT_VERSION:
        raise ContractError(str(path), "format_version", f"unsupported version {meta['format_version']} "
                                                         f"(this code reads {FORMAT_VERSION})")
    if meta["hash"] != HASH_NAME:
        raise ContractError(str(path), "hash", f"unknown bucket hash {meta['hash']!r} (expected {HASH_NAME!r})")
    return StoreInfo(model_dir, meta["model_id"], meta["dim"], meta["num_buckets"], meta["hash"])


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


@dataclasses.dataclass(frozen=True)
class Segment:
    seq: int
    kind: str        # "base" | "delta"
    path: Path

    @property
    def rows(self) -> int:
        return pq.read_metadata(self.path).num_rows


def segment_path(info: StoreInfo, b: int, seq: int, kind: str) -> Path:
    return info.bucket_dir(b) / f"{seq:06d}-{kind}.parquet"


def list_segments(info: StoreInfo, b: int) -> list[Segment]:
    """Every segment of bucket ``b`` in seq order (temporary files are not segments)."""
    d = info.bucket_dir(b)
    if not d.is_dir():
        return []
    out = [Segment(int(m.group(1)), m.group(2), d / name) for name in os.listdir(d) if (m := _SEGMENT.match(name))]
    return sorted(out, key=lambda s: s.seq)


def live_segments(segments: list[Segment]) -> list[Segment]:
    """The latest base and the deltas after it (deltas before any base are a bucket's whole log)."""
    bases = [i for i, s in enumerate(segments) if s.kind == "base"]
    return segments[bases[-1]:] if bases else segments


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


def fold(info: StoreInfo, segments: list[Segment], vectors: bool = False) -> pa.Table:
    """A bucket's state from its live segments: one row per stored note, sorted by note_id, tombstones
    applied. Columns note_id, text_sha256, model_id (+ vector with ``vectors``)."""
    cols = KEY_COLUMNS + (["vector"] if vectors else [])
    contract = embeddings_contract(info.dim)
    tables = [read_table(s.path, contract, columns=cols) for s in segments]
    out = cols[:3] + (["vector"] if vectors else [])
    if not tables:
        return contract.arrow_schema.empty_table().select(out)
    if len(tables) == 1 and segments[0].kind == "base":
        return tables[0].select(out)                      # a base is sorted and has no tombstones
    t = pa.concat_tables(tables).combine_chunks()
    t = t.append_column("_k", pa.array(np.arange(t.num_rows, dtype=np.int64)))
    t = t.take(pc.sort_indices(t, [("note_id", "ascending"), ("_k", "descending")]))
    ids = t.column("note_id").combine_chunks()
    first = np.ones(t.num_rows, dtype=bool)
    if t.num_rows > 1:
        first[1:] = ~pc.equal(ids.slice(1), ids.slice(0, len(ids) - 1)).to_numpy(zero_copy_only=False)
    keep = np.logical_and(first, ~t.column("deleted").to_numpy())
    return t.filter(pa.array(keep)).select(out)


def vectors_of(table: pa.Table) -> np.ndarray:
    """The fixed-size-list ``vector`` column as a float32 (n, d) array."""
    col = table.column("vector").combine_chunks()
    d = col.type.list_size
    return col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, d)


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

    def __init__(self, info: StoreInfo, stats: dict):
        self.info = info
        self.num_vectors: int = int(stats["vectors"])
        self.dim: int = info.dim
        self.model_id: str = info.model_id
        self.num_buckets: int = info.num_buckets
        self._stats_bytes = (info.model_dir / STATS_FILE).read_bytes()

    def _bucket(self, b: int) -> pa.Table:
        return fold(self.info, live_segments(list_segments(self.info, b)), vectors=True)

    def _check_unchanged(self) -> None:
        d = self.info.model_dir
        stats = d / STATS_FILE
        if not (d / SUCCESS).exists() or not stats.exists() or stats.read_bytes() != self._stats_bytes:
            raise ContractError(str(d), None, "the store changed while it was read (an embed run started); "
                                              "open it again once that run has finished")

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
    """The finalised store of ``model_id``; ContractError when it is not finalised or does not match."""
    model_dir = Path(emb_root) / model_id
    if not (model_dir / SUCCESS).exists():
        raise ContractError(str(model_dir), None, "embedding store not finalised (no _SUCCESS): run "
                                                  "`python -m indexing.cli embed` first, or it is being written")
    info = read_store_info(model_dir)
    if info.model_id != model_id:
        raise ContractError(str(model_dir / STORE_FILE), "model_id", f"store of {info.model_id}, asked {model_id}")
    if dim is not None and info.dim != dim:
        raise ContractError(str(model_dir / STORE_FILE), "dim", f"store of dimension {info.dim}, asked {dim}")
    try:
        stats = json.loads((model_dir / STATS_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError) as exc:
        raise ContractError(str(model_dir / STATS_FILE), None, f"unreadable: {exc}") from exc
    if not isinstance(stats.get("vectors"), int) or stats.get("num_buckets") != info.num_buckets:
        raise ContractError(str(model_dir / STATS_FILE), "vectors", "no vector count for this store's buckets")
    return StoreSource(info, stats)

