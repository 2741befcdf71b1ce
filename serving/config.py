"""Settings of the retrieval service, defined once (:mod:`notellm.config`): every
field is a ``python -m serving`` flag, and :func:`serving.app.create_app` takes
the same dataclass, so tests and the command line configure it identically.

Standard library and :mod:`notellm.config` only (no FastAPI, FAISS or torch here).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from notellm.config import ConfigError, option
from notellm.precision import PRECISIONS

MMAP_MODES = ("auto", "on", "off")
DEVICES = ("auto", "cpu", "cuda")


@dataclasses.dataclass
class ServeConfig:
    """Serve the live index snapshot of --snapshot-root over HTTP (FastAPI + uvicorn)."""

    snapshot_root: Path = option(help="index root holding snapshots/CURRENT (what indexing.cli publish writes)")
    host: str = option("127.0.0.1", help="address to bind; loopback by default, put a proxy in front to expose it")
    port: int = option(8000, help="TCP port; 0 picks a free one (the bound port is logged and in the result line)")
    poll_s: float = option(5.0, help="seconds between checks of CURRENT for a newly published snapshot")
    verify: bool = option(True, help="verify every file's sha256 before a snapshot is served (refuse corrupted ones)")
    verify_in_background: bool = option(False, help="keep serving the old snapshot while the new one is verified "
                                                    "(default: verification happens before the swap anyway)")
    mmap: str = option("auto", choices=MMAP_MODES,
                       help="memory-map the index where its type allows (auto), always (on) or never (off)")
    max_batch: int = option(256, help="most note ids, vectors or texts in one request; larger ones get 413")
    max_k: int = option(1000, help="largest k a request may ask for; k outside 1..max_k gets 422")
    default_k: int = option(10, help="k when a request does not give one")
    omp_threads: int = option(1, help="FAISS OpenMP threads per request: 1 suits many concurrent small queries "
                                      "(the request threadpool is the parallelism); raise it for large batches")
    text_device: str = option("auto", choices=DEVICES,
                              help="device of the text encoder for /search/text (auto: cuda when available)")
    text_precision: str = option("auto", choices=PRECISIONS,
                                 help="text encoder precision (auto: bf16 on CUDA or CPUs with native bf16)")
    text_batch_size: int = option(32, help="texts per encoder forward pass in /search/text")
    preload_text_model: bool = option(False, help="load the snapshot's model at start instead of on the first "
                                                  "/search/text request (slower start, no first-query stall)")
    log_level: str = option("info", choices=("critical", "error", "warning", "info", "debug"),
                            help="uvicorn's log level (access lines at info)")

    def validate(self) -> None:
        positive = [n for n in ("max_batch", "max_k", "default_k", "omp_threads", "text_batch_size")
                    if getattr(self, n) < 1]
        if positive:
            raise ConfigError(f"{', '.join(positive)} must be at least 1")
        if self.poll_s <= 0:
            raise ConfigError("poll_s must be positive")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is not in 0..65535")
        if self.default_k > self.max_k:
            raise ConfigError(f"default_k {self.default_k} exceeds max_k {self.max_k}")
