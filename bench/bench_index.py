"""Index build time, queries/s and recall against exact search: flat, IVF, HNSW.

    flock /tmp/notellm-heavy.lock .venv/bin/python bench/bench_index.py --n 100000 1000000 --d 128

Synthetic clustered, L2-normalised vectors (``tests.support.notes.clustered_vectors``,
1000 centres). Indexes are built by ``indexing.build.build_index`` exactly as the
nightly job builds them (IVF nlist = 4 sqrt(n) with nprobe tuned, HNSW M=32 with
efSearch tuned, both to recall@100 >= 0.97 on 200 tuning queries). Queries are 1000
other corpus vectors, k=10, searched in one batch; recall@10 and @100 against
``IndexFlatIP``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import faiss
import numpy as np

from indexing.build import IndexConfig, build_index, recall_vs_exact
from tests.support.notes import clustered_vectors


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--types", nargs="+", default=["flat", "ivf", "hnsw"])
    args = ap.parse_args(argv)
    faiss.omp_set_num_threads(2)
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
            print(json.dumps(row), flush=True)
            del built
    return 0


if __name__ == "__main__":
    sys.exit(main())
