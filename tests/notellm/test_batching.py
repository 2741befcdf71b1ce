"""notellm.batching: no note twice in a batch, deterministic, deferred pairs placed later."""

from __future__ import annotations

import numpy as np
import pytest

from notellm.batching import first_batches, plan_epoch


def _pairs(n=40):
    return [(f"n{i}", f"n{(i * 7 + 1) % n}") for i in range(n)] + [("n0", "n1"), ("n0", "n2")]


def test_no_note_twice_and_every_pair_placed_at_most_once():
    pairs = _pairs()
    plan = plan_epoch(pairs, batch_pairs=4, seed=1, epoch=0)
    placed = [i for b in plan.batches for i in b]
    assert len(placed) == len(set(placed))
    assert len(placed) + plan.left_over == len(pairs)
    for b in plan.batches:
        ids = [n for i in b for n in pairs[i]]
        assert len(b) == 4 and len(ids) == len(set(ids))


def test_hand_traced_plan():
    # B = 2; permutation of default_rng([0, 0]) over 4 pairs, traced by hand below
    pairs = [("a", "b"), ("a", "c"), ("d", "e"), ("c", "f")]
    order = np.random.default_rng([0, 0]).permutation(4).tolist()
    expected, current, notes, waiting = [], [], set(), []
    for i in order:                           # the greedy rule of the module docstring, written out
        if set(pairs[i]) & notes:
            waiting.append(i)
            continue
        current.append(i)
        notes |= set(pairs[i])
        if len(current) == 2:
            expected.append(current)
            current, notes, still = [], set(), []
            for j in waiting:
                if not set(pairs[j]) & notes:
                    current.append(j)
                    notes |= set(pairs[j])
                    if len(current) == 2:
                        expected.append(current)
                        current, notes = [], set()
                else:
                    still.append(j)
            waiting = still
    plan = plan_epoch(pairs, 2, 0, 0)
    assert plan.batches == expected and plan.left_over == len(waiting) + len(current)


def test_deterministic_per_seed_and_epoch():
    pairs = _pairs()
    assert plan_epoch(pairs, 4, 3, 0) == plan_epoch(pairs, 4, 3, 0)
    assert plan_epoch(pairs, 4, 3, 0).batches != plan_epoch(pairs, 4, 3, 1).batches
    with pytest.raises(ValueError):
        plan_epoch(pairs, 0, 0, 0)


def test_first_batches_as_pairs_and_refuses_more_than_an_epoch():
    pairs = _pairs()
    batches = first_batches(pairs, batch_pairs=4, steps=8, seed=1)
    assert len(batches) == 8
    assert batches == [[pairs[i] for i in b] for b in plan_epoch(pairs, 4, 1, 0).batches[:8]]
    with pytest.raises(ValueError, match="full batches"):
        first_batches(pairs[:5], batch_pairs=4, steps=3, seed=1)
