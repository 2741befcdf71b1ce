"""The learning-rate schedule every trained model of the project uses (the
NoteLLM trainer and the fine-tuned MiniLM baseline of the quality report).

A multiplier of the peak learning rate per optimizer step s = 0, 1, ...
(``torch.optim.lr_scheduler.LambdaLR`` calls it with the number of steps done)::

    f(s) = (s + 1) / W                            for s < W          (linear warm-up)
    f(s) = max(0, (T - s) / max(1, T - W))        for s >= W         (linear decay to 0 at T)

with W warm-up steps (W = 0: no warm-up, f(0) = 1) and T total steps.
Standard library only.
"""

from __future__ import annotations

from typing import Callable


def linear_warmup_decay(warmup: int, total: int) -> Callable[[int], float]:
    """``f(step)`` of the module docstring for ``warmup`` = W and ``total`` = T."""
    if warmup < 0 or total < 0:
        raise ValueError(f"warmup and total must be >= 0, got {warmup} and {total}")

    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))
    return f


def warmup_steps(total: int, fraction: float) -> int:
    """W as a share of T, at least one step: ``max(1, floor(T * fraction))``."""
    return max(1, int(total * fraction))
