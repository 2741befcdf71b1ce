"""Text queries: embed a query as a note with the model the served snapshot was built
with, so text and corpus vectors live in the same space.

The encoder is loaded once per model id (a load takes seconds and the weights
hundreds of MB) and replaced only when a swap brings a snapshot whose manifest
names another model. Embedding runs under a lock: one forward pass at a time
keeps memory bounded and lets one request's texts form one batch.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)


class ModelUnavailable(RuntimeError):
    """The snapshot's model cannot be loaded here (missing directory, other model id): a 503, not bad input."""


class TextEncoder:
    """The NoteLLM encoder of the served snapshot's model, loaded lazily and swapped with the model id."""

    def __init__(self, device: str = "auto", precision: str = "auto", batch_size: int = 32):
        self.device, self.precision, self.batch_size = device, precision, batch_size
        self._lock = threading.Lock()
        self._encoder = None
        self._model_id: str | None = None
        self._bf16 = False

    @property
    def model_id(self) -> str | None:
        return self._model_id

    def _device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch
        return "cuda" if torch.cuda.is_available() else "cpu"

    def _load(self, model: Mapping) -> None:
        """Load ``model`` (the manifest's ``model`` block); called under the lock."""
        from notellm.encoder import NoteEncoder
        from notellm.precision import use_bf16

        path = Path(model.get("path") or "")
        if not path.is_dir():   # checked before torch is imported: a missing model answers fast
            raise ModelUnavailable(f"model {model.get('model_id')}: directory {path} does not exist here")
        try:
            encoder = NoteEncoder.load(path)
        except (OSError, ValueError) as exc:
            raise ModelUnavailable(f"model {model.get('model_id')} at {path}: cannot load it: {exc}") from exc
        if encoder.config.model_id != model.get("model_id"):
            raise ModelUnavailable(f"model at {path} is {encoder.config.model_id}, "
                                   f"the snapshot was built with {model.get('model_id')}")
        device = self._device()
        encoder.to(device)
        log.info("text encoder %s loaded from %s on %s", encoder.config.model_id, path, device)
        self._encoder, self._model_id = encoder, encoder.config.model_id
        self._bf16 = use_bf16(self.precision, device)

    def _ensure_locked(self, model: Mapping) -> None:
        if self._encoder is None or self._model_id != model.get("model_id"):
            self._encoder = None   # free the old weights before loading the new ones
            self._load(model)

    def ensure(self, manifest: Mapping) -> None:
        """Have the encoder of ``manifest``'s model loaded (no-op when it already is)."""
        with self._lock:
            self._ensure_locked(manifest.get("model") or {})

    def embed(self, manifest: Mapping, notes: Sequence[Mapping], dim: int) -> np.ndarray:
        """(n, dim) float32 embeddings of ``notes`` (title / content / hashtags) for ``manifest``'s model."""
        with self._lock:
            self._ensure_locked(manifest.get("model") or {})
            vectors = self._encoder.embed_notes(list(notes), batch_size=self.batch_size, autocast_bf16=self._bf16)
        if vectors.shape[1] != dim:
            raise ModelUnavailable(f"model {self._model_id} embeds into {vectors.shape[1]} dimensions, "
                                   f"the snapshot has {dim}")
        return vectors
