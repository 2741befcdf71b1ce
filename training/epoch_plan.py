"""Unique-note batching on integer note indices: the epoch planner of the prepared data.

The same greedy as :func:`notellm.batching.plan_epoch` (the reference, shared with
evaluation's baselines), with the same seeded permutation, so for the same pairs in
the same order, ``batch_pairs``, seed and epoch it yields exactly the same batches
(tests/training/test_prepare.py compares them). What changes is the representation:
pairs are two int arrays of note row numbers, "note in the open batch" is one byte
per note (a ``bytearray``: the fastest flag array Python can index one element at a
time), and the permutation is read in chunks of ``chunk`` pairs turned into Python
ints, so memory stays ~ 8 bytes per pair (the permutation) + 4-8 per pair (the plan)
+ one byte per note, whatever the number of pairs. No strings, no per-pair tuples.

The loop itself stays sequential: the greedy is order-dependent by definition (each
pair's fate depends on every earlier decision, and the deferred pairs are retried
after every closed batch), so it cannot be vectorised without changing its result.
docs/benchmarks.md ("Epoch plan") has its speed.
"""

from __future__ import annotations

import numpy as np

CHUNK = 1 << 20


def index_dtype(n: int) -> np.dtype:
    """The smallest of int32 / int64 that holds indices below ``n``."""
    return np.dtype(np.int32) if n < 2 ** 31 else np.dtype(np.int64)


def plan_epoch_indices(src: np.ndarray, dst: np.ndarray, n_notes: int, batch_pairs: int, seed: int, epoch: int,
                       chunk: int = CHUNK) -> tuple[np.ndarray, int]:
    """(batches, left_over): an (n_batches, batch_pairs) array of pair indices and the count of
    pairs not placed this epoch; ``src[i]``, ``dst[i]`` are pair i's note indices (< ``n_notes``)."""
    if batch_pairs < 1:
        raise ValueError("batch_pairs must be >= 1")
    n_pairs = len(src)
    if len(dst) != n_pairs:
        raise ValueError(f"src has {n_pairs} pairs, dst {len(dst)}")
    order = np.random.default_rng([int(seed), int(epoch)]).permutation(n_pairs)
    size = batch_pairs
    out = np.empty((n_pairs // size, size), dtype=index_dtype(n_pairs))
    n_out = 0
    flags = bytearray(n_notes)              # 1 = the note is in the open batch
    cur: list[int] = []                     # the open batch's pair indices, in the order added
    cur_notes: list[int] = []               # and their notes (to clear the flags on close)
    wi: list[int] = []                      # deferred pairs (index, a, b), in the order deferred
    wa: list[int] = []
    wb: list[int] = []
    for start in range(0, n_pairs, chunk):
        idx = order[start:start + chunk]
        for i, x, y in zip(idx.tolist(), src[idx].tolist(), dst[idx].tolist()):
            if flags[x] or flags[y]:
                wi.append(i)
                wa.append(x)
                wb.append(y)
                continue
            flags[x] = flags[y] = 1
            cur.append(i)
            cur_notes.append(x)
            cur_notes.append(y)
            if len(cur) < size:
                continue
            out[n_out] = cur
            n_out += 1
            for n in cur_notes:
                flags[n] = 0
            cur, cur_notes = [], []
            if not wi:
                continue
            # retry the deferred pairs in the order deferred; batches may close on the way
            ki: list[int] = []
            ka: list[int] = []
            kb: list[int] = []
            for j, p, q in zip(wi, wa, wb):
                if flags[p] or flags[q]:
                    ki.append(j)
                    ka.append(p)
                    kb.append(q)
                    continue
                flags[p] = flags[q] = 1
                cur.append(j)
                cur_notes.append(p)
                cur_notes.append(q)
                if len(cur) == size:
                    out[n_out] = cur
                    n_out += 1
                    for n in cur_notes:
                        flags[n] = 0
                    cur, cur_notes = [], []
            wi, wa, wb = ki, ka, kb
    return out[:n_out], len(wi) + len(cur)
