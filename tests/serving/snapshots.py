"""Small published snapshots for the service tests, made the way the nightly job makes
them (indexing.build + indexing.publish), and the two ways a bad one reaches CURRENT."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from indexing.build import IndexConfig, build_index
from indexing.publish import content_digest, publish
from indexing.snapshot import CURRENT, snapshots_dir
from tests.support.notes import clustered_vectors

MODEL = {"model_id": "abcdef0123456789", "path": "/models/x", "template_version": "v1-paper"}
N, DIM = 200, 16


def note_ids(n: int = N) -> list[str]:
    """The same ids in every snapshot (a retrain changes vectors, not notes), so queries stay valid across swaps."""
    return [f"note-{i:04d}" for i in range(n)]


def vectors(seed: int, n: int = N, d: int = DIM):
    return clustered_vectors(n, d, clusters=8, seed=seed)


def publish_snapshot(root: Path, seed: int, date: str, index_type: str = "flat", model: dict = MODEL,
                     ids: list[str] | None = None, x=None) -> str:
    """Publish and make CURRENT; returns the snapshot name."""
    ids = ids or note_ids()
    x = vectors(seed) if x is None else x
    built = build_index((ids, x), IndexConfig(index_key=index_type))
    res = publish(root, built, date=date, model=model, content_sha256=content_digest(ids, x),
                  metrics={"seed": seed})
    return res["snapshot"]


def point_current(root: Path, name: str) -> None:
    """Swap CURRENT atomically, as publish does (temporary file + rename)."""
    snaps = snapshots_dir(root)
    tmp = snaps / f".CURRENT.tmp-{os.getpid()}"
    tmp.write_text(name + "\n")
    os.replace(tmp, snaps / CURRENT)


def publish_corrupted(root: Path, good: str, name: str) -> str:
    """A copy of snapshot ``good`` under ``name`` with one flipped byte in index.faiss, made CURRENT
    (bit rot or a broken writer that bypassed publish's own validation)."""
    snaps = snapshots_dir(root)
    shutil.copytree(snaps / good, snaps / name)
    index = snaps / name / "index.faiss"
    data = bytearray(index.read_bytes())
    data[len(data) // 2] ^= 0xFF
    index.write_bytes(bytes(data))
    point_current(root, name)
    return name
