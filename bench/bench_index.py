"""Index build time, queries/s and recall against exact search: flat, IVF, HNSW.

    flock /tmp/notellm-heavy.lock .venv/bin/python bench/bench_index.py --n 100000 1000000 --d 128

Synthetic clustered, L2-normalised vectors (``tests.support.notes.clustered_vectors``,
1000 centres). Indexes are built by ``indexing.build.build_index`` exactly as the
nightly job builds them (IVF nlist = 4 sqrt(n) with nprobe tuned, HNSW M=32 with
efSearch tuned, both to recall@100 >= 0.97 on 200 tuning queries). Queries are 1000
other corpus vectors, k=10, searched in one batch; recall@10 and @100 against
``IndexFlatIP``. One JSON result line (notellm.cli contract): one row per (n, type)
under ``"rows"``; each row is also logged to stderr as it finishes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

import faiss
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))   # tests.support (the synthetic vectors) is not an installed package

from indexing.build import IndexConfig, build_index, recall_vs_exact  # noqa: E402
from notellm import cli  # noqa: E402
from notellm.config import option  # noqa: E402
from tests.support.notes import clustered_vectors  # noqa: E402

log = logging.getLogger(__name__)


@dataclasses.dataclass
class BenchIndexConfig:
    """Index build time, queries/s and recall against exact search: flat, IVF, HNSW."""

    n: list[int] = option(default_factory=lambda: [100_000, 1_000_000], help="corpus sizes")
    d: int = option(128, help="vector dimension")
    queries: int = option(1000, help="query vectors (other corpus vectors), searched in one batch")
    types: list[str] = option(default_factory=lambda: ["flat", "ivf", "hnsw"], help="index types to build")
    threads: int = option(2, help="FAISS OpenMP threads")


def run(args: BenchIndexConfig, timer: cli.Timer) -> dict:
    faiss.omp_set_num_threads(args.threads)
    rows = []
    for n in args.n:
        x = clustered_vectors(n, args.d, clusters=1000, noise=0.5, seed=n)
        rng = np.random.default_rng(1)
        q = x[rng.choice(n, args.queries, replace=False)]
        flat = faiss.IndexFlatIP(args.d)
        flat.add(x)
        t = time.perf_counter()
        _, exact100 = flat.search(q, 100)
        exact_s = time.perf_counter() - t
        ids = [str(i) for i in range(n)]
        for kind in args.types:
            built = build_index(ids, x, IndexConfig(index_type=kind))
            t = time.perf_counter()
            _, got10 = built.index.search(q, 10)
            qps = args.queries / (time.perf_counter() - t)
            _, got100 = built.index.search(q, 100)
            row = {"n": n, "d": args.d, "type": kind, "params": built.params,
                   "build_s": round(built.build_seconds, 2), "qps_k10": round(qps, 1),
                   "recall@10": round(recall_vs_exact(got10, exact100[:, :10]), 4),
                   "recall@100": round(recall_vs_exact(got100, exact100), 4),
                   "exact_k100_qps": round(args.queries / exact_s, 1)}
            log.info("%s", json.dumps(row))
            rows.append(row)
            del built
    return {"rows": rows}


def main(argv=None) -> int:
    return cli.main(run, BenchIndexConfig, argv=argv, prog="bench/bench_index.py")


if __name__ == "__main__":
    sys.exit(main())
