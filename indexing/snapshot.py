"""Consumer API: open a published index snapshot and query it.

::

    from indexing.snapshot import Snapshot
    snap = Snapshot.open("/data/index")            # follows <root>/snapshots/CURRENT, verifies checksums
    snap.neighbors("note-42", k=10)                # [(note_id, score), ...] without note-42 itself
    ids, scores = snap.search(query_vectors, k=10) # note ids (None where fewer than k) and cosine scores
    snap.vector("note-42"); snap.info()            # stored vector; the manifest

A reader only follows ``CURRENT`` (or a name it is given), checks the manifest
against the contract, verifies the size and sha256 of every file the manifest
lists, then loads the index with ``faiss.read_index`` and the ids with the IDS
contract. Nothing is unpickled. Any mismatch raises :class:`SnapshotError`
naming the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import faiss
import numpy as np

from indexing.build import apply_search_params, normalize
from notellm.contracts import IDS, ContractError, read_table, validate_manifest
from notellm.files import sha256_file

SNAPSHOTS = "snapshots"
CURRENT = "CURRENT"
MANIFEST = "manifest.json"
INDEX_FILE = "index.faiss"
IDS_FILE = "ids.parquet"


class SnapshotError(RuntimeError):
    """A snapshot cannot be used; the message names the file and the problem."""


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


def verify_files(snap_dir: Path, manifest: dict, checksums: bool = True) -> None:
    """Sizes always; sha256 too when ``checksums`` (reads every byte)."""
    for name, meta in manifest["files"].items():
        path = snap_dir / name
        if not path.is_file():
            raise SnapshotError(f"{path}: listed in the manifest but missing")
        size = path.stat().st_size
        if size != meta["bytes"]:
            raise SnapshotError(f"{path}: size {size} bytes, manifest says {meta['bytes']} (truncated or replaced)")
        if checksums:
            digest = sha256_file(path)
            if digest != meta["sha256"]:
                raise SnapshotError(f"{path}: sha256 {digest} does not match the manifest's {meta['sha256']} "
                                    "(corrupted)")
    for required in (INDEX_FILE, IDS_FILE):
        if required not in manifest["files"]:
            raise SnapshotError(f"{snap_dir / MANIFEST}: files lists no {required}")


class Snapshot:
    """A loaded, verified snapshot."""

    def __init__(self, path: Path, manifest: dict, index: faiss.Index, note_ids: list):
        self.path = path
        self.name = path.name
        self.manifest = manifest
        self.index = index
        self.note_ids = note_ids
        self._faiss_id = {nid: i for i, nid in enumerate(note_ids)}

    @classmethod
    def open(cls, root: str | os.PathLike, name: str | None = None, verify: bool = True) -> "Snapshot":
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
        try:
            index = faiss.read_index(str(index_path))
        except RuntimeError as exc:
            raise SnapshotError(f"{index_path}: FAISS cannot read it: {str(exc).splitlines()[0]}") from exc
        try:
            ids = read_table(snap_dir / IDS_FILE, IDS)
        except ContractError as exc:
            raise SnapshotError(str(exc)) from exc
        faiss_ids = ids.column("faiss_id").to_numpy()
        if not np.array_equal(faiss_ids, np.arange(len(faiss_ids))):
            raise SnapshotError(f"{snap_dir / IDS_FILE}: faiss_id must be 0..n-1 in order")
        if index.ntotal != ids.num_rows or index.ntotal != manifest["num_vectors"]:
            raise SnapshotError(f"{index_path}: ntotal {index.ntotal} vs {ids.num_rows} ids rows vs manifest "
                                f"num_vectors {manifest['num_vectors']}")
        if index.d != manifest["dim"]:
            raise SnapshotError(f"{index_path}: dimension {index.d} != manifest dim {manifest['dim']}")
        spec = manifest["index"]
        apply_search_params(index, spec.get("type"), spec.get("params", {}))
        if spec.get("type") == "ivf":
            # The IVF direct map (id -> list position) is not serialised; reconstruct needs it.
            faiss.extract_index_ivf(faiss.downcast_index(index.index)).make_direct_map()
        return cls(snap_dir, manifest, index, ids.column("note_id").to_pylist())

    # ------------------------------------------------------------ queries
    def info(self) -> dict:
        return self.manifest

    def __len__(self) -> int:
        return len(self.note_ids)

    def has(self, note_id: str) -> bool:
        return note_id in self._faiss_id

    def _fid(self, note_id: str) -> int:
        try:
            return self._faiss_id[note_id]
        except KeyError:
            raise KeyError(f"note {note_id!r} is not in snapshot {self.name}") from None

    def vector(self, note_id: str) -> np.ndarray:
        return self.index.reconstruct(self._fid(note_id))

    def search(self, vectors: np.ndarray, k: int) -> tuple[list, np.ndarray]:
        """Top-k notes per query vector (normalised here): (list of note-id lists, scores (q, k)).

        Where the index returns fewer than k results the ids are None and the scores -inf.
        """
        q = normalize(np.atleast_2d(vectors))
        k = max(1, min(int(k), len(self.note_ids)))
        scores, fids = self.index.search(q, k)
        ids = [[self.note_ids[f] if f >= 0 else None for f in row] for row in fids]
        return ids, np.where(fids >= 0, scores, -np.inf)

    def neighbors(self, note_id: str, k: int = 10) -> list[tuple[str, float]]:
        """The k most similar other notes to ``note_id`` (the note itself is excluded)."""
        fid = self._fid(note_id)
        q = self.vector(note_id)[None, :]
        kk = max(1, min(int(k) + 1, len(self.note_ids)))
        scores, fids = self.index.search(q, kk)
        out = [(self.note_ids[f], float(s)) for f, s in zip(fids[0], scores[0]) if f >= 0 and f != fid]
        return out[:k]
