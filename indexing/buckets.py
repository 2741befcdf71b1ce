"""Which bucket a note lives in, and the notes one rank owns.

A note's bucket is ``FNV-1a-64(UTF-8 bytes of note_id) mod num_buckets``: a
pure function of the id, so inserting or deleting a note never moves another
(a row-position cut would shift every later shard). Bucket ``b`` belongs to
rank ``b % world_size``.

:func:`fnv1a64` hashes an Arrow string array straight from its offset and data
buffers with numpy (one vector operation per byte position, no Python loop per
id). :func:`read_rank_notes` streams the notes Parquet in record batches with
the four prompt columns, keeps only this rank's rows (as Arrow), fingerprints
them and sorts them by (bucket, note_id).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from notellm.contracts import NOTES, Contract, ContractError, validate_schema, validate_table
from notellm.embedding_store import FNV_OFFSET, FNV_PRIME, HASH_NAME  # noqa: F401 - the store contract's hash
from notellm.prompts import PromptConfig, note_fingerprint

NOTE_COLUMNS = ("note_id", "title", "content", "hashtags")
READ_BATCH_ROWS = 65_536
AUTO_ROWS_PER_BUCKET = 65_536
AUTO_MIN_BUCKETS, AUTO_MAX_BUCKETS = 16, 4096


def auto_num_buckets(num_notes: int) -> int:
    """Next power of two of ceil(n / 65,536), clamped to [16, 4096]."""
    want = max(1, math.ceil(num_notes / AUTO_ROWS_PER_BUCKET))
    return min(AUTO_MAX_BUCKETS, max(AUTO_MIN_BUCKETS, 1 << (want - 1).bit_length()))


def _offsets_and_data(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_large_string(arr.type):
        dtype = np.int64
    elif pa.types.is_string(arr.type):
        dtype = np.int32
    else:
        raise TypeError(f"expected a string array, got {arr.type}")
    if arr.null_count:
        raise ValueError(f"{arr.null_count} null note id(s)")
    _, offsets, data = arr.buffers()
    offs = np.frombuffer(offsets, dtype=dtype, count=len(arr) + 1, offset=arr.offset * np.dtype(dtype).itemsize)
    raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    return offs.astype(np.int64), raw


def fnv1a64(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """FNV-1a 64-bit of each string's UTF-8 bytes, as uint64 (vectorised over the Arrow buffers)."""
    if isinstance(ids, pa.ChunkedArray):
        parts = [fnv1a64(c) for c in ids.chunks]
        return np.concatenate(parts) if parts else np.zeros(0, np.uint64)
    offs, data = _offsets_and_data(ids)
    starts, lengths = offs[:-1], np.diff(offs)
    n = len(lengths)
    order = np.argsort(-lengths, kind="stable")           # longest first: active ids are a prefix
    starts_sorted, len_sorted = starts[order], lengths[order]
    h = np.full(n, FNV_OFFSET, dtype=np.uint64)
    prime = np.uint64(FNV_PRIME)
    neg = -len_sorted
    for j in range(int(len_sorted[0]) if n else 0):
        k = int(np.searchsorted(neg, -j, side="left"))   # ids longer than j bytes
        hk = h[:k]
        hk ^= data[starts_sorted[:k] + j].astype(np.uint64)
        hk *= prime                                       # uint64 arrays wrap mod 2^64
    out = np.empty(n, dtype=np.uint64)
    out[order] = h
    return out


def bucket_of(ids: pa.Array | pa.ChunkedArray, num_buckets: int) -> np.ndarray:
    """Bucket of each note id (int64 in [0, num_buckets))."""
    return (fnv1a64(ids) % np.uint64(num_buckets)).astype(np.int64)


def rank_buckets(num_buckets: int, rank: int, world_size: int) -> range:
    return range(rank, num_buckets, world_size)


# ---------------------------------------------------------------- this rank's notes


@dataclasses.dataclass
class RankNotes:
    """This rank's notes: ``table`` (note_id, title, content, hashtags, text_sha256, bucket) sorted by
    (bucket, note_id); ``rows_in`` counts every row of the input (all ranks see the same)."""

    table: pa.Table
    rows_in: int
    source: str

    def __post_init__(self):
        b = self.table.column("bucket").to_numpy() if self.table.num_rows else np.zeros(0, np.int64)
        self._buckets = b

    def bucket(self, b: int) -> pa.Table:
        lo, hi = np.searchsorted(self._buckets, [b, b + 1])
        return self.table.slice(int(lo), int(hi - lo))


def _batches(notes, source: str, columns: list[str]):
    """Record batches of the note columns from a Parquet file / folder or an in-memory table."""
    if isinstance(notes, pa.Table):
        validate_schema(notes.schema, _sub_contract(columns), source)
        yield from notes.select(columns).to_batches(READ_BATCH_ROWS)
        return
    import pyarrow.dataset as ds
    path = Path(notes)
    if not path.exists():
        raise ContractError(source, None, "does not exist (expected 'notes' data)")
    try:
        dataset = ds.dataset(str(path), format="parquet", partitioning="hive")
        validate_schema(dataset.schema, _sub_contract(columns), source)
        yield from dataset.to_batches(columns=columns, batch_size=READ_BATCH_ROWS)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ContractError(source, None, f"unreadable as Parquet: {exc}") from exc


def _sub_contract(columns) -> Contract:
    return Contract(NOTES.name, NOTES.version, pa.schema([NOTES.schema.field(c) for c in columns]))


def count_rows(notes) -> int:
    """Rows of the notes input from Parquet metadata (no data read)."""
    if isinstance(notes, pa.Table):
        return notes.num_rows
    import pyarrow.dataset as ds
    if not Path(notes).exists():
        raise ContractError(str(notes), None, "does not exist (expected 'notes' data)")
    try:
        return ds.dataset(str(notes), format="parquet", partitioning="hive").count_rows()
    except (pa.ArrowInvalid, OSError, FileNotFoundError) as exc:
        raise ContractError(str(notes), None, f"unreadable as Parquet: {exc}") from exc


def read_rank_notes(notes: str | os.PathLike | pa.Table, num_buckets: int, rank: int, world_size: int,
                    prompt_config: PromptConfig) -> RankNotes:
    """Stream ``notes`` (NOTES contract), keep this rank's buckets, fingerprint them, refuse duplicate ids."""
    source = "notes table" if isinstance(notes, pa.Table) else str(notes)
    columns = list(NOTE_COLUMNS)
    sub = _sub_contract(columns)
    kept, rows_in = [], 0
    for batch in _batches(notes, source, columns):
        rows_in += batch.num_rows
        table = validate_table(pa.Table.from_batches([batch]), sub, source)   # nulls refused, types cast
        buckets = bucket_of(table.column("note_id"), num_buckets)
        mine = np.nonzero(buckets % world_size == rank)[0]
        if not len(mine):
            continue
        table = table.take(pa.array(mine))
        rows = table.select(["title", "content", "hashtags"]).to_pylist()
        fps = pa.array([note_fingerprint(r, prompt_config) for r in rows], pa.string())
        kept.append(table.append_column("text_sha256", fps).append_column("bucket", pa.array(buckets[mine])))
    schema = sub.arrow_schema.append(pa.field("text_sha256", pa.string())).append(pa.field("bucket", pa.int64()))
    table = pa.concat_tables(kept).combine_chunks() if kept else schema.empty_table()
    if table.num_rows:
        table = table.take(pc.sort_indices(table, [("bucket", "ascending"), ("note_id", "ascending")]))
    _refuse_duplicates(table, source)
    return RankNotes(table, rows_in, source)


def _refuse_duplicates(table: pa.Table, source: str) -> None:
    """Duplicates share a bucket, so after the (bucket, note_id) sort they are neighbours."""
    if table.num_rows < 2:
        return
    ids = table.column("note_id").combine_chunks()
    same = pc.equal(ids.slice(1), ids.slice(0, len(ids) - 1))
    dup = pc.sum(same).as_py() or 0
    if dup:
        examples = sorted(set(pc.filter(ids.slice(1), same).to_pylist()))[:3]
        raise ContractError(source, "note_id", f"{dup} duplicate note id(s), e.g. {examples}")


def keys_digest(note_ids: list[str], fingerprints: list[str]) -> str:
    """sha256 over ``id NUL fingerprint NUL`` in order: what a bucket must hold."""
    h = hashlib.sha256()
    for nid, fp in zip(note_ids, fingerprints):
        h.update(nid.encode("utf-8") + b"\0" + fp.encode("ascii") + b"\0")
    return h.hexdigest()
