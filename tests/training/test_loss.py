"""GCL / CSFT loss (training/loss.py) against hand-computed numbers."""

import math

import pytest
import torch

from training.loss import combined_loss, gather_with_local_grad, gcl_loss, global_gcl_loss, pair_partner

# 2 pairs = 4 notes in the [a1, a2, b1, b2] layout, unit vectors.
A1, A2, B1, B2 = (1.0, 0.0), (0.0, 1.0), (0.6, 0.8), (0.8, -0.6)
Z = torch.tensor([A1, A2, B1, B2])


def hand_loss(scale: float) -> float:
    """Written out from the formula. Cosines: a1.a2=0, a1.b1=.6, a1.b2=.8, a2.b1=.8, a2.b2=-.6, b1.b2=0."""
    s = scale
    l_a1 = -math.log(math.exp(s * .6) / (math.exp(0) + math.exp(s * .6) + math.exp(s * .8)))     # partner b1
    l_a2 = -math.log(math.exp(-s * .6) / (math.exp(0) + math.exp(s * .8) + math.exp(-s * .6)))   # partner b2
    l_b1 = -math.log(math.exp(s * .6) / (math.exp(s * .6) + math.exp(s * .8) + math.exp(0)))     # partner a1
    l_b2 = -math.log(math.exp(-s * .6) / (math.exp(s * .8) + math.exp(-s * .6) + math.exp(0)))   # partner a2
    return (l_a1 + l_a2 + l_b1 + l_b2) / 4


def test_gcl_matches_hand_computation_tau_zero():
    # exp(0) = 1: l_a1 = l_b1 = log(1 + e^.6 + e^.8) - .6 = 1.01892, l_a2 = l_b2 = log(1 + e^.8 + e^-.6) + .6 = 1.92823
    loss = gcl_loss(Z, torch.tensor(0.0))
    assert loss.item() == pytest.approx(hand_loss(1.0), abs=1e-6)
    assert loss.item() == pytest.approx((1.01892 + 1.92823) / 2, abs=1e-4)


def test_gcl_matches_hand_computation_default_tau():
    loss = gcl_loss(Z, torch.tensor(3.0))
    assert loss.item() == pytest.approx(hand_loss(math.exp(3.0)), rel=1e-5)


def test_symmetry_swapping_pair_sides_and_order():
    tau = torch.tensor(3.0)
    swapped = Z[[2, 3, 0, 1]]          # b's first: every note keeps its partner
    reordered = Z[[1, 0, 3, 2]]        # pairs in another order
    base = gcl_loss(Z, tau).item()
    assert gcl_loss(swapped, tau).item() == pytest.approx(base, abs=1e-6)
    assert gcl_loss(reordered, tau).item() == pytest.approx(base, abs=1e-6)


def test_self_is_masked():
    # With self included, a note would always be its own best match (cos 1);
    # the masked loss must not change when we move a note's self-similarity.
    z = torch.nn.functional.normalize(torch.randn(6, 5, generator=torch.Generator().manual_seed(0)), dim=-1)
    tau = torch.tensor(1.0)
    logits = math.exp(1.0) * (z @ z.T)
    logits.fill_diagonal_(float("-inf"))
    manual = torch.nn.functional.cross_entropy(logits, pair_partner(3))
    assert gcl_loss(z, tau).item() == pytest.approx(manual.item(), abs=1e-6)
    unmasked = torch.nn.functional.cross_entropy(math.exp(1.0) * (z @ z.T), pair_partner(3))
    assert unmasked.item() > gcl_loss(z, tau).item()


def test_gradient_flows_to_tau_and_embeddings():
    tau = torch.tensor(3.0, requires_grad=True)
    z = Z.clone().requires_grad_(True)
    gcl_loss(z, tau).backward()
    assert tau.grad is not None and tau.grad.item() != 0.0
    assert z.grad is not None and z.grad.abs().sum().item() > 0
    # d L / d tau by finite differences
    eps = 1e-3
    fd = (gcl_loss(Z, torch.tensor(3.0 + eps)) - gcl_loss(Z, torch.tensor(3.0 - eps))).item() / (2 * eps)
    assert tau.grad.item() == pytest.approx(fd, rel=1e-3)


def test_combined_loss_formula():
    l_cl, l_gen = torch.tensor(2.0), torch.tensor(10.0)
    assert combined_loss(l_cl, l_gen, 0.01).item() == pytest.approx((2.0 + 0.01 * 10.0) / 1.01)
    assert combined_loss(l_cl, l_gen, 0.0).item() == pytest.approx(2.0)


def test_global_loss_is_identity_without_distributed():
    a, b = Z[:2], Z[2:]
    assert gather_with_local_grad(a) is a
    assert global_gcl_loss(a, b, torch.tensor(3.0)).item() == pytest.approx(gcl_loss(Z, torch.tensor(3.0)).item())


def test_odd_batch_refused():
    with pytest.raises(ValueError, match="even"):
        gcl_loss(Z[:3], torch.tensor(3.0))


def test_gcl_stays_fp32_under_bf16_autocast():
    import torch

    from training.loss import gcl_loss

    torch.manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    tau = torch.tensor(3.0)
    exact = gcl_loss(z, tau)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = gcl_loss(z, tau)
    assert under_autocast.dtype == torch.float32
    assert torch.allclose(under_autocast, exact, rtol=1e-6, atol=1e-6)
