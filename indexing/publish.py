"""Atomic, verifiable, reversible publishing of index snapshots.

Layout::

    <root>/snapshots/<YYYY-MM-DD>-<model id[:8]>/   index.faiss, ids.parquet, manifest.json
    <root>/snapshots/CURRENT                        the name of the live snapshot directory
    <root>/snapshots/.<id>.tmp-<host>-<pid>-<nonce>/ a snapshot being written (never read)
    <root>/snapshots/.lock                          the publishers' lock (notellm.locking)

Steps of :func:`publish` (each named step calls ``hook(step)``; the default
hook is :func:`notellm.faults.fault_point`, where the fault tests SIGKILL it):

0. take the publishers' lock (``snapshots/.lock``; another publisher waits) and
   compare CURRENT with ``expected_current``, the snapshot the caller gated
   against: when another publisher moved it meanwhile, :class:`Conflict`
   (exit 5) and nothing is written -> ``locked``
1. write index, ids and manifest into the temp directory, fsync each file
   -> ``files_written``
2. validate the temporary copy: reopen it as a reader would (checksums,
   ``faiss.read_index``, ntotal == ids rows) -> ``validated``
3. ``before_rename``; rename the directory to its final name, fsync
   ``snapshots/`` -> ``after_rename``
4. write ``.CURRENT.tmp-<pid>`` + fsync -> ``pointer_temp_written``;
   ``os.replace`` it onto ``CURRENT``, fsync ``snapshots/`` -> ``pointer_swapped``
5. retention (keep the newest N, never the one CURRENT names, remove
   temporary directories whose owner is gone) -> ``retention_done``

CURRENT only moves forward: a snapshot of an earlier data date than the live
one (or, on the same date, created earlier) is refused with :class:`Conflict`;
only :func:`rollback` moves it back, explicitly.

Readers only follow CURRENT, which always names a complete, renamed
directory, so a crash at any step leaves them on the old or the new
snapshot, never a mix.

Idempotency: snapshot directories are immutable once renamed into place.
Publishing the same date + model again with the same content (same ids and
vectors digest and same index spec) is a no-op that (re)points CURRENT at it.
With different content (e.g. notes changed within the day) it is published
as the next revision ``<date>-<model>.2``, ``.3``, ... so no directory a
reader might hold open is ever rewritten.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Callable

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from indexing.build import BuiltIndex
from indexing.config import RetentionConfig
from indexing.note_ids import NoteIdIndex
from indexing.snapshot import (
    CURRENT,
    IDS_FILE,
    INDEX_FILE,
    MANIFEST,
    MMAP_TYPES,
    Snapshot,
    SnapshotError,
    check_name,
    current_name,
    read_index_file,
    read_manifest,
    snapshots_dir,
)
from indexing.source import ContentDigest
from notellm.cli import Conflict
from notellm.config import defaults
from notellm.contracts import IDS, MANIFEST_FORMAT_VERSION, validate_manifest, write_table
from notellm.faults import fault_point
from notellm.files import fsync_dir, fsync_file, sha256_file, write_bytes_durable
from notellm.locking import DEFAULT_LOCK_TIMEOUT_S, locked, temp_name, temp_owner, temp_owner_gone

log = logging.getLogger(__name__)

STEPS = ("locked", "files_written", "validated", "before_rename", "after_rename", "pointer_temp_written",
         "pointer_swapped", "retention_done")
DEFAULT_KEEP = defaults(RetentionConfig)["keep"]

Hook = Callable[[str], None]


def snapshot_id(date: dt.date | str, model_id: str) -> str:
    day = date.isoformat() if hasattr(date, "isoformat") else str(date)
    dt.date.fromisoformat(day)  # refuse anything but YYYY-MM-DD
    return f"{day}-{model_id[:8]}"


def content_digest(note_ids, vectors: np.ndarray) -> str:
    """:class:`indexing.source.ContentDigest` of vectors in memory (the build hashes its stream)."""
    digest = ContentDigest()
    digest.update(pa.array(list(note_ids), pa.string()), vectors)
    return digest.hexdigest()


def _fault_point(step: str) -> None:
    fault_point("publish", step)


UNCHECKED = object()   # publish(expected_current=UNCHECKED): no compare-and-swap (tests, first runs)


def publish(root: str | os.PathLike, built: BuiltIndex, *, date, model: dict, metrics: dict,
            content_sha256: str | None = None, data_window: dict | None = None, keep: int = DEFAULT_KEEP,
            hook: Hook = _fault_point, expected_current: str | None | object = UNCHECKED,
            lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> dict:
    """Publish ``built`` as a new snapshot and make it CURRENT.

    ``model`` needs ``model_id``, ``path`` and ``template_version``.
    ``expected_current`` is the snapshot name (None: none yet) the caller read
    before gating; when CURRENT names another by the time the lock is held, the
    gate compared against a stale baseline and :class:`Conflict` is raised.
    Returns ``{"snapshot": name, "path": ..., "manifest_sha256": ..., "published": bool}``
    (``published`` False when an identical snapshot already existed).
    """
    root = Path(root)
    content_sha256 = content_sha256 or built.content_sha256
    snaps = snapshots_dir(root)
    snaps.mkdir(parents=True, exist_ok=True)
    with locked(snaps, f"publish {snapshot_id(date, model['model_id'])}", lock_timeout_s):
        live = readable_current(root)
        if expected_current is not UNCHECKED and live != expected_current:
            raise Conflict(f"{snaps / CURRENT}: names {live} but this publisher gated against "
                           f"{expected_current}; another publisher moved it. Nothing was published; "
                           "rerun to gate against the new live snapshot",
                           {"current": live, "expected": expected_current})
        hook("locked")
        return _publish_locked(root, snaps, live, built, date, model, metrics, content_sha256, data_window,
                               keep, hook)


def _publish_locked(root, snaps, live, built, date, model, metrics, content_sha256, data_window, keep, hook):
    name, identical = _revision(snaps, snapshot_id(date, model["model_id"]), content_sha256, built.description)
    if identical:
        Snapshot.open(root, name, verify=True)  # only point at what verifies
        if name != live:
            _require_forward(snaps, live, name, _order_key(snaps, name))
            _swap_pointer(snaps, name, hook)
        retention(root, keep)   # also removes what a publisher killed before this one left
        log.info("snapshot %s already published with identical content; CURRENT -> %s", name, name)
        return _result(snaps, name, published=False)
    created_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    _require_forward(snaps, live, name, (name[:10], created_at))

    tmp = snaps / temp_name(name)
    tmp.mkdir()
    try:
        manifest = _write_files(tmp, built, _manifest(name, built, model, metrics, data_window, content_sha256,
                                                      created_at))
        hook("files_written")

        _validate_dir(tmp, manifest)
        hook("validated")

        hook("before_rename")
        os.rename(tmp, snaps / name)   # same filesystem: atomic; the final name never holds a partial snapshot
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)   # a killed process leaves it to retention instead
        raise
    fsync_dir(snaps)
    hook("after_rename")

    _swap_pointer(snaps, name, hook)

    retention(root, keep)
    hook("retention_done")
    return _result(snaps, name, published=True)


def readable_current(root: str | os.PathLike) -> str | None:
    """The name CURRENT holds, or None when there is none or it is not a snapshot name
    (a damaged pointer must not stop the publish that replaces it)."""
    try:
        return current_name(root)
    except SnapshotError as exc:
        log.warning("ignoring the unreadable pointer: %s", exc)
        return None


def _result(snaps: Path, name: str, published: bool) -> dict:
    return {"snapshot": name, "path": str(snaps / name), "published": published,
            "manifest_sha256": sha256_file(snaps / name / MANIFEST)}


def _revision(snaps: Path, base_id: str, content_sha256: str, index_spec: dict) -> tuple[str, bool]:
    """(name, identical): the existing revision of this date + model with the same
    content and index spec (identical=True), else the first free revision name."""
    name, revision = base_id, 1
    while (snaps / name).exists():
        try:
            existing = read_manifest(snaps / name)
        except SnapshotError:
            existing = None
        if existing and existing.get("content_sha256") == content_sha256 and existing["index"] == index_spec:
            return name, True
        revision += 1
        name = f"{base_id}.{revision}"
    return name, False


def _order_key(snaps: Path, name: str | None) -> tuple[str, str]:
    """(data date, created_at): the order CURRENT moves forward in. A snapshot whose
    manifest cannot be read sorts first (it can never block a valid one)."""
    if name is None:
        return ("", "")
    try:
        return (name[:10], str(read_manifest(snaps / name)["created_at"]))
    except (SnapshotError, KeyError):
        return ("", "")


def _require_forward(snaps: Path, live: str | None, name: str, key: tuple[str, str]) -> None:
    live_key = _order_key(snaps, live)
    if key < live_key:
        raise Conflict(f"{snaps / CURRENT}: {name} (data date {key[0]}, created {key[1]}) is older than the live "
                       f"{live} (data date {live_key[0]}, created {live_key[1]}); CURRENT only moves forward. "
                       f"Use `rollback --to {name}` to go back on purpose", {"current": live, "refused": name})


def _manifest(name: str, built: BuiltIndex, model: dict, metrics: dict, data_window: dict | None,
              content_sha256: str, created_at: str) -> dict:
    """The manifest without its ``files`` (filled in once they are written)."""
    return {
        "format_version": MANIFEST_FORMAT_VERSION,
        "snapshot_id": name,
        "created_at": created_at,
        "files": {},
        "num_vectors": int(built.index.ntotal),
        "dim": int(built.index.d),
        "index": built.description,
        # Consumers map the index file instead of reading it (Snapshot.open(mmap="auto")); the
        # validation step below reads it the same way, so a snapshot never promises a mapping that fails.
        "mmap": built.index_type in MMAP_TYPES,
        "model": dict(model),
        "data_window": dict(data_window or {"start": None, "end": None}),
        "metrics": dict(metrics),
        "content_sha256": content_sha256,
        "build": {"seconds": round(built.build_seconds, 3), "on_gpu": built.on_gpu, "faiss": faiss.__version__},
    }


def _write_files(tmp: Path, built: BuiltIndex, manifest: dict) -> dict:
    """Index, ids and manifest (with each file's sha256 and size) into ``tmp``, all fsynced."""
    faiss.write_index(built.index, str(tmp / INDEX_FILE))
    write_table(built.ids, tmp / IDS_FILE, IDS)
    lookup = NoteIdIndex.from_ids(built.note_ids, f"{tmp / IDS_FILE}").save(tmp)
    for fname in (INDEX_FILE, IDS_FILE, *lookup):
        fsync_file(tmp / fname)
        manifest["files"][fname] = {"sha256": sha256_file(tmp / fname), "bytes": (tmp / fname).stat().st_size}
    validate_manifest(manifest, str(tmp / MANIFEST))
    write_bytes_durable(tmp / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())
    fsync_dir(tmp)
    return manifest


def _validate_dir(snap_dir: Path, manifest: dict) -> None:
    """Reopen the written files as a reader would before anything points at them."""
    from indexing.snapshot import verify_files
    verify_files(snap_dir, read_manifest(snap_dir))
    index = read_index_file(snap_dir / INDEX_FILE, mmap=manifest.get("mmap", False))
    rows = pq.read_metadata(snap_dir / IDS_FILE).num_rows
    if index.ntotal != rows or index.ntotal != manifest["num_vectors"]:
        raise SnapshotError(f"{snap_dir}: written index has {index.ntotal} vectors, ids {rows}, "
                            f"manifest {manifest['num_vectors']}")
    # The mapped lookup must name the same note as ids.parquet for every faiss id: checked on a sample.
    lookup = NoteIdIndex.load(snap_dir)
    sample = np.unique(np.random.default_rng(0).integers(0, rows, min(rows, 1000)))
    expected = pq.read_table(snap_dir / IDS_FILE, columns=["note_id"]).column("note_id").take(pa.array(sample))
    if lookup.names(sample)[0] != expected.to_pylist() or not np.array_equal(lookup.lookup(expected.to_pylist()),
                                                                               sample):
        raise SnapshotError(f"{snap_dir}: id lookup arrays disagree with {IDS_FILE}")


def _swap_pointer(snaps: Path, name: str, hook: Hook = _fault_point) -> None:
    """Atomically replace CURRENT: temp file + fsync + os.replace + directory fsync.

    Its own steps rather than :func:`notellm.files.atomic_path`: the hook between
    the durable temp file and the replace is where the kill tests strike, and the
    temp name carries host and pid so :func:`retention` can remove a dead publisher's.
    The caller holds the publishers' lock."""
    check_name(name)
    tmp = snaps / temp_name(CURRENT)
    write_bytes_durable(tmp, (name + "\n").encode())
    hook("pointer_temp_written")
    os.replace(tmp, snaps / CURRENT)
    fsync_dir(snaps)
    hook("pointer_swapped")


def list_snapshots(root: str | os.PathLike) -> list[dict]:
    """Published snapshot directories, oldest first (by manifest created_at, then name)."""
    out = []
    snaps = snapshots_dir(root)
    if not snaps.is_dir():
        return out
    for path in snaps.iterdir():
        if not path.is_dir() or path.name.startswith("."):
            continue
        try:
            created = read_manifest(path)["created_at"]
        except SnapshotError:
            created = ""
        out.append({"name": path.name, "created_at": created, "path": str(path)})
    return sorted(out, key=lambda s: (s["created_at"], s["name"]))


def retention(root: str | os.PathLike, keep: int = DEFAULT_KEEP) -> list[str]:
    """Keep the newest ``keep`` snapshots and the CURRENT one; remove the rest and
    temporary directories left by dead publishers. Returns the removed names."""
    RetentionConfig(keep=keep)  # refuses keep < 1
    snaps = snapshots_dir(root)
    live = current_name(root)
    removed = []
    all_snaps = list_snapshots(root)
    for snap in all_snaps[:-keep] if len(all_snaps) > keep else []:
        if snap["name"] == live:
            continue
        shutil.rmtree(snap["path"])
        removed.append(snap["name"])
    for path in snaps.iterdir() if snaps.is_dir() else []:
        if path.name.startswith(".") and temp_owner(path.name) is not None:
            if not temp_owner_gone(path):
                continue  # a live publisher (maybe this process, maybe another host) may still write it
            shutil.rmtree(path) if path.is_dir() else path.unlink()
            removed.append(path.name)
    if removed:
        fsync_dir(snaps)
    return removed


def rollback(root: str | os.PathLike, to: str, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> dict:
    """Point CURRENT at an earlier snapshot after verifying it completely (the one
    way CURRENT moves backwards), under the publishers' lock."""
    snap = Snapshot.open(root, check_name(to), verify=True)
    snaps = snapshots_dir(root)
    with locked(snaps, f"rollback to {snap.name}", lock_timeout_s):
        previous = current_name(root)
        _swap_pointer(snaps, snap.name)
    return {"current": snap.name, "previous": previous}
