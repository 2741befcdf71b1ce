"""Atomic publishing: crash injection at every step, corrupted files refused,
retention, rollback, idempotent republish. Synthetic vectors (no model needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from indexing.build import IndexConfig, build_index
from indexing.publish import STEPS, content_digest, list_snapshots, publish, retention, rollback
from indexing.snapshot import Snapshot, SnapshotError, current_name, snapshots_dir
from tests.support.notes import clustered_vectors

MODEL = {"model_id": "abcdef0123456789", "path": "/models/x", "template_version": "v1-paper"}


def corpus(seed, n=200, d=16):
    x = clustered_vectors(n, d, clusters=8, seed=seed)
    return [f"n{seed}-{i:04d}" for i in range(n)], x


def do_publish(root, seed, date="2026-11-24", hook=None, keep=7, model=MODEL, n=200):
    ids, x = corpus(seed, n)
    built = build_index((ids, x), IndexConfig(index_key="flat"))
    kwargs = {"hook": hook} if hook else {}
    return publish(root, built, date=date, model=model, content_sha256=content_digest(ids, x),
                   metrics={"seed": seed}, keep=keep, **kwargs)


def assert_complete(snap: Snapshot, seed):
    """The reader sees one whole snapshot: its manifest, index and ids all belong to ``seed``."""
    ids, x = corpus(seed)
    assert snap.info()["metrics"]["seed"] == seed
    assert snap.note_ids == ids and snap.index.ntotal == len(ids)
    np.testing.assert_allclose(snap.vector(ids[7]), x[7], atol=1e-6)
    assert snap.info()["snapshot_id"] == snap.name


class Crash(Exception):
    pass


@pytest.mark.parametrize("step", STEPS)
def test_crash_at_each_step_leaves_old_or_new_snapshot(tmp_path, step):
    old = do_publish(tmp_path, seed=1, date="2026-11-24")

    def crash(at):
        if at == step:
            raise Crash(at)

    with pytest.raises(Crash):
        do_publish(tmp_path, seed=2, date="2026-11-25", hook=crash)
    snap = Snapshot.open(tmp_path)
    swapped = STEPS.index(step) >= STEPS.index("pointer_swapped")
    assert_complete(snap, 2 if swapped else 1)
    assert (snap.name == old["snapshot"]) != swapped
    # The reader never sees the temporary directory, and a later publish succeeds.
    assert not any(p.name.startswith(".tmp") for p in [snap.path])
    again = do_publish(tmp_path, seed=3, date="2026-11-26")
    assert_complete(Snapshot.open(tmp_path), 3) and again["published"]


def test_hard_kill_during_pointer_swap(tmp_path):
    """A real process death (os._exit) after the temporary pointer was written but not swapped."""
    do_publish(tmp_path, seed=1)
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {os.getcwd()!r})
        from tests.indexing.test_publish import do_publish
        do_publish({str(tmp_path)!r}, seed=2, date="2026-11-25",
                   hook=lambda s: os._exit(9) if s == "pointer_temp_written" else None)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    assert any(p.name.startswith(".CURRENT.tmp-") for p in snapshots_dir(tmp_path).iterdir())
    assert_complete(Snapshot.open(tmp_path), 1)
    # The dead publisher's leftovers are removed by the next retention pass.
    assert ".CURRENT.tmp-" in " ".join(retention(tmp_path, keep=7))
    # The renamed-but-never-current snapshot is complete and can be rolled forward to.
    rollback(tmp_path, "2026-11-25-abcdef01")
    assert_complete(Snapshot.open(tmp_path), 2)


def test_corrupted_index_file_refused_naming_the_file(tmp_path):
    res = do_publish(tmp_path, seed=1)
    index = snapshots_dir(tmp_path) / res["snapshot"] / "index.faiss"
    data = bytearray(index.read_bytes())
    data[len(data) // 2] ^= 0xFF
    index.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match=r"index\.faiss: sha256 .* \(corrupted\)"):
        Snapshot.open(tmp_path)


def test_truncated_files_refused(tmp_path):
    res = do_publish(tmp_path, seed=1)
    snap_dir = snapshots_dir(tmp_path) / res["snapshot"]
    index = snap_dir / "index.faiss"
    index.write_bytes(index.read_bytes()[:100])
    with pytest.raises(SnapshotError, match=r"index\.faiss: size 100 bytes"):
        Snapshot.open(tmp_path, verify=False)
    # Even if someone "fixes" the manifest, FAISS refuses the truncated file with the file named.
    manifest = json.loads((snap_dir / "manifest.json").read_text())
    manifest["files"]["index.faiss"]["bytes"] = 100
    (snap_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SnapshotError, match=r"index\.faiss: FAISS cannot read it"):
        Snapshot.open(tmp_path, verify=False)


def test_corrupted_ids_and_manifest_refused(tmp_path):
    res = do_publish(tmp_path, seed=1)
    snap_dir = snapshots_dir(tmp_path) / res["snapshot"]
    ids = snap_dir / "ids.parquet"
    ids.write_bytes(ids.read_bytes()[:-5] + b"XXXXX")
    with pytest.raises(SnapshotError, match=r"ids\.parquet: sha256"):
        Snapshot.open(tmp_path)
    (snap_dir / "manifest.json").write_text('{"format_version": 1}')
    with pytest.raises(SnapshotError, match=r"manifest\.json: column 'snapshot_id': missing"):
        Snapshot.open(tmp_path)


def test_retention_keeps_last_n_and_never_current(tmp_path):
    for day in range(1, 6):
        do_publish(tmp_path, seed=day, date=f"2026-11-0{day}", keep=10)
    rollback(tmp_path, "2026-11-01-abcdef01")          # CURRENT is now the oldest
    (snapshots_dir(tmp_path) / ".tmp-2026-11-09-abcdef01-999999999").mkdir()  # a dead publisher's leftovers
    removed = retention(tmp_path, keep=2)
    names = [s["name"] for s in list_snapshots(tmp_path)]
    assert names == ["2026-11-01-abcdef01", "2026-11-04-abcdef01", "2026-11-05-abcdef01"]
    assert set(removed) == {"2026-11-02-abcdef01", "2026-11-03-abcdef01", ".tmp-2026-11-09-abcdef01-999999999"}
    assert_complete(Snapshot.open(tmp_path), 1)


def test_rollback_validates_target_first(tmp_path):
    do_publish(tmp_path, seed=1, date="2026-11-01")
    do_publish(tmp_path, seed=2, date="2026-11-02")
    bad = snapshots_dir(tmp_path) / "2026-11-01-abcdef01" / "ids.parquet"
    bad.write_bytes(b"garbage")
    with pytest.raises(SnapshotError, match="ids.parquet"):
        rollback(tmp_path, "2026-11-01-abcdef01")
    assert current_name(tmp_path) == "2026-11-02-abcdef01"
    with pytest.raises(SnapshotError, match="does not exist"):
        rollback(tmp_path, "2026-10-01-abcdef01")
    with pytest.raises(SnapshotError, match="invalid snapshot name"):
        rollback(tmp_path, "../etc")


def test_republish_same_date_and_model(tmp_path):
    first = do_publish(tmp_path, seed=1)
    other = do_publish(tmp_path, seed=5, date="2026-11-20")
    same = do_publish(tmp_path, seed=1)           # identical content: no-op, CURRENT back to it
    assert (same["snapshot"], same["published"]) == (first["snapshot"], False)
    assert same["manifest_sha256"] == first["manifest_sha256"]
    assert current_name(tmp_path) == first["snapshot"] != other["snapshot"]
    changed = do_publish(tmp_path, seed=2)        # same date + model, other content: next revision
    assert changed["published"] and changed["snapshot"] == first["snapshot"] + ".2"
    assert_complete(Snapshot.open(tmp_path), 2)
    assert_complete(Snapshot.open(tmp_path, first["snapshot"]), 1)   # the first one was never rewritten


def test_no_snapshot_yet(tmp_path):
    with pytest.raises(SnapshotError, match="no snapshot has been published"):
        Snapshot.open(tmp_path)
