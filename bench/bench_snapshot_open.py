"""Time ``Snapshot.open`` memory-mapped vs read, and the checksum pass, with peak RSS.

    flock /tmp/notellm-heavy.lock .venv/bin/python bench/bench_snapshot_open.py --n 10000000 --index-type flat

Builds (or reuses, keyed by type / n / d under ``--work-dir``) a snapshot published by
``indexing.publish`` exactly as the nightly job does, over N synthetic clustered vectors
(``tests.support.vectors.ClusteredSource``: 1000 centres, d=128, generated block by block) with ids ``n000000042``.
Each measurement runs in a fresh spawned process, so its RSS is its own: ``Snapshot.open`` with
``verify=False`` and ``mmap=True`` / ``mmap=False``, then the streaming verification pass
(``verify_files``) alone, and the open's parts (index read, the memory-mapped id lookup). With
``--cold`` (default) the snapshot's pages are dropped from the page cache before each measurement
(``posix_fadvise(DONTNEED)``, no root needed; best effort). The issue's goal: opening a 10^7-vector
snapshot takes <= 2 s before verification. One JSON result line (notellm.cli contract); the median
of ``--repeats`` runs per figure.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import logging
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))   # tests.support (the synthetic vectors) is not an installed package

from notellm import cli  # noqa: E402
from notellm.config import ConfigError, option  # noqa: E402

log = logging.getLogger(__name__)

TYPES = ("flat", "ivf", "sq8", "pq", "hnsw")
MODEL = {"model_id": "bench0000snapshot", "path": "/nonexistent/bench-model", "template_version": "bench"}


@dataclasses.dataclass
class BenchSnapshotOpenConfig:
    """Time Snapshot.open memory-mapped vs read, and the checksum pass, with peak RSS."""

    n: int = option(1_000_000, help="vectors in the snapshot (10^7: --n 10000000)")
    d: int = option(128, help="vector dimension")
    index_type: str = option("flat", choices=TYPES, help="index type of the snapshot")
    work_dir: Path = option(REPO / "var" / "bench" / "snapshot_open",
                            help="where snapshots are built and reused (one per type / n / d)")
    nlist: int | None = option(None, help="IVF lists (null: the build's default, 4 sqrt(n))")
    train_per_list: int = option(64, help="IVF training vectors per list (30..256)")
    rebuild: bool = option(False, help="build the snapshot again even when one exists")
    repeats: int = option(3, help="runs per measurement (median reported)")
    cold: bool = option(True, help="drop the snapshot's pages from the page cache before each run")
    threads: int = option(2, help="FAISS OpenMP threads (build and queries)")

    def validate(self) -> None:
        if self.n < 2 or self.d < 1 or self.repeats < 1 or self.threads < 1:
            raise ConfigError("n must be >= 2 and d, repeats, threads >= 1")
        if self.index_type not in TYPES:
            raise ConfigError(f"index_type must be one of {TYPES}")


def snapshot_root(args: BenchSnapshotOpenConfig) -> Path:
    return args.work_dir / f"{args.index_type}-n{args.n}-d{args.d}"


def ensure_snapshot(args: BenchSnapshotOpenConfig) -> tuple[Path, bool, float | None]:
    """(root, reused, build seconds): reuse the published snapshot of this key unless --rebuild."""
    import faiss

    from indexing.build import IndexConfig, build_index
    from indexing.publish import publish
    from indexing.snapshot import SnapshotError, current_name, read_manifest, snapshots_dir
    from tests.support.vectors import ClusteredSource

    root = snapshot_root(args)
    try:
        name = current_name(root)
        if name and not args.rebuild and read_manifest(snapshots_dir(root) / name)["num_vectors"] == args.n:
            return root, True, None
    except SnapshotError:
        pass
    faiss.omp_set_num_threads(args.threads)
    t0 = time.perf_counter()
    source = ClusteredSource(args.n, args.d, clusters=1000, noise=0.5, seed=args.n)   # streamed, never one matrix
    built = build_index(source, IndexConfig(index_key=args.index_type, nlist=args.nlist,
                                            train_per_list=args.train_per_list))
    publish(root, built, date="2026-01-01", model=MODEL, metrics={"bench": True}, keep=1)
    return root, False, time.perf_counter() - t0


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _drop_cache(snap_dir: Path) -> None:
    for path in snap_dir.iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _warm_up_arrow() -> None:
    """Parquet's one-off start-up (thread pools, allocator) off the clock: it does not grow with n."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"x": ["a", "b"]}), sink)
    pq.read_table(pa.BufferReader(sink.getvalue()))


def measure(root: str, what: str, cold: bool, threads: int) -> dict:
    """One measurement in this (fresh, spawned) process: seconds and RSS (MB) before / after / peak."""
    import faiss
    import numpy as np

    from indexing.note_ids import NoteIdIndex
    from indexing.snapshot import (
        INDEX_FILE,
        Snapshot,
        current_name,
        read_index_file,
        read_manifest,
        snapshots_dir,
        verify_files,
    )

    faiss.omp_set_num_threads(threads)
    _warm_up_arrow()
    snap_dir = snapshots_dir(root) / current_name(root)
    if cold and hasattr(os, "posix_fadvise"):
        _drop_cache(snap_dir)
    before = _status_mb("VmRSS")
    out: dict = {}
    t = time.perf_counter()
    if what in ("mmap", "read"):
        snap = Snapshot.open(root, verify=False, mmap=(what == "mmap"))
        out["open_s"] = time.perf_counter() - t
        out["rss_after_open_mb"] = _status_mb("VmRSS") - before
        ids = snap.ids.take(np.arange(0, len(snap), max(1, len(snap) // 100))).to_pylist()
        t = time.perf_counter()
        snap.neighbors_batch(ids, 10)
        out["first_neighbors_batch100_s"] = time.perf_counter() - t    # pays the page faults when mapped
        t = time.perf_counter()
        snap.neighbors_batch(ids, 10)
        out["second_neighbors_batch100_s"] = time.perf_counter() - t
        out["mapped"] = snap.mmap
    elif what == "verify":
        verify_files(snap_dir, read_manifest(snap_dir), checksums=True)
        out["verify_s"] = time.perf_counter() - t
    else:   # the parts of an mmap open
        read_index_file(snap_dir / INDEX_FILE, mmap=True)
        out["read_index_mmap_s"] = time.perf_counter() - t
        t = time.perf_counter()
        NoteIdIndex.load(snap_dir)
        out["id_lookup_mmap_s"] = time.perf_counter() - t
    out["peak_rss_mb"] = _status_mb("VmHWM")
    out["rss_baseline_mb"] = before
    return out


def run(args: BenchSnapshotOpenConfig, timer: cli.Timer) -> dict:
    with timer.phase("build"):
        root, reused, build_s = ensure_snapshot(args)
    from indexing.snapshot import current_name, read_manifest, snapshots_dir
    snap_dir = snapshots_dir(root) / current_name(root)
    manifest = read_manifest(snap_dir)
    ctx = multiprocessing.get_context("spawn")
    figures: dict = {}
    for what in ("mmap", "read", "verify", "parts"):
        runs = []
        for _ in range(args.repeats):
            with timer.phase(what), cf.ProcessPoolExecutor(1, mp_context=ctx) as pool:
                runs.append(pool.submit(measure, str(root), what, args.cold, args.threads).result())
        figures[what] = {k: (round(statistics.median(r[k] for r in runs), 4) if not isinstance(runs[0][k], bool)
                             else runs[0][k]) for k in runs[0]}
        log.info("%s: %s", what, json.dumps(figures[what]))
    file_mb = {name: round(meta["bytes"] / 2 ** 20, 1) for name, meta in manifest["files"].items()}
    total_mb = sum(meta["bytes"] for meta in manifest["files"].values()) / 2 ** 20
    return {"n": args.n, "d": args.d, "index_type": args.index_type, "root": str(root), "reused": reused,
            "build_s": round(build_s, 2) if build_s else None, "files_mb": file_mb, "cold_cache": args.cold,
            "repeats": args.repeats, "open_mmap": figures["mmap"], "open_read": figures["read"],
            "verify": {**figures["verify"], "mb_per_s": round(total_mb / figures["verify"]["verify_s"], 1)},
            "open_parts_mmap": figures["parts"],
            "goal_open_le_2s": figures["mmap"]["open_s"] <= 2.0}


def main(argv=None) -> int:
    return cli.main(run, BenchSnapshotOpenConfig, argv=argv, prog="bench/bench_snapshot_open.py")


if __name__ == "__main__":
    sys.exit(main())
