"""Building the FAISS index over note embeddings.

Metric: inner product over L2-normalised vectors, i.e. cosine similarity,
the score NoteLLM is trained with (s(a, b) = n_a . n_b, ||n|| = 1).

Index type from the corpus size n (``IndexConfig.index_type='auto'``):

* n <= ``flat_max`` (100k): ``IndexFlatIP``, exact (~300 queries/s at 100k x 128
  on 2 cores, batch search).
* above: ``IndexIVFFlat`` with nlist = 4 * sqrt(n) (rounded), trained on at
  most 64 * nlist sampled vectors, nprobe tuned so that recall@K against exact
  search on sample queries reaches ``tune_recall``.
* ``hnsw`` (``IndexHNSWFlat``, M=32, efSearch tuned the same way) only when
  asked for: measured here (docs/benchmarks.md) IVF beat it at both 10^5 and
  10^6 vectors on build time, queries/s and recall.

Every index is wrapped in ``IndexIDMap2`` and filled with ``add_with_ids``;
the int64 id of a vector is its row in note_id order, and the ids table
(IDS contract) maps it back to the note id. With GPUs
(``faiss.get_num_gpus() > 0``, faiss-gpu) flat and IVF indexes are trained and
filled on all GPUs (``index_cpu_to_all_gpus``) and copied back with
``index_gpu_to_cpu`` before writing; HNSW always builds on CPU.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time

import faiss
import numpy as np
import pyarrow as pa

from indexing.config import INDEX_TYPES, IndexConfig  # noqa: F401 (IndexConfig is defined there, once)
from notellm.contracts import IDS

log = logging.getLogger(__name__)

METRIC = "inner_product"


def choose_index_type(n: int, config: IndexConfig) -> str:
    if config.index_type != "auto":
        return config.index_type
    return "flat" if n <= config.flat_max else "ivf"


def default_nlist(n: int) -> int:
    """nlist ~ 4 * sqrt(n), at least 1 and at most n / 39 (FAISS wants >= 39 training points per list)."""
    return int(max(1, min(round(4 * math.sqrt(n)), n // 39 or 1)))


def normalize(vectors: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(vectors, dtype=np.float32).copy()
    faiss.normalize_L2(x)
    return x


@dataclasses.dataclass
class BuiltIndex:
    index: faiss.Index
    index_type: str
    params: dict
    ids: pa.Table                     # IDS contract
    build_seconds: float
    on_gpu: bool

    @property
    def description(self) -> dict:
        return {"type": self.index_type, "params": self.params, "metric": METRIC}


def ids_table(note_ids) -> pa.Table:
    return pa.Table.from_arrays([pa.array(np.arange(len(note_ids), dtype=np.int64)),
                                 pa.array(list(note_ids), pa.string())], schema=IDS.arrow_schema)


def build_index(note_ids, vectors: np.ndarray, config: IndexConfig = IndexConfig()) -> BuiltIndex:
    """Build, fill and tune an index over ``vectors`` (rows in ``note_ids`` order)."""
    t0 = time.perf_counter()
    x = normalize(vectors)
    n, d = x.shape
    if n == 0:
        raise ValueError("cannot build an index over zero vectors")
    if len(note_ids) != n:
        raise ValueError(f"{len(note_ids)} note ids for {n} vectors")
    kind = choose_index_type(n, config)
    ids = np.arange(n, dtype=np.int64)
    params: dict = {}
    if kind == "flat":
        base = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        base = faiss.IndexHNSWFlat(d, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        base.hnsw.efConstruction = config.hnsw_ef_construction
        params.update(M=config.hnsw_m, efConstruction=config.hnsw_ef_construction)
    else:
        nlist = config.nlist or default_nlist(n)
        quantizer = faiss.IndexFlatIP(d)
        base = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        base.cp.seed = config.seed
        params.update(nlist=nlist)
    index = faiss.IndexIDMap2(base)

    on_gpu = config.gpu and kind != "hnsw" and faiss.get_num_gpus() > 0
    work = faiss.index_cpu_to_all_gpus(index) if on_gpu else index
    if kind == "ivf":
        sample = sample_rows(n, config.train_per_list * params["nlist"], config.seed)
        work.train(x[sample])
        params["train_size"] = int(len(sample))
    work.add_with_ids(x, ids)
    if on_gpu:
        index = faiss.index_gpu_to_cpu(work)
    if kind == "ivf":
        params["nprobe"] = tune_nprobe(index, x, config)
    elif kind == "hnsw":
        params["efSearch"] = tune_ef_search(index, x, config)
    return BuiltIndex(index, kind, params, ids_table(note_ids), time.perf_counter() - t0, on_gpu)


def sample_rows(n: int, size: int, seed: int) -> np.ndarray:
    """Sorted row numbers of a uniform sample of ``size`` of ``n`` rows without
    replacement (all rows when ``size >= n``); the same ``seed`` gives the same
    sample. Used for the IVF training set, the tuning queries and the gate's
    queries (each with its own seed, so they are different samples)."""
    if size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def exact_neighbors(x: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x)
    return flat.search(queries, k)[1]


def recall_vs_exact(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean over queries of |approx top-K  intersect  exact top-K| / K."""
    k = exact_ids.shape[1]
    hits = sum(len(np.intersect1d(a[a >= 0], e)) for a, e in zip(approx_ids, exact_ids))
    return hits / (k * len(exact_ids))


def set_search_param(index: faiss.Index, name: str, value: int) -> None:
    """Set nprobe / efSearch on the index inside an IndexIDMap2."""
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    if name == "nprobe":
        faiss.extract_index_ivf(inner).nprobe = int(value)
    elif name == "efSearch":
        inner.hnsw.efSearch = int(value)
    else:
        raise ValueError(name)


def apply_search_params(index: faiss.Index, index_type: str, params: dict) -> None:
    if index_type == "ivf" and "nprobe" in params:
        set_search_param(index, "nprobe", params["nprobe"])
    elif index_type == "hnsw" and "efSearch" in params:
        set_search_param(index, "efSearch", params["efSearch"])


def _tune(index, x, config: IndexConfig, name: str, candidates) -> int:
    n = x.shape[0]
    k = max(1, min(config.tune_k, n))
    q = x[sample_rows(n, config.tune_queries, config.seed + 1)]
    exact = exact_neighbors(x, q, k)
    best = candidates[-1]
    for value in candidates:
        set_search_param(index, name, value)
        r = recall_vs_exact(index.search(q, k)[1], exact)
        log.info("tuning %s=%d: recall@%d vs exact %.4f", name, value, k, r)
        if r >= config.tune_recall:
            best = value
            break
    set_search_param(index, name, best)
    return int(best)


def tune_nprobe(index, x, config: IndexConfig) -> int:
    nlist = faiss.extract_index_ivf(faiss.downcast_index(index.index)).nlist
    cands = sorted({min(nlist, 2 ** i) for i in range(0, int(math.log2(max(nlist, 1))) + 2)})
    return _tune(index, x, config, "nprobe", cands)


def tune_ef_search(index, x, config: IndexConfig) -> int:
    k = max(1, min(config.tune_k, x.shape[0]))
    cands = sorted({max(k, v) for v in (16, 32, 64, 128, 256, 512, 1024)})
    return _tune(index, x, config, "efSearch", cands)
