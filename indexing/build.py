"""Building the FAISS index from a stream of note embeddings.

Metric: inner product over L2-normalised vectors, i.e. cosine similarity,
the score NoteLLM is trained with (s(a, b) = n_a . n_b, ||n|| = 1).

Phases (each timed in ``BuiltIndex.phases``), over a :class:`indexing.source.VectorSource`:

1. **choose**: the index_factory key under the memory budget (:mod:`indexing.index_key`);
2. **train**: on ``train_per_list * nlist`` sampled vectors (one streamed pass picks them);
3. **add**: the corpus streamed in batches of ``add_batch`` into the index; the faiss id of a
   vector is its position in the stream (no ``IndexIDMap2``: the IDS contract maps it back to
   the note id), and the content digest is hashed on the way (no ``tobytes`` of the matrix);
   IVF indexes get their direct map (faiss id -> list slot, for ``reconstruct``) built here, so
   it is written with the index and a reader does not rebuild it;
4. **tune**: search parameters (``nprobe`` and the HNSW quantizer's ``efSearch``, or HNSW
   ``efSearch``) through ``faiss.ParameterSpace``: cheapest first, the first that reaches
   ``tune_recall`` against the exact top-``tune_k`` of ``tune_queries`` sampled corpus vectors
   (computed by streaming the corpus once, :func:`indexing.exact.exact_knn`); when recall stops
   improving (< 0.001 per doubling) before the target, the cheapest setting on the plateau.

Peak memory: the index, the training sample and one batch; never the corpus twice.

With GPUs (faiss-gpu, ``faiss.get_num_gpus() > 0``, ``gpu=True``) IVF k-means runs on all GPUs
and the coarse assignment of each added batch uses the centroids sharded over all GPUs
(``shard=True``, not replicas); encoding and the HNSW quantizer stay on CPU.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import faiss
import numpy as np
import pyarrow as pa

from indexing.config import IndexConfig  # noqa: F401 (IndexConfig is defined there, once)
from indexing.exact import exact_knn, normalize, recall_vs_exact, sample_rows
from indexing.index_key import IndexChoice, choose_key, search_candidates
from indexing.source import ArraySource, ContentDigest, VectorSource, take_rows
from notellm.contracts import IDS

__all__ = ["BuiltIndex", "IndexConfig", "apply_search_params", "build_index", "normalize", "recall_vs_exact",
           "sample_rows"]

log = logging.getLogger(__name__)

METRIC = "inner_product"
PLATEAU = 0.001


@dataclasses.dataclass
class BuiltIndex:
    index: faiss.Index
    choice: IndexChoice
    params: dict                      # nlist, train_size, tuned values, tuning recall
    search_params: str                # ParameterSpace string, e.g. "nprobe=16,quantizer_efSearch=64"
    note_ids: pa.ChunkedArray         # row = faiss id
    content_sha256: str               # indexing.source.ContentDigest of the stream
    build_seconds: float
    on_gpu: bool
    phases: dict = dataclasses.field(default_factory=dict)

    @property
    def index_type(self) -> str:
        return self.choice.family

    @property
    def key(self) -> str:
        return self.choice.key

    @property
    def ids(self) -> pa.Table:
        """The IDS contract table (faiss_id, note_id)."""
        return pa.Table.from_arrays([pa.array(np.arange(len(self.note_ids), dtype=np.int64)), self.note_ids],
                                    schema=IDS.arrow_schema)

    @property
    def description(self) -> dict:
        return {"type": self.choice.family, "key": self.choice.key, "params": self.params,
                "search_params": self.search_params, "metric": METRIC,
                "memory": {"estimate_bytes": self.choice.estimate_bytes, "budget_bytes": self.choice.budget_bytes}}


def build_index(source: VectorSource | tuple, config: IndexConfig = IndexConfig()) -> BuiltIndex:
    """Choose, train, fill and tune an index over ``source`` (or a ``(note_ids, vectors)`` pair)."""
    if isinstance(source, tuple):
        source = ArraySource(*source)
    t0 = time.perf_counter()
    n, d = source.num_vectors, source.dim
    if n == 0:
        raise ValueError("cannot build an index over zero vectors")
    phases: dict = {}
    choice = choose_key(n, d, config)
    log.info("index key %s for %d x %d (estimate %s bytes, budget %d)", choice.key, n, d, choice.estimate_bytes,
             choice.budget_bytes)
    index = faiss.index_factory(d, choice.key, faiss.METRIC_INNER_PRODUCT)
    ivf = _configure(index, config)
    params: dict = {"nlist": int(ivf.nlist)} if ivf is not None else {}
    gpus = faiss.get_num_gpus() if config.gpu and ivf is not None else 0

    t = time.perf_counter()
    if not index.is_trained:
        size = config.train_per_list * (params.get("nlist") or 1)
        if ivf is None:
            size = min(n, 1 << 16)      # e.g. a PQ or SQ code without lists
        sample = normalize(take_rows(source, sample_rows(n, size, config.seed), config.add_batch))
        if gpus:
            ivf.clustering_index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatIP(ivf.d))
        index.train(sample)
        params["train_size"] = int(len(sample))
        del sample
    phases["train"] = time.perf_counter() - t

    t = time.perf_counter()
    digest, chunks = ContentDigest(), []
    assign = _gpu_assigner(ivf) if gpus else None
    for ids, vecs in source.batches(config.add_batch):
        x = normalize(vecs)
        if assign is not None:
            add_preassigned(index, ivf, x, assign)
        else:
            index.add(x)
        digest.update(ids, vecs)
        chunks.append(ids)
    if index.ntotal != n:
        raise ValueError(f"the source announced {n} vectors but streamed {index.ntotal}")
    if ivf is not None:
        ivf.make_direct_map()
    phases["add"] = time.perf_counter() - t

    t = time.perf_counter()
    search_params, tuned = tune(index, choice, source, config)
    params.update(tuned)
    phases["tune"] = time.perf_counter() - t
    note_ids = pa.chunked_array(chunks, pa.string()) if chunks else pa.chunked_array([], pa.string())
    return BuiltIndex(index, choice, params, search_params, note_ids, digest.hexdigest(),
                      time.perf_counter() - t0, bool(gpus), {k: round(v, 3) for k, v in phases.items()})


def _configure(index: faiss.Index, config: IndexConfig):
    """Seeds, efConstruction, no polysemous training; returns the IVF inside (or None)."""
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        ivf = None
    if ivf is not None:
        ivf = faiss.downcast_index(ivf)
        ivf.cp.seed = config.seed
        if hasattr(ivf, "do_polysemous_training"):
            ivf.do_polysemous_training = False   # only serves Hamming pre-filtering, which we do not use
        quantizer = faiss.downcast_index(ivf.quantizer)
        if hasattr(quantizer, "hnsw"):
            quantizer.hnsw.efConstruction = config.hnsw_ef_construction
        return ivf
    inner = faiss.downcast_index(index)
    if hasattr(inner, "hnsw"):
        inner.hnsw.efConstruction = config.hnsw_ef_construction
    return None


def _gpu_assigner(ivf):
    """Coarse assignment on all GPUs: the trained centroids in a flat IP index sharded over them."""
    centroids = ivf.quantizer.reconstruct_n(0, ivf.nlist)
    flat = faiss.IndexFlatIP(ivf.d)
    flat.add(centroids)
    options = faiss.GpuMultipleClonerOptions()
    options.shard = True
    gpu = faiss.index_cpu_to_all_gpus(flat, co=options)
    return lambda x: gpu.search(x, 1)[1].ravel()


def add_preassigned(index: faiss.Index, ivf, x: np.ndarray, assign) -> None:
    """Add normalised ``x`` with the coarse lists chosen by ``assign(vectors in the IVF's space)``
    (e.g. on GPUs) instead of the index's own quantizer; ids continue from ``ntotal``."""
    xt = x
    if isinstance(index, faiss.IndexPreTransform):
        for i in range(index.chain.size()):
            xt = index.chain.at(i).apply(xt)
    xt = np.ascontiguousarray(xt, dtype=np.float32)
    lists = np.ascontiguousarray(assign(xt), dtype=np.int64)
    ivf.add_core(len(xt), faiss.swig_ptr(xt), None, faiss.swig_ptr(lists))
    if index is not ivf:
        index.ntotal = ivf.ntotal


def apply_search_params(index: faiss.Index, spec: dict) -> None:
    """Set the manifest's search parameters on a loaded index (``spec`` is its ``index`` field).
    Snapshots from before index keys (an IndexIDMap2 around flat / IVF / HNSW) carry
    ``params.nprobe`` / ``params.efSearch`` instead of ``search_params``."""
    if "search_params" in spec:
        if spec["search_params"]:
            faiss.ParameterSpace().set_index_parameters(index, spec["search_params"])
        return
    params = spec.get("params", {})
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    if spec.get("type") == "ivf" and "nprobe" in params:
        faiss.extract_index_ivf(inner).nprobe = int(params["nprobe"])
    elif spec.get("type") == "hnsw" and "efSearch" in params:
        inner.hnsw.efSearch = int(params["efSearch"])


def tune(index: faiss.Index, choice: IndexChoice, source: VectorSource, config: IndexConfig
         ) -> tuple[str, dict]:
    """(ParameterSpace string, recorded values) per the module docstring."""
    n = source.num_vectors
    k = max(1, min(config.tune_k, n))
    candidates = search_candidates(choice.family, choice.nlist, k, "_HNSW" in choice.key)
    if candidates == [""]:
        return "", {}
    queries = normalize(take_rows(source, sample_rows(n, config.tune_queries, config.seed + 1), config.add_batch))
    exact = exact_knn(source, queries, k, config.add_batch)[1]
    space = faiss.ParameterSpace()
    tried: list[tuple[str, float]] = []
    for setting in candidates:
        space.set_index_parameters(index, setting)
        recall = recall_vs_exact(index.search(queries, k)[1], exact)
        log.info("tuning %s: recall@%d vs exact %.4f", setting, k, recall)
        tried.append((setting, recall))
        if recall >= config.tune_recall:
            break
        if len(tried) >= 3 and tried[-1][1] - tried[-3][1] < PLATEAU:
            break    # two doublings bought nothing: the codes, not the probes, limit recall
    reached = [s for s in tried if s[1] >= config.tune_recall]
    if reached:
        best = reached[0]
    else:
        top = max(r for _, r in tried)
        best = next(s for s in tried if s[1] >= top - PLATEAU)
    space.set_index_parameters(index, best[0])
    values = {name: int(v) for name, v in (kv.split("=") for kv in best[0].split(","))}
    return best[0], {**values, "tune_recall": round(best[1], 4), "tune_k": k, "tune_queries": int(len(queries))}
