"""Batches of related pairs in which no note appears twice.

A note appearing twice in one GCL batch would be a false negative (its other
copy counts as a negative for its own partner), so :class:`UniqueNoteBatchSampler`
fills each global batch greedily from a seeded permutation of the pairs and
defers a pair whose note is already in the batch to a later batch of the same
epoch. Pairs still deferred at the end of an epoch, and a last incomplete
batch, are left for the next epoch's permutation (counted in
:attr:`EpochPlan.left_over`); the planner is :func:`notellm.batching.plan_epoch`,
shared with evaluation's baselines. Everything is a pure function of
(pairs, seed, epoch), so a resumed job sees the same batches; with W ranks
each global batch is split into W contiguous slices of ``batch_pairs / W``
pairs.
"""

from __future__ import annotations

from typing import Sequence

from notellm.batching import EpochPlan, plan_epoch


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
