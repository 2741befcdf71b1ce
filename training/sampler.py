"""Batches of related pairs in which no note appears twice.

A note appearing twice in one GCL batch would be a false negative (its other
copy counts as a negative for its own partner), so :class:`UniqueNoteBatchSampler`
fills each global batch greedily from a seeded permutation of the pairs and
defers a pair whose note is already in the batch to a later batch of the same
epoch. Pairs still deferred at the end of an epoch, and a last incomplete
batch, are left for the next epoch's permutation (counted in
:attr:`EpochPlan.left_over`). Everything is a pure function of
(pairs, seed, epoch), so a resumed job sees the same batches; with W ranks
each global batch is split into W contiguous slices of ``batch_pairs / W``
pairs.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class EpochPlan:
    batches: list[list[int]]   # pair indices per global batch
    left_over: int             # pairs not placed in this epoch


def plan_epoch(pairs: Sequence[tuple[str, str]], batch_pairs: int, seed: int, epoch: int) -> EpochPlan:
    """Greedy unique-note batching of a seeded permutation (see module docstring)."""
    if batch_pairs < 1:
        raise ValueError("batch_pairs must be >= 1")
    order = np.random.default_rng([int(seed), int(epoch)]).permutation(len(pairs))
    batches: list[list[int]] = []
    waiting: list[int] = []
    current: list[int] = []
    notes: set[str] = set()

    def try_add(i: int) -> bool:
        a, b = pairs[i]
        if a in notes or b in notes:
            return False
        current.append(i)
        notes.update((a, b))
        return True

    def close_if_full() -> bool:
        nonlocal current, notes
        if len(current) == batch_pairs:
            batches.append(current)
            current, notes = [], set()
            return True
        return False

    for i in order.tolist():
        if not try_add(i):
            waiting.append(i)
            continue
        if close_if_full():
            # A fresh batch: deferred pairs go first, in the order they were deferred.
            still = []
            for j in waiting:
                if len(current) < batch_pairs and try_add(j):
                    close_if_full()  # a full batch starts the next one with the remaining deferred pairs
                else:
                    still.append(j)
            waiting = still
    return EpochPlan(batches, len(waiting) + len(current))


class UniqueNoteBatchSampler:
    """Global batches by step; ``local(step)`` is this rank's slice."""

    def __init__(self, pairs: Sequence[tuple[str, str]], batch_pairs: int, seed: int = 0,
                 world_size: int = 1, rank: int = 0):
        if batch_pairs % world_size:
            raise ValueError(f"batch_pairs={batch_pairs} must be divisible by the world size {world_size}")
        for i, (a, b) in enumerate(pairs):
            if a == b:
                raise ValueError(f"pair {i} relates note {a!r} to itself")
        self.pairs = list(pairs)
        self.batch_pairs = batch_pairs
        self.seed = seed
        self.world_size = world_size
        self.rank = rank
        self._plans: dict[int, EpochPlan] = {}
        self._counts: dict[int, int] = {}  # batches per epoch, kept for every epoch seen
        if not self.plan(0).batches:
            raise ValueError(f"{len(self.pairs)} pairs cannot fill one batch of {batch_pairs} pairs with "
                             "distinct notes; lower batch_pairs or add data")

    def plan(self, epoch: int) -> EpochPlan:
        if epoch not in self._plans:
            self._plans = {k: v for k, v in self._plans.items() if k >= epoch - 1}  # keep memory bounded
            self._plans[epoch] = plan_epoch(self.pairs, self.batch_pairs, self.seed, epoch)
            self._counts[epoch] = len(self._plans[epoch].batches)
        return self._plans[epoch]

    def _count(self, epoch: int) -> int:
        if epoch not in self._counts:
            self.plan(epoch)
        return self._counts[epoch]

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, batch index within the epoch) of global step ``step`` (0-based)."""
        epoch = 0
        while step >= self._count(epoch):
            step -= self._count(epoch)
            epoch += 1
        return epoch, step

    def global_batch(self, step: int) -> list[int]:
        epoch, index = self.position(step)
        return self.plan(epoch).batches[index]

    def local_slice(self, global_batch: Sequence[int]) -> list[int]:
        per_rank = self.batch_pairs // self.world_size
        return list(global_batch[self.rank * per_rank:(self.rank + 1) * per_rank])

    def steps_per_epoch(self, epoch: int = 0) -> int:
        return self._count(epoch)
