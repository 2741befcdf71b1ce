"""Reading the embedding store: the read side of its contract (docs/data-contracts.md, "embeddings").

Indexing writes the store (``indexing/store.py``: segments, compaction, finalising) and reads it
through these functions; training's evaluation reads the approved model's vectors from it with
:func:`lookup` instead of embedding the test pool again. Read-only, no stage imported::

    <emb_root>/<model_id>/_store.json                 format_version 2, num_buckets, hash, dim, model_id
    <emb_root>/<model_id>/b00042/000000-base.parquet  complete rows of bucket 42 (embeddings contract v2)
    <emb_root>/<model_id>/b00042/000001-delta.parquet upserts + tombstones (deleted = true) since that base
    <emb_root>/<model_id>/_stats.json, _SUCCESS       written last, once every bucket matched the notes

A note lives in bucket ``FNV-1a-64(UTF-8 bytes of note_id) % num_buckets``; a bucket's state is its
latest base, then the later deltas in seq order (the last row per note_id wins, a tombstone deletes).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from notellm.contracts import STATS_FILE, SUCCESS_MARKER, ContractError, embeddings_contract, read_table

FORMAT_VERSION = 2
STORE_FILE = "_store.json"
SUCCESS = SUCCESS_MARKER
HASH_NAME = "fnv1a64-utf8"           # the bucket hash of the contract (indexing.buckets computes it vectorised)
FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
KEY_COLUMNS = ["note_id", "text_sha256", "model_id", "deleted"]
_SEGMENT = re.compile(r"^(\d{6})-(base|delta)\.parquet$")

log = logging.getLogger(__name__)


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


def read_finalized(emb_root: str | os.PathLike, model_id: str, dim: int | None = None) -> tuple[StoreInfo, bytes]:
    """The finalised store of ``model_id`` under ``emb_root``: its info and the bytes of its
    ``_stats.json`` (to check later that no run started meanwhile, :func:`check_unchanged`).
    ContractError when it is not finalised, is another model's or has another dimension."""
    model_dir = Path(emb_root) / model_id
    if not (model_dir / SUCCESS).exists():
        absent = "" if model_dir.is_dir() else "; no store of this model at all"
        raise ContractError(str(model_dir), None, f"embedding store not finalised (no _SUCCESS{absent}): run "
                                                  "`python -m indexing.cli embed` first, or it is being written")
    info = read_store_info(model_dir)
    if info.model_id != model_id:
        raise ContractError(str(model_dir / STORE_FILE), "model_id", f"store of {info.model_id}, asked {model_id}")
    if dim is not None and info.dim != dim:
        raise ContractError(str(model_dir / STORE_FILE), "dim", f"store of dimension {info.dim}, asked {dim}")
    try:
        raw = (model_dir / STATS_FILE).read_bytes()
        stats = json.loads(raw)
    except (FileNotFoundError, json.JSONDecodeError) as exc:
        raise ContractError(str(model_dir / STATS_FILE), None, f"unreadable: {exc}") from exc
    if not isinstance(stats.get("vectors"), int) or stats.get("num_buckets") != info.num_buckets:
        raise ContractError(str(model_dir / STATS_FILE), "vectors", "no vector count for this store's buckets")
    return info, raw


def check_unchanged(info: StoreInfo, stats_bytes: bytes) -> None:
    """ContractError when an embed run started since :func:`read_finalized` (it removes ``_SUCCESS``
    first and writes a new ``_stats.json`` last)."""
    d = info.model_dir
    stats = d / STATS_FILE
    if not (d / SUCCESS).exists() or not stats.exists() or stats.read_bytes() != stats_bytes:
        raise ContractError(str(d), None, "the store changed while it was read (an embed run started); "
                                          "open it again once that run has finished")


# ---------------------------------------------------------------- segments


@dataclasses.dataclass(frozen=True)
class Segment:
    seq: int
    kind: str        # "base" | "delta"
    path: Path

    @property
    def rows(self) -> int:
        return pq.read_metadata(self.path).num_rows


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


# ---------------------------------------------------------------- looking notes up


def bucket_of_id(note_id: str, num_buckets: int) -> int:
    """The bucket of one note id (the contract's FNV-1a-64; for a few ids: indexing.buckets.bucket_of
    computes the same over whole Arrow arrays)."""
    h = FNV_OFFSET
    for byte in note_id.encode("utf-8"):
        h = ((h ^ byte) * FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return h % num_buckets


@dataclasses.dataclass
class Found:
    """What :func:`lookup` found: ``vectors[i]`` belongs to ``ids[i]``; ``stale`` notes are stored
    with another text fingerprint (changed since the store was written), ``missing`` not at all."""

    ids: list[str]
    vectors: np.ndarray
    stale: int
    missing: int
    buckets_read: int


def lookup(emb_root: str | os.PathLike, model_id: str, note_ids: Sequence[str],
           fingerprints: Sequence[str] | None = None, dim: int | None = None) -> Found:
    """Stored vectors of ``note_ids`` in the finalised store of ``model_id``, reading only their
    buckets. A row counts only when its own ``model_id`` is ``model_id`` and, with ``fingerprints``
    (``notellm.prompts.note_fingerprint`` under the model's prompt config, one per id), its
    ``text_sha256`` is the note's current one. ContractError when the store is not finalised, is
    another model's, or an embed run started while it was read."""
    info, stats_bytes = read_finalized(emb_root, model_id, dim)
    wanted: dict[int, list[int]] = {}
    for i, nid in enumerate(note_ids):
        wanted.setdefault(bucket_of_id(nid, info.num_buckets), []).append(i)
    ids, parts, stale = [], [], 0
    for b, rows in sorted(wanted.items()):
        t = fold(info, live_segments(list_segments(info, b)), vectors=True)
        t = t.filter(pc.equal(t.column("model_id"), model_id))
        pos = pc.index_in(pa.array([note_ids[i] for i in rows], pa.string()), value_set=t.column("note_id"))
        hit = np.nonzero(pos.is_valid().to_numpy(zero_copy_only=False))[0]
        at = pos.filter(pos.is_valid()).to_numpy(zero_copy_only=False).astype(np.int64)
        if fingerprints is not None and len(hit):
            sha = t.column("text_sha256").take(pa.array(at)).to_pylist()
            fresh = np.array([sha[j] == fingerprints[rows[h]] for j, h in enumerate(hit)], dtype=bool)
            stale += int((~fresh).sum())
            hit, at = hit[fresh], at[fresh]
        if len(hit):
            ids.extend(note_ids[rows[h]] for h in hit)
            parts.append(vectors_of(t.take(pa.array(at))))
    check_unchanged(info, stats_bytes)
    vectors = np.concatenate(parts) if parts else np.zeros((0, info.dim), np.float32)
    return Found(ids, vectors, stale, len(note_ids) - len(ids) - stale, len(wanted))
