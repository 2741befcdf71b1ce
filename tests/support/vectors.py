"""A generated corpus as an :class:`indexing.source.VectorSource`: 10^7 vectors without the matrix.

Clustered like real embeddings (:func:`tests.support.notes.clustered_vectors`'s model: random
centres plus Gaussian noise, L2-normalised), generated block by block from ``(seed, block)``, so
any batch size streams the same rows in the same order, and a benchmark holds one block at a time.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

BLOCK = 65_536


class ClusteredSource:
    def __init__(self, n: int, d: int, clusters: int = 1000, noise: float = 0.5, seed: int = 0):
        self.num_vectors, self.dim = int(n), int(d)
        self.noise, self.seed = noise, seed
        self.centres = np.random.default_rng([seed, 0xC0FFEE]).standard_normal((clusters, d)).astype(np.float32)

    def block(self, b: int) -> np.ndarray:
        lo = b * BLOCK
        size = min(BLOCK, self.num_vectors - lo)
        rng = np.random.default_rng([self.seed, b])
        x = self.centres[rng.integers(0, len(self.centres), size)]
        x += self.noise * rng.standard_normal((size, self.dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x

    def note_ids(self, lo: int, hi: int) -> pa.Array:
        return pa.array([f"n{i:09d}" for i in range(lo, hi)], pa.string())

    def batches(self, rows: int = BLOCK):
        for b in range(-(-self.num_vectors // BLOCK)):
            x = self.block(b)
            for lo in range(0, len(x), rows):
                start = b * BLOCK + lo
                part = x[lo:lo + rows]
                yield self.note_ids(start, start + len(part)), part
