"""notellm.schedule: the warm-up / linear-decay multiplier by hand."""

from __future__ import annotations

import pytest

from notellm.schedule import linear_warmup_decay, warmup_steps


def test_warmup_then_linear_decay_by_hand():
    f = linear_warmup_decay(warmup=2, total=6)
    # s < W: (s + 1) / W; s >= W: (T - s) / (T - W) = (6 - s) / 4
    assert [f(s) for s in range(8)] == [0.5, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0]


def test_no_warmup_starts_at_the_peak():
    f = linear_warmup_decay(warmup=0, total=4)
    assert [f(s) for s in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    g = linear_warmup_decay(warmup=3, total=3)          # warm-up as long as the run: T - W = 0 -> divide by 1
    assert [g(s) for s in range(4)] == [pytest.approx(1 / 3), pytest.approx(2 / 3), 1.0, 0.0]


def test_warmup_steps_and_bad_arguments():
    assert warmup_steps(40, 0.1) == 4 and warmup_steps(5, 0.1) == 1 and warmup_steps(0, 0.1) == 1
    with pytest.raises(ValueError):
        linear_warmup_decay(-1, 10)


def test_drives_torch_lambda_lr():
    torch = pytest.importorskip("torch")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, linear_warmup_decay(2, 6))
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.05, 0.1, 0.1, 0.075, 0.05, 0.025])
