"""Serve the snapshot CURRENT names and swap to the next one without a failed request.

::

    watcher = SnapshotWatcher("/data/index", poll_s=5.0)
    watcher.start()                         # opens + verifies CURRENT's snapshot, starts the polling thread
    # (start(require_snapshot=False) serves nothing until CURRENT names a good snapshot)
    with watcher.acquire() as snap:         # one request: the snapshot being served, counted in flight
        snap.neighbors_batch(ids, k=10)
    watcher.status()                        # {"serving", "swaps", "refused", "last_check_at", "in_flight", ...}
    watcher.stop()

Why polling: ``CURRENT`` is replaced with ``os.replace`` (indexing.publish), so one ``stat`` per poll
sees every change on any filesystem, with no inotify dependency (NFS and overlay mounts do not
deliver inotify events anyway).

A poll that finds a new name opens and verifies it (every sha256, unless ``verify=False``) in the
thread that polls, while requests keep being answered by the old snapshot: requests are never
blocked by verification, only the reference swap takes a lock, for a pointer assignment. The old
snapshot is closed when its last lease is released. A snapshot that fails to open or verify
(corrupted, half-written, missing files) is refused: the old one keeps serving, the reason is
logged and listed in ``status()["refused"]``, and the same name is retried only when CURRENT is
replaced again or after ``retry_s``.

``verify_in_background=True`` applies the same rule to the first snapshot: ``start()`` serves it
after the size check only (seconds, even at 10^7 vectors, with mmap), and the polling thread runs
its checksum pass right after; a failure is logged and listed as refused, and the snapshot keeps
serving (there is nothing older to fall back to) until CURRENT names a good one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import threading
import time
from typing import Iterator

from indexing.snapshot import CURRENT, Snapshot, SnapshotError, current_name, snapshots_dir, verify_files

log = logging.getLogger(__name__)

REFUSED_KEPT = 10


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


class _Lease:
    """A snapshot and the requests holding it; closed when retired and no longer held."""

    def __init__(self, snap: Snapshot):
        self.snap = snap
        self.held = 0
        self.retired = False


class SnapshotWatcher:
    """Serves one snapshot at a time, swapping when ``<root>/snapshots/CURRENT`` changes."""

    def __init__(self, root: str | os.PathLike, poll_s: float = 5.0, verify: bool = True,
                 mmap: bool | str = "auto", verify_in_background: bool = False, retry_s: float = 300.0):
        self.root = root
        self.poll_s = poll_s
        self.verify = verify
        self.mmap = mmap
        self.verify_in_background = verify_in_background
        self.retry_s = retry_s
        self._lock = threading.Lock()          # the served reference, the leases, the counters
        self._poll_lock = threading.Lock()     # one poll at a time (thread and check_now callers)
        self._serving: _Lease | None = None
        self._draining: list[_Lease] = []      # retired, still held by requests
        self._swaps = 0
        self._refused: list[dict] = []
        self._refusals = 0                          # every refusal, for counters that never go down
        self._refused_key: dict[str, tuple] = {}   # name -> (CURRENT's identity, time) when refused
        self._last_check_at: str | None = None
        self._pending_verify: Snapshot | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle
    def start(self, require_snapshot: bool = True) -> "SnapshotWatcher":
        """Open the current snapshot and start polling. When it cannot be opened: SnapshotError, or
        with ``require_snapshot=False`` serve nothing yet (a broken one is refused) and keep polling."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("SnapshotWatcher already started")
        background = self.verify and self.verify_in_background
        try:
            snap = Snapshot.open(self.root, verify=self.verify and not background, mmap=self.mmap)
        except SnapshotError as exc:
            if require_snapshot:
                raise
            snap = None
            name, key = self._read_current()
            if name is not None:
                self._refuse(name, key, f"SnapshotError: {exc}")
            log.warning("no snapshot to serve yet (%s); polling %s every %.1f s", exc, self.root, self.poll_s)
        with self._lock:
            self._serving = _Lease(snap) if snap is not None else None
            self._last_check_at = _now()
        self._pending_verify = snap if background else None
        if snap is not None:
            log.info("serving snapshot %s (mmap=%s)", snap.name, snap.mmap)
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="snapshot-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop polling; the served snapshot is closed once its last request has finished."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        with self._lock:
            lease, self._serving = self._serving, None
            if lease is not None:
                self._retire(lease)

    def __enter__(self) -> "SnapshotWatcher":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.wait(0 if self._pending_verify is not None else self.poll_s):
            try:
                if self._pending_verify is not None:
                    self._verify_served(self._pending_verify)
                    continue
                self.check_now()
            except Exception:   # the polling thread must survive anything; the old snapshot keeps serving
                log.exception("snapshot watcher poll failed")

    # ------------------------------------------------------------ requests
    @contextlib.contextmanager
    def acquire(self) -> Iterator[Snapshot]:
        """The snapshot being served, held (not closed by a swap) until the block exits."""
        with self._lock:
            lease = self._serving
            if lease is None:
                raise SnapshotError(f"{snapshots_dir(self.root)}: the watcher serves no snapshot "
                                    "(not started, or stopped)")
            lease.held += 1
        try:
            yield lease.snap
        finally:
            with self._lock:
                lease.held -= 1
                close = lease.retired and lease.held == 0
                if close:
                    self._draining.remove(lease)
            if close:
                lease.snap.close()
                log.info("closed snapshot %s (its last request finished)", lease.snap.name)

    def _retire(self, lease: _Lease) -> None:
        """Called with the lock held: close now if idle, else when the last lease is released."""
        lease.retired = True
        if lease.held == 0:
            lease.snap.close()
        else:
            self._draining.append(lease)

    # ------------------------------------------------------------ polling
    def check_now(self) -> bool:
        """One poll, synchronously: True when it swapped to a new snapshot."""
        with self._poll_lock:
            with self._lock:
                self._last_check_at = _now()
                serving = self._serving.snap.name if self._serving else None
            name, key = self._read_current()
            if name is None or name == serving or self._skip(name, key):
                return False
            try:
                snap = Snapshot.open(self.root, name, verify=self.verify, mmap=self.mmap)
            except Exception as exc:    # whatever fails to open is refused; the old snapshot keeps serving
                self._refuse(name, key, f"{type(exc).__name__}: {exc}")
                return False
            with self._lock:
                if self._stop.is_set() and self._serving is None:
                    snap.close()
                    return False
                old, self._serving = self._serving, _Lease(snap)
                self._swaps += 1
                if old is not None:
                    self._retire(old)
            self._refused_key.pop(name, None)
            log.info("swapped to snapshot %s (was %s)", name, serving)
            return True

    def _read_current(self) -> tuple[str | None, tuple]:
        """CURRENT's name and identity (inode, mtime): publish replaces the file, so a new identity
        means CURRENT was written again, even with the same name."""
        path = snapshots_dir(self.root) / CURRENT
        try:
            st = path.stat()
            key = (st.st_ino, st.st_mtime_ns)
            return current_name(self.root), key
        except FileNotFoundError:
            return None, ()
        except SnapshotError as exc:   # CURRENT holds an invalid name
            raw = path.read_text(errors="replace").strip()
            self._refuse(raw, key, str(exc))
            return None, key

    def _skip(self, name: str, key: tuple) -> bool:
        refused = self._refused_key.get(name)
        return refused is not None and refused[0] == key and time.monotonic() - refused[1] < self.retry_s

    def _refuse(self, name: str, key: tuple, reason: str) -> None:
        if self._skip(name, key):
            return
        self._refused_key[name] = (key, time.monotonic())
        with self._lock:
            self._refused = (self._refused + [{"name": name, "reason": reason, "at": _now()}])[-REFUSED_KEPT:]
            self._refusals += 1
        log.error("refused snapshot %s, still serving the previous one: %s", name, reason)

    def _verify_served(self, snap: Snapshot) -> None:
        """The deferred checksum pass of ``verify_in_background`` (polling thread)."""
        self._pending_verify = None
        try:
            verify_files(snap.path, snap.manifest, checksums=True)
            log.info("snapshot %s verified in the background", snap.name)
        except SnapshotError as exc:
            with self._lock:
                self._refusals += 1
                self._refused = (self._refused + [{"name": snap.name, "reason": str(exc),
                                                   "at": _now()}])[-REFUSED_KEPT:]
            log.error("snapshot %s failed its background verification and keeps serving until CURRENT "
                      "names a good one: %s", snap.name, exc)

    # ------------------------------------------------------------ status
    @property
    def serving(self) -> str | None:
        with self._lock:
            return self._serving.snap.name if self._serving else None

    def status(self) -> dict:
        with self._lock:
            leases = ([self._serving] if self._serving else []) + self._draining
            return {"serving": self._serving.snap.name if self._serving else None,
                    "swaps": self._swaps,
                    "refused": [dict(r) for r in self._refused],
                    "refusals": self._refusals,
                    "last_check_at": self._last_check_at,
                    "in_flight": sum(lease.held for lease in leases),
                    "draining": [lease.snap.name for lease in self._draining],
                    "verifying": self._pending_verify is not None,
                    "mmap": self._serving.snap.mmap if self._serving else None}
