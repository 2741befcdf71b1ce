"""Batches of related pairs in which no note appears twice (unique-note batching).

A note appearing twice in one in-batch-negatives batch would be a false
negative (its other copy counts as a negative for its own partner). One epoch
is planned greedily from a seeded permutation ``pi`` of the pair indices::

    for i in pi:
        if pair i shares a note with the open batch: defer i (append to D)
        else: add i; when the batch holds B pairs, close it and open a new one,
              then retry the deferred pairs D in the order deferred, adding
              each that fits (closing full batches on the way) and keeping
              the rest in D

Pairs still deferred at the end, and the last incomplete batch, are not
placed this epoch (``left_over``). ``pi = numpy.random.default_rng([seed,
epoch]).permutation(len(pairs))``, so a plan is a pure function of (pairs, B,
seed, epoch): a resumed job and a baseline trained on the same pairs see the
same batches. numpy only.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class EpochPlan:
    batches: list[list[int]]   # pair indices per batch, each batch exactly batch_pairs long
    left_over: int             # pairs not placed in this epoch


def plan_epoch(pairs: Sequence[tuple[str, str]], batch_pairs: int, seed: int, epoch: int) -> EpochPlan:
    """Greedy unique-note batching of a seeded permutation (see the module docstring)."""
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
            still = []
            for j in waiting:
                if len(current) < batch_pairs and try_add(j):
                    close_if_full()
                else:
                    still.append(j)
            waiting = still
    return EpochPlan(batches, len(waiting) + len(current))


def first_batches(pairs: Sequence[tuple[str, str]], batch_pairs: int, steps: int, seed: int
                  ) -> list[list[tuple[str, str]]]:
    """The first ``steps`` batches of epoch 0 of :func:`plan_epoch`, as pairs.

    One pass over the pairs: more steps than one epoch holds is refused."""
    plan = plan_epoch(pairs, batch_pairs, seed, 0)
    if len(plan.batches) < steps:
        raise ValueError(f"only {len(plan.batches)} full batches of {batch_pairs} pairs in {len(pairs)} pairs; "
                         f"{steps} steps requested")
    return [[pairs[i] for i in batch] for batch in plan.batches[:steps]]
