"""Atomic publishing: SIGKILL at every step (20 trials each), two racing publisher
processes, corrupted files refused, retention, rollback, idempotent republish.
Synthetic vectors (no model needed)."""

from __future__ import annotations

import functools
import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from indexing.build import IndexConfig, build_index
from indexing.publish import STEPS, content_digest, list_snapshots, publish, retention, rollback, snapshot_id
from indexing.snapshot import Snapshot, SnapshotError, current_name, snapshots_dir
from notellm.cli import Conflict
from notellm.locking import host_tag, temp_owner
from tests.support.kill import kill_at_fault_point
from tests.support.notes import clustered_vectors

MODEL = {"model_id": "abcdef0123456789", "path": "/models/x", "template_version": "v1-paper"}


def corpus(seed, n=200, d=16):
    x = clustered_vectors(n, d, clusters=8, seed=seed)
    return [f"n{seed}-{i:04d}" for i in range(n)], x


def do_publish(root, seed, date="2026-11-24", keep=7, model=MODEL, n=200):
    ids, x = corpus(seed, n)
    built = build_index((ids, x), IndexConfig(index_key="flat"))
    return publish(root, built, date=date, model=model, content_sha256=content_digest(ids, x),
                   metrics={"seed": seed}, keep=keep)


def assert_complete(snap: Snapshot, seed):
    """The reader sees one whole snapshot: its manifest, index and ids all belong to ``seed``."""
    ids, x = corpus(seed)
    assert snap.info()["metrics"]["seed"] == seed
    assert snap.note_ids == ids and snap.index.ntotal == len(ids)
    np.testing.assert_allclose(snap.vector(ids[7]), x[7], atol=1e-6)
    assert snap.info()["snapshot_id"] == snap.name


SNAPSHOT_FILES = ("index.faiss", "ids.parquet")


def snapshot_bytes(root, name) -> dict:
    """What a rerun must reproduce exactly: the data files, and the manifest without its
    timestamp and build time."""
    d = snapshots_dir(root) / name
    manifest = json.loads((d / "manifest.json").read_text())
    manifest.pop("created_at")
    manifest["build"].pop("seconds")
    return {**{f: (d / f).read_bytes() for f in SNAPSHOT_FILES}, "manifest": manifest}


def temp_entries(root) -> list[str]:
    return sorted(p.name for p in snapshots_dir(root).iterdir() if temp_owner(p.name))


TRIALS = 20


@pytest.mark.parametrize("step", STEPS)
def test_sigkill_at_each_step_leaves_old_or_new_snapshot_and_the_rerun_converges(tmp_path, step):
    """20 trials per step: the publisher is SIGKILLed while blocked at ``step``; a reader then
    sees the complete old or the complete new snapshot, and rerunning the same publish ends on
    the new one with exactly the bytes an uninterrupted publish writes, with no temp files left."""
    root, ref_root = tmp_path / "idx", tmp_path / "ref"
    swapped = STEPS.index(step) >= STEPS.index("pointer_swapped")
    old_seed = 1
    do_publish(root, seed=old_seed, date="2026-11-01", keep=3)
    for trial in range(TRIALS):
        seed, date = trial + 2, f"2026-11-{trial + 2:02d}"
        status = kill_at_fault_point(functools.partial(do_publish, root, seed=seed, date=date, keep=3),
                                     f"publish:{step}", tmp_path / "ready")
        assert os.WTERMSIG(status) == signal.SIGKILL
        snap = Snapshot.open(root, verify=True)
        assert_complete(snap, seed if swapped else old_seed)
        again = do_publish(root, seed=seed, date=date, keep=3)
        assert again["snapshot"] == current_name(root) == snapshot_id(date, MODEL["model_id"])
        assert again["published"] is (STEPS.index(step) < STEPS.index("after_rename")), again
        assert_complete(Snapshot.open(root, verify=True), seed)
        reference = do_publish(ref_root / str(trial), seed=seed, date=date)
        assert snapshot_bytes(root, again["snapshot"]) == snapshot_bytes(ref_root / str(trial), reference["snapshot"])
        assert temp_entries(root) == [], "a killed publisher's temp files outlived the next publish"
        old_seed = seed


def _publisher(root, who: str, builds: list, out: Path, start) -> None:
    """One of two racing publishers: read CURRENT (as the gate does), pause, publish with it as
    the expected value; record each outcome. Any exception other than Conflict fails the child."""
    import random
    import time

    from notellm.cli import Conflict
    rng = random.Random(who)
    outcomes = []
    start.wait(30)   # both begin together
    for date, built, digest in builds:
        expected = current_name(root)
        time.sleep(rng.random() * 0.004)
        try:
            res = publish(root, built, date=date, model={**MODEL, "model_id": who * 16}, metrics={"who": who},
                          content_sha256=digest, keep=200, expected_current=expected)
            outcomes.append({"date": date, "status": "published" if res["published"] else "identical",
                             "snapshot": res["snapshot"]})
        except Conflict as exc:
            outcomes.append({"date": date, "status": "conflict", "error": str(exc)})
    out.write_text(json.dumps(outcomes))


def test_two_publisher_processes_race_for_50_rounds_and_current_only_moves_forward(tmp_path):
    import multiprocessing
    import threading

    root = tmp_path / "idx"
    builds = {}
    for who, seed0 in (("a", 100), ("b", 200)):
        builds[who] = []
        for r in range(50):
            ids, x = corpus(seed0 + r, n=60)
            builds[who].append((f"2026-{10 + r // 28:02d}-{1 + r % 28:02d}",
                                build_index((ids, x), IndexConfig(index_key="flat")), content_digest(ids, x)))
    seen, stop = [], threading.Event()

    def watch():
        while not stop.is_set():
            name = current_name(root)
            if name and (not seen or seen[-1][0] != name):
                manifest = json.loads((snapshots_dir(root) / name / "manifest.json").read_text())
                seen.append((name, (name[:10], manifest["created_at"])))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(2)
    procs = [ctx.Process(target=_publisher, args=(root, who, builds[who], tmp_path / f"{who}.json", start))
             for who in ("a", "b")]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
    stop.set()
    watcher.join()
    assert [proc.exitcode for proc in procs] == [0, 0]
    keys = [key for _, key in seen]
    assert keys == sorted(keys), f"CURRENT moved backwards: {seen}"
    outcomes = {who: json.loads((tmp_path / f"{who}.json").read_text()) for who in ("a", "b")}
    for rows in outcomes.values():
        assert len(rows) == 50 and {r["status"] for r in rows} <= {"published", "identical", "conflict"}
        assert all(("another publisher moved it" in r["error"] or "only moves forward" in r["error"])
                   for r in rows if r["status"] == "conflict")
    published = sum(r["status"] == "published" for rows in outcomes.values() for r in rows)
    assert published >= 50 and len(list_snapshots(root)) == published
    assert temp_entries(root) == []
    by_name = {s["name"]: (s["name"][:10], s["created_at"]) for s in list_snapshots(root)}
    assert by_name[current_name(root)] == max(by_name.values()), "CURRENT is not the newest snapshot"


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
    snaps = snapshots_dir(tmp_path)
    dead = f".2026-11-09-abcdef01.tmp-{host_tag()}-999999999-abcdef12"   # a dead local publisher's leftovers
    (snaps / dead).mkdir()
    live = f".2026-11-09-abcdef01.tmp-{host_tag()}-{os.getpid()}-abcdef12"   # a live one's: kept
    (snaps / live).mkdir()
    other_new = ".CURRENT.tmp-otherhost-1-abcdef12"     # another host's, recent: its owner cannot be probed
    (snaps / other_new).write_text("x")
    other_old = ".2026-11-08-abcdef01.tmp-otherhost-2-abcdef12"   # another host's, older than stale_s
    (snaps / other_old).mkdir()
    os.utime(snaps / other_old, (time.time() - 7 * 3600,) * 2)
    removed = retention(tmp_path, keep=2)
    names = [s["name"] for s in list_snapshots(tmp_path)]
    assert names == ["2026-11-01-abcdef01", "2026-11-04-abcdef01", "2026-11-05-abcdef01"]
    assert set(removed) == {"2026-11-02-abcdef01", "2026-11-03-abcdef01", dead, other_old}
    assert sorted(temp_entries(tmp_path)) == sorted([live, other_new])
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
    same = do_publish(tmp_path, seed=1)           # identical content: a no-op
    assert (same["snapshot"], same["published"]) == (first["snapshot"], False)
    assert same["manifest_sha256"] == first["manifest_sha256"]
    assert current_name(tmp_path) == first["snapshot"]
    changed = do_publish(tmp_path, seed=2)        # same date + model, other content: next revision
    assert changed["published"] and changed["snapshot"] == first["snapshot"] + ".2"
    assert_complete(Snapshot.open(tmp_path), 2)
    assert_complete(Snapshot.open(tmp_path, first["snapshot"]), 1)   # the first one was never rewritten


def test_current_never_moves_backwards_except_by_rollback(tmp_path):
    first = do_publish(tmp_path, seed=1, date="2026-11-20")
    later = do_publish(tmp_path, seed=2, date="2026-11-24")
    with pytest.raises(Conflict, match="older than the live 2026-11-24-abcdef01.*only moves forward"):
        do_publish(tmp_path, seed=3, date="2026-11-21")            # a late backfill
    with pytest.raises(Conflict, match="only moves forward"):
        do_publish(tmp_path, seed=1, date="2026-11-20")            # re-pointing at an older identical one
    assert current_name(tmp_path) == later["snapshot"]
    assert [s["name"] for s in list_snapshots(tmp_path)] == [first["snapshot"], later["snapshot"]]
    assert rollback(tmp_path, first["snapshot"]) == {"current": first["snapshot"], "previous": later["snapshot"]}


def test_stale_expected_current_is_a_conflict_and_nothing_is_written(tmp_path):
    first = do_publish(tmp_path, seed=1, date="2026-11-20")
    ids, x = corpus(2)
    built = build_index((ids, x), IndexConfig(index_key="flat"))
    with pytest.raises(Conflict, match="gated against None; another publisher moved it") as err:
        publish(tmp_path, built, date="2026-11-21", model=MODEL, metrics={}, expected_current=None)
    assert err.value.exit_code == 5
    assert current_name(tmp_path) == first["snapshot"] and len(list_snapshots(tmp_path)) == 1
    ok = publish(tmp_path, built, date="2026-11-21", model=MODEL, metrics={}, expected_current=first["snapshot"])
    assert ok["published"] and current_name(tmp_path) == ok["snapshot"]


def test_no_snapshot_yet(tmp_path):
    with pytest.raises(SnapshotError, match="no snapshot has been published"):
        Snapshot.open(tmp_path)
