"""Note id <-> faiss id for a snapshot, without a Python dict or per-id objects.

Three arrays, written by the publisher beside ``ids.parquet`` and memory-mapped by readers
(``np.load(mmap_mode="r")``), so opening a 10^8-id snapshot reads nothing but headers::

    id_keys.npy   S<w>   the note ids' UTF-8 bytes, NUL-padded to the longest, sorted
    id_order.npy  int64  id_order[i] = faiss id of id_keys[i]
    id_pos.npy    int64  id_pos[f]   = position in id_keys of faiss id f (id_order's inverse)

lookup = binary search in id_keys then id_order; names = id_keys[id_pos[f]].
Snapshots written before these files get the same arrays built from ``ids.parquet``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ID_KEYS, ID_ORDER, ID_POS = "id_keys.npy", "id_order.npy", "id_pos.npy"
LOOKUP_FILES = (ID_KEYS, ID_ORDER, ID_POS)


class DuplicateNoteIds(ValueError):
    """The ids hold a note id twice (a snapshot must not)."""


def fixed_width(ids: pa.Array) -> np.ndarray:
    """The UTF-8 bytes of a string array as a numpy ``S<max bytes>`` array, built from the Arrow
    buffers in vectorised chunks (no Python str per id). Ids are compared as NUL-padded bytes, which
    orders them as Arrow and Python do for ids without NUL characters."""
    arr = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    arr = arr.cast(pa.large_string())
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], np.int64)[arr.offset:arr.offset + n + 1]
    data = arr.buffers()[2]
    data = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    width = max(1, int(lengths.max(initial=0)))
    out = np.zeros(n * width, np.uint8)
    step = max(1, (1 << 24) // width)          # ~16 MB of id bytes (and 2 x 128 MB of positions) per chunk
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        shift = np.repeat(np.arange(lo, hi, dtype=np.int64) * width - offsets[lo:hi], lengths[lo:hi])
        out[np.arange(offsets[lo], offsets[hi]) + shift] = data[offsets[lo]:offsets[hi]]
    return out.view(f"S{width}")


class NoteIdIndex:
    """The three arrays of the module docstring; ``order`` / ``pos`` None mean the identity
    (ids already sorted in faiss-id order)."""

    def __init__(self, keys: np.ndarray, order: np.ndarray | None, pos: np.ndarray | None):
        if order is not None and not (len(order) == len(pos) == len(keys)):
            raise ValueError(f"id lookup arrays disagree: {len(keys)} keys, {len(order)} order, {len(pos)} pos")
        self.keys, self.order, self.pos = keys, order, pos
        self.width = keys.dtype.itemsize

    @classmethod
    def from_ids(cls, ids: pa.Array | pa.ChunkedArray, source: str) -> "NoteIdIndex":
        """Sorted keys from the ids in faiss-id order; DuplicateNoteIds names ``source``."""
        ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
        keys = fixed_width(ids)
        if len(keys) < 2 or np.all(keys[1:] > keys[:-1]):
            return cls(keys, None, None)
        order = _sort_indices(ids, keys).astype(np.int64)
        keys = keys[order]
        dup = np.flatnonzero(keys[1:] == keys[:-1])
        if len(dup):
            raise DuplicateNoteIds(f"{source}: {len(dup)} duplicated note ids, e.g. "
                                   f"{np.char.decode(keys[dup[:5]], 'utf-8').tolist()}")
        pos = np.empty_like(order)
        pos[order] = np.arange(len(order), dtype=np.int64)
        return cls(keys, order, pos)

    @classmethod
    def load(cls, snap_dir: Path) -> "NoteIdIndex":
        """The arrays written by :meth:`save`, memory-mapped read-only."""
        keys, order, pos = (np.load(snap_dir / name, mmap_mode="r", allow_pickle=False) for name in LOOKUP_FILES)
        if keys.dtype.kind != "S" or order.dtype != np.int64 or pos.dtype != np.int64:
            raise ValueError(f"{snap_dir}: id lookup arrays have dtypes {keys.dtype}, {order.dtype}, {pos.dtype}")
        return cls(keys, order, pos)

    def save(self, out_dir: Path) -> tuple[str, ...]:
        """Write the three files (the identity written out, so readers always map the same layout)."""
        n = len(self.keys)
        ident = np.arange(n, dtype=np.int64)
        for name, arr in zip(LOOKUP_FILES, (self.keys, self.order if self.order is not None else ident,
                                             self.pos if self.pos is not None else ident)):
            np.save(out_dir / name, np.ascontiguousarray(arr), allow_pickle=False)
        return LOOKUP_FILES

    @property
    def ids(self) -> pa.Array:
        """The note ids in faiss-id order as an Arrow array (built on demand: O(n))."""
        keys = self.keys if self.pos is None else self.keys[np.asarray(self.pos)]
        return pa.array(np.char.decode(keys, "utf-8"), pa.string())

    def __len__(self) -> int:
        return len(self.keys)

    def lookup(self, note_ids: Sequence[str]) -> np.ndarray:
        """int64 faiss ids, -1 where absent (vectorised binary search)."""
        encoded = [str(s).encode("utf-8") for s in note_ids]
        if not encoded or not len(self.keys):
            return np.full(len(encoded), -1, np.int64)
        fits = np.fromiter((len(b) <= self.width for b in encoded), bool, len(encoded))
        q = np.array(encoded, dtype=f"S{self.width}")   # longer ids are truncated here; `fits` drops them
        pos = np.minimum(np.searchsorted(self.keys, q), len(self.keys) - 1)
        hit = fits & (self.keys[pos] == q)
        fid = pos if self.order is None else self.order[pos]
        return np.where(hit, fid, -1).astype(np.int64)

    def names(self, fids: np.ndarray) -> list[list]:
        """Note ids of a (q, k) array of faiss ids; None where the id is negative (no result)."""
        fids = np.atleast_2d(fids)
        safe = np.where(fids >= 0, fids, 0).ravel()
        keys = self.keys[safe if self.pos is None else self.pos[safe]]
        flat = np.char.decode(keys, "utf-8").astype(object)
        flat[fids.ravel() < 0] = None
        return flat.reshape(fids.shape).tolist()


def _sort_indices(ids: pa.Array, keys: np.ndarray) -> np.ndarray:
    """Arrow's sort (fast, C++) when its order agrees with the NUL-padded bytes, else numpy's."""
    perm = pc.sort_indices(ids).to_numpy()
    sorted_keys = keys[perm]
    return perm if np.all(sorted_keys[1:] >= sorted_keys[:-1]) else np.argsort(keys, kind="stable")
