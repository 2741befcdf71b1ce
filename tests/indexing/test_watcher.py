"""SnapshotWatcher: swaps on a new CURRENT, refuses corrupted and half-written snapshots while the
old one keeps serving, keeps a leased snapshot open across a swap, and concurrent readers see no
error and only the newest snapshot once a swap has returned. Real FAISS, small flat snapshots."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from indexing.build import IndexConfig, build_index
from indexing.publish import _swap_pointer, content_digest, publish
from indexing.snapshot import Snapshot, SnapshotError, snapshots_dir
from indexing.watcher import SnapshotWatcher
from tests.support.notes import clustered_vectors

MODEL = {"model_id": "feedbeef01234567", "path": "/models/w", "template_version": "v1-paper"}


def put(root, seed: int, n: int = 150) -> str:
    """Publish a snapshot whose ids carry ``seed`` (so an answer says which snapshot gave it)."""
    x = clustered_vectors(n, 16, clusters=5, seed=seed)
    ids = [f"s{seed}-{i:04d}" for i in range(n)]
    built = build_index((ids, x), IndexConfig(index_key="flat"))
    return publish(root, built, date=f"2026-12-{seed:02d}", model=MODEL, content_sha256=content_digest(ids, x),
                   metrics={"seed": seed}, keep=20)["snapshot"]


def flip_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def watcher(tmp_path):
    made = []

    def make(**kwargs):
        w = SnapshotWatcher(tmp_path, **{"poll_s": 3600.0, **kwargs})
        made.append(w)
        return w

    yield make
    for w in made:
        w.stop()


def test_start_without_a_snapshot_raises(tmp_path, watcher):
    with pytest.raises(SnapshotError, match="no snapshot has been published"):
        watcher().start()


def test_start_without_requiring_a_snapshot_serves_the_first_good_one(tmp_path, watcher):
    w = watcher().start(require_snapshot=False)
    assert w.status()["serving"] is None
    with pytest.raises(SnapshotError, match="serves no snapshot"):
        with w.acquire():
            pass
    first = put(tmp_path, 1)
    flip_byte(snapshots_dir(tmp_path) / first / "index.faiss")
    assert w.check_now() is False and w.status()["refusals"] == 1 and w.status()["serving"] is None
    second = put(tmp_path, 2)
    assert w.check_now() is True and w.status()["serving"] == second


def test_corrupted_first_snapshot_is_refused_at_start_without_requiring_one(tmp_path, watcher):
    first = put(tmp_path, 1)
    flip_byte(snapshots_dir(tmp_path) / first / "index.faiss")
    w = watcher().start(require_snapshot=False)
    status = w.status()
    assert status["serving"] is None and status["refusals"] == 1 and status["refused"][0]["name"] == first
    assert w.check_now() is False and w.status()["refusals"] == 1   # the same broken name is not retried


def test_new_current_is_swapped_in(tmp_path, watcher):
    a = put(tmp_path, 1)
    w = watcher().start()
    assert w.status()["serving"] == a and w.check_now() is False
    b = put(tmp_path, 2)
    assert w.check_now() is True
    status = w.status()
    assert (status["serving"], status["swaps"], status["refused"], status["in_flight"]) == (b, 1, [], 0)
    assert status["last_check_at"].endswith("+00:00") and status["mmap"] is True
    with w.acquire() as snap:
        assert snap.name == b and snap.neighbors("s2-0003", 3)


def test_corrupted_snapshot_refused_and_not_retried(tmp_path, watcher, monkeypatch):
    put(tmp_path, 1)
    w = watcher().start()
    b = put(tmp_path, 2)
    assert w.check_now()
    c = put(tmp_path, 3)
    flip_byte(snapshots_dir(tmp_path) / c / "index.faiss")
    opens = []
    real_open = Snapshot.open
    monkeypatch.setattr(Snapshot, "open", lambda *a, **k: opens.append(a) or real_open(*a, **k))
    assert w.check_now() is False and w.check_now() is False
    assert len(opens) == 1                       # the broken name is not reopened every poll
    status = w.status()
    assert status["serving"] == b and status["swaps"] == 1
    (refused,) = status["refused"]
    assert refused["name"] == c and "index.faiss: sha256" in refused["reason"] and refused["at"]
    with w.acquire() as snap:
        assert snap.name == b and not snap.closed
    _swap_pointer(snapshots_dir(tmp_path), c)    # CURRENT written again: retried (and refused again)
    assert w.check_now() is False and len(opens) == 2 and len(w.status()["refused"]) == 2
    d = put(tmp_path, 4)
    assert w.check_now() and w.status()["serving"] == d


def test_half_written_snapshot_refused(tmp_path, watcher):
    a = put(tmp_path, 1)
    w = watcher(retry_s=0.0).start()
    half = snapshots_dir(tmp_path) / "2026-12-09-feedbeef"
    half.mkdir()
    (half / "index.faiss").write_bytes(b"IxM2 partial")
    _swap_pointer(snapshots_dir(tmp_path), half.name)
    assert w.check_now() is False
    assert w.status()["serving"] == a and "manifest.json: missing" in w.status()["refused"][-1]["reason"]
    (snapshots_dir(tmp_path) / "CURRENT").write_text("../../etc\n")   # not a snapshot name at all
    assert w.check_now() is False and "invalid snapshot name" in w.status()["refused"][-1]["reason"]
    b = put(tmp_path, 2)
    assert w.check_now() and w.status()["serving"] == b


def test_lease_keeps_old_snapshot_until_released(tmp_path, watcher):
    a = put(tmp_path, 1)
    w = watcher().start()
    with w.acquire() as old:
        b = put(tmp_path, 2)
        assert w.check_now()
        assert old.name == a and old.neighbors("s1-0001", 3)        # still answers after the swap
        status = w.status()
        assert status["serving"] == b and status["in_flight"] == 1 and status["draining"] == [a]
        with w.acquire() as new:
            assert new.name == b and w.status()["in_flight"] == 2
        assert not old.closed
    assert old.closed and w.status()["draining"] == [] and w.status()["in_flight"] == 0
    with pytest.raises(SnapshotError, match="is closed"):
        old.neighbors("s1-0001", 3)


def test_concurrent_readers_see_no_error_and_only_the_new_snapshot_after_a_swap(tmp_path, watcher):
    order = {put(tmp_path, 1): 0}
    w = watcher().start()
    done: list[str] = []                  # names, appended once check_now has returned True
    answers, errors, seen = [], [], {}
    stop = threading.Event()
    query = clustered_vectors(1, 16, seed=99)

    def reader():
        while not stop.is_set():
            generation = len(done)
            try:
                with w.acquire() as snap:
                    seen[snap.name] = snap
                    first = snap.ids[0].as_py()
                    hits = snap.neighbors_batch([first], 5)[0]
                    found, _ = snap.search(query, 3)
                    assert all(h.split("-")[0] == first.split("-")[0] for h, _ in hits + [(f, 0) for f in found[0]])
                answers.append((generation, snap.name))
            except Exception as exc:      # noqa: BLE001 - every failure is a test failure, reported below
                errors.append(repr(exc))

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for t in threads:
        t.start()
    for seed in (2, 3, 4):
        time.sleep(0.2)
        name = put(tmp_path, seed)
        order[name] = len(order)
        assert w.check_now()
        done.append(name)
    time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    assert len(answers) > 100 and w.status()["swaps"] == 3
    # A request that began after the g-th swap returned is answered by snapshot g or newer.
    stale = [(g, name) for g, name in answers if order[name] < g]
    assert stale == []
    assert {name for _, name in answers} == set(order)
    assert [s.closed for name, s in sorted(seen.items(), key=lambda kv: order[kv[0]])] == [True, True, True, False]


def test_polling_thread_swaps_and_stop_closes(tmp_path, watcher):
    put(tmp_path, 1)
    w = watcher(poll_s=0.05).start()
    b = put(tmp_path, 2)
    deadline = time.monotonic() + 20
    while w.serving != b and time.monotonic() < deadline:
        time.sleep(0.05)
    assert w.serving == b
    with w.acquire() as snap:
        pass
    w.stop()
    assert snap.closed and w.status()["serving"] is None
    with pytest.raises(SnapshotError, match="serves no snapshot"):
        with w.acquire():
            pass


def test_verify_in_background_serves_first_then_reports(tmp_path, watcher):
    a = put(tmp_path, 1)
    flip_byte(snapshots_dir(tmp_path) / a / "index.faiss")   # same size: only the checksum pass can tell
    with pytest.raises(SnapshotError, match="sha256"):
        watcher().start()
    w = watcher(poll_s=0.05, verify_in_background=True).start()
    with w.acquire() as snap:
        assert snap.name == a and snap.search(np.ones((1, 16), np.float32), 2)[0]
    deadline = time.monotonic() + 20
    while not w.status()["refused"] and time.monotonic() < deadline:
        time.sleep(0.05)
    (refused,) = w.status()["refused"]
    assert refused["name"] == a and "index.faiss: sha256" in refused["reason"]
    assert w.status()["serving"] == a and not w.status()["verifying"]
    b = put(tmp_path, 2)
    deadline = time.monotonic() + 20
    while w.serving != b and time.monotonic() < deadline:
        time.sleep(0.05)
    assert w.serving == b
