"""Finite or refused: NaN and Inf never reach a ranking, a gate or a checkpoint.

A diverged model embeds notes as NaN. NaN scores compare false with
everything, so a ranking over them puts every target first (Recall@K = 1.0)
and a gate written as ``new < floor`` lets them through. Every consumer of
vectors, losses or metrics therefore checks them here first, and every gate
comparison is written so that NaN fails (:func:`at_least`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from notellm.cli import Diverged


class NonFiniteError(Diverged):
    """Vectors, scores or metrics hold NaN or Inf (exit code 4, diverged: a retry gives the same)."""


def require_finite(values: Any, what: str) -> np.ndarray:
    """``values`` as an array, or :class:`NonFiniteError` naming ``what`` and how many entries are bad."""
    arr = np.asarray(values)
    if arr.dtype.kind in "fc":
        bad = ~np.isfinite(arr)
        if bad.any():
            rows = int(bad.reshape(len(arr), -1).any(axis=1).sum()) if arr.ndim > 1 else int(bad.sum())
            raise NonFiniteError(f"{what}: {int(bad.sum())} non-finite values (NaN/Inf) in {rows} of "
                                 f"{len(arr)} rows; the model has diverged, nothing is ranked with it",
                                 {"non_finite_values": int(bad.sum()), "non_finite_rows": rows})
    return arr


def is_number(value: Any) -> bool:
    """A real, finite number (bool, None, strings, NaN and Inf are not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def at_least(value: Any, floor: float) -> bool:
    """``value >= floor`` where anything not a finite number fails (``not (nan >= x)`` is True)."""
    return is_number(value) and value >= floor
