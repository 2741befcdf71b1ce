"""Index keys at 10^6 and 10^7 vectors: build time, peak RSS, bytes, recall@100 and queries/s.

    flock /tmp/notellm-heavy.lock .venv/bin/python bench/bench_index.py --n 1000000 10000000 \\
        --nlist 4096 --train-per-list 30

Corpus: ``tests.support.vectors.ClusteredSource`` (1000 random centres plus Gaussian noise 0.5,
L2-normalised, d=128), generated block by block, so no process holds the matrix; the build streams it
exactly as the nightly job streams the embedding store (``indexing.build.build_index``: training
sample, add in batches, ParameterSpace tuning to recall@100 >= 0.97 on 200 tuning queries).

Per n: 1000 query vectors sampled from the corpus (a different seed than the build's tuning), their
exact top-100 by one streamed pass (``indexing.exact.exact_knn``). Per key, in a fresh spawned process
(so its peak RSS, VmHWM, is its own): build, write the index (bytes on disk), search the 1000 queries
in one batch at k=100 (queries/s) and recall@10 / @100 against the exact top-100. Keys: the shorthands
``flat``, ``ivf`` (IVF-Flat), ``sq8``, ``pq`` (OPQ + PQ, the largest m under the budget) and ``auto``,
the key the nightly job picks under ``--budget`` (the issue's goal: at 10^7 under 1 GB, <= 1/8 of
flat's memory, recall@100 >= 0.95, >= 10x flat's queries/s). ``--nlist`` overrides 4 sqrt(n): k-means
costs O(train_per_list * nlist^2 * d) and the default 12,649 lists at 10^7 take tens of minutes on 2 cores.
One JSON result line (notellm.cli contract), one row per (n, key), ratios against flat of the same n.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))   # tests.support (the generated corpus) is not an installed package

from bench_snapshot_open import _status_mb  # noqa: E402 (bench/ is on sys.path: the script's folder)

from notellm import cli  # noqa: E402
from notellm.config import option  # noqa: E402

log = logging.getLogger(__name__)

BUDGETED = ("auto", "pq")


@dataclasses.dataclass
class BenchIndexConfig:
    """Index keys at 10^6 and 10^7 vectors: build time, peak RSS, bytes, recall@100, queries/s."""

    n: list[int] = option(default_factory=lambda: [1_000_000, 10_000_000], help="corpus sizes")
    d: int = option(128, help="vector dimension")
    keys: list[str] = option(default_factory=lambda: ["flat", "ivf", "sq8", "pq", "auto"],
                             help="index keys (shorthands or index_factory strings; repeat the flag or "
                                  "list them space-separated, commas belong to the keys)", split_commas=False)
    budget: str = option("1GB", help="max_index_memory of the auto and pq builds (they choose under it; the "
                                     "other keys are built whatever they need)")
    queries: int = option(1000, help="query vectors sampled from the corpus, searched in one batch")
    nlist: int | None = option(None, help="IVF lists (null: the build's default 4 sqrt(n))")
    train_per_list: int = option(30, help="IVF training vectors per list (30..256)")
    threads: int = option(2, help="FAISS OpenMP threads")
    work_dir: Path = option(REPO / "var" / "bench" / "index", help="exact neighbours and index files")


def _source(n: int, d: int):
    from tests.support.vectors import ClusteredSource
    return ClusteredSource(n, d, clusters=1000, noise=0.5, seed=n)


def ground_truth(cfg: BenchIndexConfig, n: int) -> Path:
    """Queries and their exact top-100 (cached per n, d, queries under work_dir)."""
    import numpy as np

    from indexing.exact import exact_knn, sample_rows
    from indexing.source import take_rows
    path = cfg.work_dir / f"truth-n{n}-d{cfg.d}-q{cfg.queries}.npz"
    if not path.exists():
        source = _source(n, cfg.d)
        t = time.perf_counter()
        q = take_rows(source, sample_rows(n, cfg.queries, seed=7))
        _, exact = exact_knn(source, q, 100)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, queries=q, exact=exact)
        log.info("exact top-100 of %d queries over %d vectors: %.1f s", cfg.queries, n, time.perf_counter() - t)
    return path


def measure(cfg: BenchIndexConfig, n: int, key: str, truth: str) -> dict:
    """One key in this (fresh) process."""
    import faiss
    import numpy as np

    from indexing.build import IndexConfig, build_index
    from indexing.exact import recall_vs_exact
    faiss.omp_set_num_threads(cfg.threads)
    data = np.load(truth)
    q, exact = data["queries"], data["exact"]
    base_mb = _status_mb("VmRSS")
    budget = cfg.budget if key in BUDGETED else "1TB"     # flat / ivf / sq8 are measured whatever they need
    built = build_index(_source(n, cfg.d), IndexConfig(index_key=key, max_index_memory=budget, nlist=cfg.nlist,
                                                       train_per_list=cfg.train_per_list))
    rss_built = _status_mb("VmRSS") - base_mb
    path = cfg.work_dir / f"index-n{n}-{key.replace(',', '_')}.faiss"
    faiss.write_index(built.index, str(path))
    size = path.stat().st_size
    path.unlink()
    t = time.perf_counter()
    _, got = built.index.search(q, 100)
    search_s = time.perf_counter() - t
    return {"n": n, "d": cfg.d, "key": key, "index_key": built.key, "search_params": built.search_params,
            "build_s": round(built.build_seconds, 1), "phases_s": built.phases,
            "estimate_mb": round((built.choice.estimate_bytes or 0) / 2**20, 1),
            "index_bytes": size, "rss_index_mb": round(rss_built, 1), "peak_rss_mb": round(_status_mb("VmHWM"), 1),
            "qps_k100": round(len(q) / search_s, 1),
            "recall@10": round(recall_vs_exact(got[:, :10], exact[:, :10]), 4),
            "recall@100": round(recall_vs_exact(got, exact), 4),
            "tune_recall": built.params.get("tune_recall")}


def _already_measured(cfg: BenchIndexConfig, n: int, key: str, rows: list) -> dict | None:
    from indexing.build import IndexConfig
    from indexing.index_key import choose_key
    budget = cfg.budget if key in BUDGETED else "1TB"
    try:
        wanted = choose_key(n, cfg.d, IndexConfig(index_key=key, max_index_memory=budget, nlist=cfg.nlist)).key
    except ValueError:
        return None
    return next((r for r in rows if r.get("n") == n and r.get("index_key") == wanted), None)


def run(cfg: BenchIndexConfig, timer: cli.Timer) -> dict:
    cfg.work_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    ctx = multiprocessing.get_context("spawn")
    for n in cfg.n:
        with timer.phase(f"truth_{n}"):
            truth = str(ground_truth(cfg, n))
        flat = None
        for key in cfg.keys:
            same = _already_measured(cfg, n, key, rows)
            if same is not None:    # e.g. auto chose a key measured just before: report it, do not rebuild
                rows.append({**same, "key": key})
                log.info("%s = %s, already measured", key, same["index_key"])
                continue
            with timer.phase(f"{key}_{n}"), ctx.Pool(1) as pool:
                try:
                    row = pool.apply(measure, (cfg, n, key, truth))
                except Exception as exc:            # e.g. no key of that family fits the budget
                    row = {"n": n, "key": key, "error": str(exc).splitlines()[0]}
            if key == "flat" and "error" not in row:
                flat = row
            if flat is not None and "error" not in row:
                row["memory_vs_flat"] = round(row["index_bytes"] / flat["index_bytes"], 4)
                row["qps_vs_flat"] = round(row["qps_k100"] / flat["qps_k100"], 1)
            log.info("%s", json.dumps(row))
            rows.append(row)
    return {"rows": rows, "budget": cfg.budget, "threads": cfg.threads, "cpus": os.cpu_count()}


def main(argv=None) -> int:
    return cli.main(run, BenchIndexConfig, argv=argv, prog="bench/bench_index.py")


if __name__ == "__main__":
    sys.exit(main())
