"""The quality report's cache of computed systems: ``<work>/systems/<name>/``
holds ``scores.npy`` (pool x pool) and ``result.json``, valid while the key
(every parameter the system depends on, and the test set's fingerprint) matches."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from notellm.files import atomic_path, atomic_write_text


def key_digest(key: dict) -> str:
    """16 hex digits of the sha256 of ``key`` as sorted JSON: names run folders and validates cache entries."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


class SystemCache:
    """``<root>/<name>/``: scores.npy + result.json, valid while its key matches."""

    def __init__(self, root: Path):
        self.root = root

    def load(self, name: str, key: dict) -> tuple[np.ndarray, dict] | None:
        d = self.root / name
        try:
            result = json.loads((d / "result.json").read_text())
        except FileNotFoundError:
            return None
        if result.get("key_digest") != key_digest(key):
            return None
        return np.load(d / "scores.npy"), result

    def save(self, name: str, key: dict, scores: np.ndarray, result: dict) -> None:
        """The scores first, then result.json (the validity marker), each written atomically."""
        d = self.root / name
        with atomic_path(d / "scores.npy") as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, scores.astype(np.float32))
        result = {**result, "key": key, "key_digest": key_digest(key)}
        atomic_write_text(d / "result.json", json.dumps(result, indent=2, default=str))
