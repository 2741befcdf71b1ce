"""Settings of the indexing stage, each defined once (:mod:`notellm.config`).

* Engine settings, used by the library code and the CLI alike:
  :class:`EmbedConfig` (the embedding run), :class:`IndexConfig` (index key and
  search-parameter tuning, as data: autofaiss's idea), :class:`GateConfig` (the
  quality gate before publishing) and :class:`RetentionConfig` (snapshots kept).
* One config per ``python -m indexing.cli`` subcommand (``*Args``), composed
  from the engine settings and a few shared groups, so every engine field is
  also a flag (``--index-type``, ``--tune-recall``, ``--min-ann-recall`` ...).

Standard library and :mod:`notellm.config` only: the nightly DAG reads the
gate and retention defaults from here at parse time
(``notellm.config.defaults(GateConfig)``), so they are written nowhere else.

Invalid values raise :class:`notellm.config.ConfigError` (a ``ValueError``;
the command contract maps it to exit 2, bad input) when a config is built.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from pathlib import Path

from notellm.config import ConfigError, option
from notellm.precision import PRECISIONS


class Settings:
    """Mixin: building a config runs the ``_check`` of every class it is made of."""

    def __post_init__(self) -> None:
        for klass in reversed(type(self).__mro__):
            check = vars(klass).get("_check")
            if check is not None:
                check(self)


def _positive(cfg, *names: str) -> None:
    bad = [n for n in names if getattr(cfg, n) is not None and getattr(cfg, n) <= 0]
    if bad:
        raise ConfigError(f"{', '.join(bad)} must be positive")


def _fraction(cfg, *names: str) -> None:
    bad = [n for n in names if not 0.0 <= getattr(cfg, n) <= 1.0]
    if bad:
        raise ConfigError(f"{', '.join(bad)} must lie in [0, 1]")


# --------------------------------------------------------------------------- engine settings


@dataclasses.dataclass
class EmbedConfig(Settings):
    """Knobs of an embedding run (see :mod:`indexing.embed`, :mod:`indexing.store`)."""

    num_buckets: int | str = option("auto", help="hash buckets of a new store (bucket = FNV-1a-64(note_id) mod "
                                                 "this); auto = next power of two of notes / 65,536, in "
                                                 "[16, 4096]. Fixed at creation: an existing store keeps its "
                                                 "count, a different explicit count is refused (rebuild)")
    compact_fraction: float = option(0.25, help="a bucket gets a new base segment (its deltas folded in) once "
                                                "its delta rows would exceed this fraction of its base rows")
    max_batch_tokens: int = option(8192, help="padded tokens per forward pass (longest prompt x notes); "
                                              "batches are cut per bucket, longest prompts first")
    max_batch_notes: int = option(256, help="notes per forward pass at most (short prompts)")
    precision: str = option("auto", choices=PRECISIONS,
                            help="auto = bf16 weights on GPU, bf16 autocast on CPUs with native bf16 "
                                 "(AVX512-BF16/AMX), else fp32")
    incremental: bool = option(True, help="reuse the stored vectors of unchanged notes, write only deltas; "
                                          "--no-incremental (or --full) re-embeds every note into new base "
                                          "segments (and resumes its own interrupted run)")
    progress: bool = option(True, help="show a progress bar (notes/s) on stderr")

    def _check(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if isinstance(self.num_buckets, str) and self.num_buckets.strip().isdigit():
            self.num_buckets = int(self.num_buckets)
        if self.num_buckets != "auto" and not (isinstance(self.num_buckets, int)
                                               and not isinstance(self.num_buckets, bool)
                                               and 1 <= self.num_buckets <= 65_536):
            raise ConfigError(f"num_buckets must be 'auto' or an integer in 1..65536, got {self.num_buckets!r}")
        _positive(self, "max_batch_tokens", "max_batch_notes", "compact_fraction")


@dataclasses.dataclass
class IndexConfig(Settings):
    """Index key and search parameters, as data (see :mod:`indexing.index_key`, :mod:`indexing.build`)."""

    index_key: str = option("auto", help="auto = the most accurate index that fits --max-index-memory (exact Flat "
                                         "up to --flat-max vectors); a shorthand (flat, ivf, sq8, pq, hnsw); or "
                                         "any FAISS index_factory string, e.g. 'IVF4096_HNSW32,SQ8'")
    max_index_memory: str = option("16GB", help="memory budget of the index a service holds (bytes, or with a "
                                                "KB/MB/GB/TB suffix, 1 GB = 2^30 bytes): auto picks the most "
                                                "accurate key whose estimate fits; an explicit key over it is "
                                                "refused")
    flat_max: int = option(100_000, help="largest corpus the auto key serves with an exact Flat index")
    hnsw_m: int = option(32, help="HNSW graph degree M (HNSW keys and the IVF coarse quantizer)")
    hnsw_ef_construction: int = option(40, help="HNSW efConstruction")
    nlist: int | None = option(None, help="IVF lists (null: 4 * sqrt(n), at most n / 39)")
    train_per_list: int = option(64, help="IVF training sample per list, 30..256 (the sample is train_per_list "
                                          "* nlist vectors, the FAISS guideline)")
    add_batch: int = option(65_536, help="vectors streamed from the store into the index per add() call")
    tune_recall: float = option(0.97, help="recall@tune_k vs exact search that nprobe / efSearch tuning aims for; "
                                           "a bit above the gate's min_ann_recall so the gate has slack")
    tune_k: int = option(100, help="K of the tuning recall")
    tune_queries: int = option(200, help="sampled corpus vectors used as tuning queries (their exact neighbours "
                                         "come from one streamed pass over the corpus)")
    gpu: bool = option(True, help="with GPUs visible to FAISS: k-means training and coarse assignment on all "
                                  "GPUs, centroids sharded over them (--no-gpu: CPU); encoding stays on CPU")
    seed: int = option(1234, help="seed of the IVF training sample, k-means and the tuning queries")

    def _check(self) -> None:
        from indexing.index_key import check_key  # FAISS-free; a misspelt key is refused before any work
        check_key(self.index_key)
        parse_bytes(self.max_index_memory)
        _positive(self, "flat_max", "hnsw_m", "hnsw_ef_construction", "nlist", "tune_k", "tune_queries",
                  "add_batch")
        if not 30 <= self.train_per_list <= 256:
            raise ConfigError(f"train_per_list must lie in 30..256 (FAISS guideline), got {self.train_per_list}")
        _fraction(self, "tune_recall")

    @property
    def memory_budget(self) -> int:
        return parse_bytes(self.max_index_memory)


_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MB": 1 << 20,
          "MIB": 1 << 20, "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30, "T": 1 << 40, "TB": 1 << 40, "TIB": 1 << 40}


def parse_bytes(text: str | int) -> int:
    """``"1GB"`` -> 2^30; plain integers are bytes. ConfigError on anything else."""
    if isinstance(text, int):
        value = text
    else:
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
        if not m or m.group(2).upper() not in _UNITS:
            raise ConfigError(f"max_index_memory {text!r} is not a size like 512MB, 16GB or 1073741824")
        value = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if value <= 0:
        raise ConfigError(f"max_index_memory must be positive, got {text!r}")
    return value


@dataclasses.dataclass
class GateConfig(Settings):
    """The quality gate a new index passes before it is published (see :mod:`indexing.gate`)."""

    min_ann_recall: float = option(0.95, help="floor of the ANN index's recall@ann_k against exact search")
    ann_k: int = option(100, help="K of the ANN-vs-exact recall")
    ann_queries: int = option(500, help="sampled corpus vectors used as ANN-vs-exact queries")
    recall_k: int = option(100, help="K of the related-note Recall@K compared against the live snapshot")
    recall_ks: tuple[int, ...] = option((10, 50, 100, 1000), help="related-note Recall@K values recorded in "
                                                                  "the manifest")
    max_recall_drop: float = option(0.02, help="largest allowed absolute drop of Recall@recall_k below the "
                                               "live snapshot's on the test pairs")
    gate_seed: int = option(99, help="seed of the ANN-vs-exact query sample (differs from the tuning sample)")

    def _check(self) -> None:
        _fraction(self, "max_recall_drop")   # min_ann_recall above 1 refuses every index (a test of the gate)
        if not self.min_ann_recall >= 0:   # written so that NaN fails
            raise ConfigError("min_ann_recall must be >= 0")
        _positive(self, "ann_k", "ann_queries", "recall_k")


@dataclasses.dataclass
class RetentionConfig(Settings):
    """How many published snapshots stay on disk (see :func:`indexing.publish.retention`)."""

    keep: int = option(7, help="published snapshots to retain (the one CURRENT names is never deleted)")

    def _check(self) -> None:
        if self.keep < 1:
            raise ConfigError("keep must be >= 1")


def pick(cls: type, cfg) -> object:
    """The ``cls`` part of a composed config: ``pick(IndexConfig, publish_args)``."""
    return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls) if f.init})


# --------------------------------------------------------------------------- shared CLI groups


@dataclasses.dataclass(kw_only=True)
class ModelArgs(Settings):
    model: Path | None = option(None, help="NoteLLM model directory (default: the approved model of "
                                           "--models-root)")
    models_root: Path | None = option(None, help="model registry root holding APPROVED.json")


@dataclasses.dataclass(kw_only=True)
class StoreArgs(Settings):
    notes: Path = option(help="notes Parquet (NOTES contract), e.g. <root>/notes/notes.parquet")
    emb_root: Path = option(help="embedding store root (one folder per model id)")


@dataclasses.dataclass(kw_only=True)
class SnapshotArgs(Settings):
    snapshot_root: Path = option(help="snapshot root (holds snapshots/ and snapshots/CURRENT)")


@dataclasses.dataclass(kw_only=True)
class QueryArgs(SnapshotArgs):
    k: int = option(10, help="results to return (-k N works too)")
    notes: Path | None = option(None, help="notes Parquet, to add each result's title")
    name: str | None = option(None, help="snapshot directory name to query (default: the one CURRENT names)")

    def _check(self) -> None:
        _positive(self, "k")


# --------------------------------------------------------------------------- one config per subcommand
# (fields come in reverse order of the bases: the model and the store first in --help)


@dataclasses.dataclass(kw_only=True)
class EmbedArgs(EmbedConfig, StoreArgs, ModelArgs):
    """Embed the notes into the per-model embedding store (incremental by default).

    Under ``torchrun`` (env WORLD_SIZE > 1) the ranks form a process group (gloo on CPU, nccl on GPU):
    bucket b is embedded by rank b % WORLD_SIZE on cuda:LOCAL_RANK, rank 0 finalises and prints."""

    num_procs: int = option(1, help="local worker processes forming one process group (one per GPU, or CPU "
                                    "threads split between them); ignored under torchrun")
    rank: int | None = option(None, help="externally launched worker without a process group: its rank (with "
                                         "--world-size; run `embed --finalize` once all have finished)")
    world_size: int | None = option(None, help="externally launched workers without a process group (with --rank)")
    finalize: bool = option(False, help="only check every bucket of an externally launched multi-worker run "
                                        "against the notes and mark the store complete")

    def _check(self) -> None:
        _positive(self, "num_procs", "world_size")
        if (self.rank is None) != (self.world_size is None):
            raise ConfigError("--rank and --world-size go together")
        if self.rank is not None and not 0 <= self.rank < self.world_size:
            raise ConfigError(f"rank {self.rank} outside a world of size {self.world_size}")


@dataclasses.dataclass(kw_only=True)
class BuildArgs(IndexConfig, StoreArgs, ModelArgs):
    """Build an index from the stored embeddings into --out (nothing is published)."""

    out: Path = option(help="output directory: index.faiss, ids.parquet, build.json")


@dataclasses.dataclass(kw_only=True)
class PublishArgs(SnapshotArgs, RetentionConfig, GateConfig, IndexConfig, EmbedConfig, StoreArgs, ModelArgs):
    """Embed + build + gate + publish in one go (the nightly DAG task)."""

    num_procs: int = option(1, help="local embedding worker processes (one per GPU, or CPU)")
    embed: bool = option(True, help="embed first; --no-embed indexes the finalised store as an earlier "
                                    "`embed` (e.g. under torchrun on all GPUs) left it")
    date: str | None = option(None, help="snapshot date YYYY-MM-DD (default: today, UTC)")
    test_pairs: Path | None = option(None, help="PAIRS Parquet (file or dt= folder) for the related-note "
                                                "Recall@K gate; needs --pool")
    pool: Path | None = option(None, help="POOL Parquet for the Recall@K gate")

    def _check(self) -> None:
        _positive(self, "num_procs")
        if self.date is not None:
            try:
                dt.date.fromisoformat(self.date)
            except ValueError:
                raise ConfigError(f"date {self.date!r} is not YYYY-MM-DD") from None
        if self.test_pairs is not None and self.pool is None:
            raise ConfigError("--test-pairs needs --pool")


@dataclasses.dataclass(kw_only=True)
class RollbackArgs(SnapshotArgs):
    """Point CURRENT at an earlier snapshot (verified completely first)."""

    to: str = option(help="snapshot directory name, e.g. 2026-11-24-1a2b3c4d")


@dataclasses.dataclass(kw_only=True)
class InfoArgs(SnapshotArgs):
    """A snapshot's manifest (CURRENT's by default) and the list of snapshots."""

    name: str | None = option(None, help="snapshot directory name (default: the one CURRENT names)")
    verify: bool = option(True, help="check every file's sha256 against the manifest (--no-verify: sizes only)")


@dataclasses.dataclass(kw_only=True)
class NeighborsArgs(QueryArgs):
    """The nearest notes of a note in the live snapshot (the note itself excluded)."""

    note_id: str = option(help="the note whose neighbours to return")


@dataclasses.dataclass(kw_only=True)
class SearchArgs(QueryArgs):
    """Embed a text as a note with the snapshot's model and search the live snapshot."""

    text: str = option(help="embedded as a note whose title is the text")
    content: str = option("", help="optional note content")
    hashtags: str = option("", help="comma-separated hashtags")
