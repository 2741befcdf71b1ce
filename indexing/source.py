"""Where the index build and the gates read vectors from: a stream, never one matrix.

A :class:`VectorSource` hands out the corpus in batches, in one fixed order
(faiss id = position in that order). The build streams it into the index, the
tuning and the gates compute exact neighbours of a few sampled queries by
streaming it again, and the snapshot digest is hashed as it streams: nothing
needs the whole matrix in memory, which at 10^8 x 128 fp32 is 51 GB.

Implementations: :class:`ArraySource` (vectors already in memory: tests, small
tools) and :class:`indexing.store.StoreSource` (the bucketed embedding store,
read bucket by bucket). Benchmarks add generated sources of the same shape.
"""

from __future__ import annotations

import hashlib
from typing import Iterator, Protocol, Sequence

import numpy as np
import pyarrow as pa

DEFAULT_BATCH_ROWS = 65_536


class VectorSource(Protocol):
    """The corpus as a re-iterable stream of ``(note ids, vectors)`` batches."""

    num_vectors: int
    dim: int

    def batches(self, rows: int = DEFAULT_BATCH_ROWS) -> Iterator[tuple[pa.Array, np.ndarray]]:
        """``(note ids as an Arrow string array, float32 (b, dim) vectors)`` with about ``rows`` rows
        each, in the same order on every call; the vectors need not be normalised."""
        ...

    def take(self, note_ids: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """``(ids found, their vectors)`` of a few notes (the gate's test notes), in input order."""
        ...


class ArraySource:
    """A :class:`VectorSource` over vectors already in memory (rows in ``note_ids`` order)."""

    def __init__(self, note_ids: Sequence[str] | pa.Array, vectors: np.ndarray):
        self.ids = note_ids if isinstance(note_ids, pa.Array) else pa.array(list(note_ids), pa.string())
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.vectors.ndim != 2:
            raise ValueError(f"vectors must be 2-D, got shape {self.vectors.shape}")
        if len(self.ids) != len(self.vectors):
            raise ValueError(f"{len(self.ids)} note ids for {len(self.vectors)} vectors")
        self.num_vectors, self.dim = self.vectors.shape

    def batches(self, rows: int = DEFAULT_BATCH_ROWS) -> Iterator[tuple[pa.Array, np.ndarray]]:
        for lo in range(0, self.num_vectors, rows):
            yield self.ids.slice(lo, rows), self.vectors[lo:lo + rows]

    def take(self, note_ids: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """(ids found, their vectors) in input order, missing ids left out (as ``StoreSource.take``)."""
        row_of = {nid: i for i, nid in enumerate(self.ids.to_pylist())}
        found = [nid for nid in note_ids if nid in row_of]
        return found, self.vectors[[row_of[nid] for nid in found]].reshape(len(found), self.dim)


def take_rows(source: VectorSource, rows: np.ndarray, batch_rows: int = DEFAULT_BATCH_ROWS) -> np.ndarray:
    """The vectors at the sorted row numbers ``rows`` (training and query samples), in one
    streaming pass: memory is the sample plus one batch."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) and np.any(np.diff(rows) < 0):
        raise ValueError("rows must be sorted")
    out = np.empty((len(rows), source.dim), np.float32)
    lo, filled = 0, 0
    for _, vecs in source.batches(batch_rows):
        hi = lo + len(vecs)
        a, b = np.searchsorted(rows, [lo, hi])
        out[a:b] = vecs[rows[a:b] - lo]
        filled += b - a
        lo = hi
        if filled == len(rows):
            break
    if filled != len(rows):
        raise ValueError(f"sample rows up to {rows[-1]} but the source holds {lo} vectors")
    return out


class ContentDigest:
    """The corpus digest, computed as it streams (batch sizes do not change it)::

        sha256( sha256(id_1 NUL id_2 NUL ... id_n NUL) || sha256(v_1 v_2 ... v_n) )

    ids as UTF-8, vectors as float32 little-endian bytes as stored (before normalisation).
    Equal digests mean the same ids in the same order with bit-identical vectors."""

    def __init__(self):
        self._ids = hashlib.sha256()
        self._vectors = hashlib.sha256()
        self.rows = 0

    def update(self, note_ids: pa.Array, vectors: np.ndarray) -> None:
        if len(note_ids) != len(vectors):
            raise ValueError(f"{len(note_ids)} note ids for {len(vectors)} vectors")
        if len(note_ids):
            self._ids.update(("\0".join(note_ids.to_pylist()) + "\0").encode("utf-8"))
            self._vectors.update(np.ascontiguousarray(vectors, dtype="<f4").tobytes())
        self.rows += len(vectors)

    def hexdigest(self) -> str:
        return hashlib.sha256(self._ids.digest() + self._vectors.digest()).hexdigest()
