"""Consumer API: open a published index snapshot and query it.

::

    from indexing.snapshot import Snapshot
    snap = Snapshot.open("/data/index")            # follows <root>/snapshots/CURRENT, verifies checksums
    snap.neighbors("note-42", k=10)                # [(note_id, score), ...] without note-42 itself
    snap.neighbors_batch(["note-42", "n-7"], 10)   # one FAISS search for the whole batch
    ids, scores = snap.search(query_vectors, k=10) # note ids (None where fewer than k) and cosine scores
    snap.lookup(["note-42", "nope"])               # int64 faiss ids, -1 where absent
    snap.vector("note-42"); snap.info(); snap.close()

A reader only follows ``CURRENT`` (or a name it is given), checks the manifest
against the contract, verifies the size and sha256 of every file the manifest
lists (one streaming pass per file, constant memory), then loads the index
with ``faiss.read_index`` and the ids with the IDS contract. Nothing is
unpickled. Any mismatch raises :class:`SnapshotError` naming the file.

Memory at scale: the index is memory-mapped where FAISS can map it
(``mmap="auto"`` follows the manifest's ``"mmap"`` field), so opening does not
read the vectors; the note ids are three memory-mapped arrays (sorted fixed-width
ids, their faiss ids and the inverse, :mod:`indexing.note_ids`) searched with
``np.searchsorted``: no per-id Python objects, and nothing read at open beyond
headers. docs/operations.md lists what stays in RAM per index type.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Sequence

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from indexing.build import apply_search_params, normalize
from indexing.note_ids import LOOKUP_FILES, DuplicateNoteIds, NoteIdIndex, fixed_width  # noqa: F401 (re-exported)
from notellm.contracts import IDS, ContractError, read_table, validate_manifest

log = logging.getLogger(__name__)

SNAPSHOTS = "snapshots"
CURRENT = "CURRENT"
MANIFEST = "manifest.json"
INDEX_FILE = "index.faiss"
IDS_FILE = "ids.parquet"

# Index types whose files FAISS 1.15 reads memory-mapped (tests/indexing/test_snapshot.py checks each
# in /proc/self/maps). IO_FLAG_MMAP_IFC, not IO_FLAG_MMAP: the latter only maps IVF inverted lists and
# silently reads flat and HNSW storage into RAM; MMAP_IFC maps flat codes, HNSW storage and IVF lists.
MMAP_TYPES = ("flat", "ivf", "hnsw")
MMAP_FLAGS = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY
VERIFY_CHUNK = 8 << 20


class SnapshotError(RuntimeError):
    """A snapshot cannot be used; the message names the file and the problem."""


class UnknownNotes(KeyError):
    """Note ids not in the snapshot: ``.missing`` (also ``args[1]``) lists them all; the
    message (``str``) lists the first 20, so a service can return it as a 404 body."""

    def __init__(self, message: str, missing: list):
        super().__init__(message, missing)
        self.missing = missing

    def __str__(self) -> str:
        return self.args[0]


def snapshots_dir(root: str | os.PathLike) -> Path:
    return Path(root) / SNAPSHOTS


def check_name(name: str) -> str:
    if not name or "/" in name or name.startswith(".") or name == CURRENT:
        raise SnapshotError(f"invalid snapshot name {name!r}")
    return name


def current_name(root: str | os.PathLike) -> str | None:
    path = snapshots_dir(root) / CURRENT
    if not path.exists():
        return None
    return check_name(path.read_text().strip())


def read_manifest(snap_dir: Path) -> dict:
    path = snap_dir / MANIFEST
    if not path.exists():
        raise SnapshotError(f"{path}: missing (not a complete snapshot)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SnapshotError(f"{path}: not valid JSON: {exc}") from exc
    try:
        return validate_manifest(manifest, str(path))
    except ContractError as exc:
        raise SnapshotError(str(exc)) from exc


def stream_sha256(path: Path, chunk: int = VERIFY_CHUNK) -> tuple[str, int]:
    """(sha256, bytes read) in one pass through a reused buffer: constant memory whatever the
    file size, and hashlib drops the GIL per chunk, so request threads keep running while a
    watcher verifies a 10^7-vector index in the background."""
    digest, total = hashlib.sha256(), 0
    buf = bytearray(chunk)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            digest.update(view[:n])
            total += n
    return digest.hexdigest(), total


def verify_files(snap_dir: Path, manifest: dict, checksums: bool = True) -> None:
    """Sizes always; sha256 too when ``checksums`` (reads every byte once)."""
    for required in (INDEX_FILE, IDS_FILE):
        if required not in manifest["files"]:
            raise SnapshotError(f"{snap_dir / MANIFEST}: files lists no {required}")
    for name, meta in manifest["files"].items():
        path = snap_dir / name
        if not path.is_file():
            raise SnapshotError(f"{path}: listed in the manifest but missing")
        size = path.stat().st_size
        if size != meta["bytes"]:
            raise SnapshotError(f"{path}: size {size} bytes, manifest says {meta['bytes']} (truncated or replaced)")
        if checksums:
            digest, read = stream_sha256(path)
            if read != meta["bytes"]:
                raise SnapshotError(f"{path}: read {read} bytes, manifest says {meta['bytes']} (changed while "
                                    "being verified)")
            if digest != meta["sha256"]:
                raise SnapshotError(f"{path}: sha256 {digest} does not match the manifest's {meta['sha256']} "
                                    "(corrupted)")


def read_index_file(path: Path, mmap: bool) -> faiss.Index:
    """``faiss.read_index``, memory-mapped read-only when ``mmap``; SnapshotError naming the file."""
    try:
        return faiss.read_index(str(path), MMAP_FLAGS) if mmap else faiss.read_index(str(path))
    except RuntimeError as exc:
        how = "memory-mapped" if mmap else "it"
        raise SnapshotError(f"{path}: FAISS cannot read {how}: {str(exc).splitlines()[0]}") from exc


def _load_index(path: Path, mmap: bool | str, manifest: dict) -> tuple[faiss.Index, bool]:
    """(index, mapped). ``"auto"`` maps when the manifest says so (or, in manifests older than the
    field, when the type is one FAISS maps) and falls back to a normal read if mapping fails;
    ``True`` insists on mapping."""
    if mmap not in ("auto", True, False):
        raise ValueError(f"mmap must be 'auto', True or False, got {mmap!r}")
    want = mmap if mmap != "auto" else manifest.get("mmap", manifest["index"].get("type") in MMAP_TYPES)
    if want:
        try:
            return read_index_file(path, mmap=True), True
        except SnapshotError as exc:
            if mmap is True:
                raise
            log.warning("%s; reading it into memory instead", exc)
    return read_index_file(path, mmap=False), False


def _load_ids(snap_dir: Path, manifest: dict) -> NoteIdIndex:
    """The id lookup: memory-mapped arrays when the snapshot has them (checked against the ids'
    row count in the Parquet footer), else built from ids.parquet (older snapshots)."""
    path = snap_dir / IDS_FILE
    try:
        if all(name in manifest["files"] for name in LOOKUP_FILES):
            ids = NoteIdIndex.load(snap_dir)
            rows = pq.read_metadata(path).num_rows
            if len(ids) != rows:
                raise SnapshotError(f"{snap_dir / LOOKUP_FILES[0]}: {len(ids)} ids, {path} has {rows} rows")
            return ids
        table = read_table(path, IDS)
        if not np.array_equal(table.column("faiss_id").to_numpy(), np.arange(table.num_rows)):
            raise SnapshotError(f"{path}: faiss_id must be 0..n-1 in order")
        return NoteIdIndex.from_ids(table.column("note_id"), str(path))
    except (ContractError, DuplicateNoteIds, ValueError, OSError) as exc:
        raise SnapshotError(str(exc)) from exc


class Snapshot:
    """A loaded, verified snapshot. Queries are thread-safe; :meth:`close` drops the index."""

    def __init__(self, path: Path, manifest: dict, index: faiss.Index, ids: NoteIdIndex, mmap: bool = False):
        self.path = path
        self.name = path.name
        self.manifest = manifest
        self.mmap = mmap
        self._index = index
        self._ids = ids

    @classmethod
    def open(cls, root: str | os.PathLike, name: str | None = None, verify: bool = True,
             mmap: bool | str = "auto") -> "Snapshot":
        """Open ``name`` (default: the one CURRENT names). ``verify`` checks every sha256 (sizes are
        always checked); ``mmap``: "auto" (the manifest's ``mmap`` field), True or False."""
        root = Path(root)
        if name is None:
            name = current_name(root)
            if name is None:
                raise SnapshotError(f"{snapshots_dir(root) / CURRENT}: no snapshot has been published")
        snap_dir = snapshots_dir(root) / check_name(name)
        if not snap_dir.is_dir():
            raise SnapshotError(f"{snap_dir}: snapshot directory does not exist")
        manifest = read_manifest(snap_dir)
        verify_files(snap_dir, manifest, checksums=verify)
        index_path = snap_dir / INDEX_FILE
        index, mapped = _load_index(index_path, mmap, manifest)
        ids = _load_ids(snap_dir, manifest)
        if index.ntotal != len(ids) or index.ntotal != manifest["num_vectors"]:
            raise SnapshotError(f"{index_path}: ntotal {index.ntotal} vs {len(ids)} ids vs manifest "
                                f"num_vectors {manifest['num_vectors']}")
        if index.d != manifest["dim"]:
            raise SnapshotError(f"{index_path}: dimension {index.d} != manifest dim {manifest['dim']}")
        spec = manifest["index"]
        apply_search_params(index, spec)
        if spec.get("type") == "ivf":
            ivf = faiss.extract_index_ivf(faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2)
                                          else index)
            if ivf.direct_map.type == faiss.DirectMap.NoMap:
                # Snapshots built before the build wrote it: reconstruct (neighbors) needs it. A separate
                # array, so this works on a read-only mapped index too.
                ivf.make_direct_map()
        return cls(snap_dir, manifest, index, ids, mapped)

    # ------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Drop the FAISS index (and its mapping once no running query holds it). Idempotent."""
        self._index = None

    @property
    def closed(self) -> bool:
        return self._index is None

    def __enter__(self) -> "Snapshot":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def index(self) -> faiss.Index:
        """The FAISS index; SnapshotError once closed (each query takes it once, so a concurrent
        close never pulls it from under a running search)."""
        index = self._index
        if index is None:
            raise SnapshotError(f"snapshot {self.name} is closed")
        return index

    # ------------------------------------------------------------ ids
    @property
    def ids(self) -> pa.Array:
        """Note ids as an Arrow string array; row = faiss id."""
        return self._ids_arrow

    @functools.cached_property
    def _ids_arrow(self) -> pa.Array:
        return self._ids.ids

    @functools.cached_property
    def note_ids(self) -> list:
        """The ids as a Python list, for old callers only (10^7 str objects: keep it off hot paths)."""
        return self.ids.to_pylist()

    def info(self) -> dict:
        return self.manifest

    def __len__(self) -> int:
        return len(self._ids)

    def has(self, note_id: str) -> bool:
        return bool(self._ids.lookup([note_id])[0] >= 0)

    def lookup(self, note_ids: Sequence[str]) -> np.ndarray:
        """int64 faiss ids of ``note_ids``, -1 where absent."""
        return self._ids.lookup(note_ids)

    def _fids(self, note_ids: Sequence[str]) -> np.ndarray:
        fids = self._ids.lookup(note_ids)
        if (fids < 0).any():
            missing = [n for n, f in zip(note_ids, fids) if f < 0]
            raise UnknownNotes(f"notes not in snapshot {self.name}: {missing[:20]}"
                               + (f" and {len(missing) - 20} more" if len(missing) > 20 else ""), missing)
        return fids

    # ------------------------------------------------------------ queries
    def vector(self, note_id: str) -> np.ndarray:
        return self.index.reconstruct(int(self._fids([note_id])[0]))

    def search(self, vectors: np.ndarray, k: int) -> tuple[list, np.ndarray]:
        """Top-k notes per query vector (normalised here): (list of note-id lists, scores (q, k)).

        Where the index returns fewer than k results the ids are None and the scores -inf.
        """
        index = self.index
        q = normalize(np.atleast_2d(vectors))
        k = max(1, min(int(k), len(self)))
        scores, fids = index.search(q, k)
        return self._ids.names(fids), np.where(fids >= 0, scores, -np.inf)

    def neighbors(self, note_id: str, k: int = 10) -> list[tuple[str, float]]:
        """The k most similar other notes to ``note_id`` (the note itself is excluded)."""
        return self.neighbors_batch([note_id], k)[0]

    def neighbors_batch(self, note_ids: Sequence[str], k: int = 10) -> list[list[tuple[str, float]]]:
        """:meth:`neighbors` of every id in one FAISS search; UnknownNotes (a KeyError) lists the
        ids not in the snapshot before anything is searched."""
        index = self.index
        note_ids = list(note_ids)
        if not note_ids:
            return []
        fids = self._fids(note_ids)
        q = np.stack([index.reconstruct(int(f)) for f in fids])
        kk = max(1, min(int(k) + 1, len(self)))
        scores, found = index.search(q, kk)
        names = self._ids.names(found)
        return [[(n, float(s)) for f, s, n in zip(row_f, row_s, row_n) if f >= 0 and f != fid][:max(0, k)]
                for fid, row_f, row_s, row_n in zip(fids, found, scores, names)]
