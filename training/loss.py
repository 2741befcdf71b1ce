"""Generative-Contrastive Learning loss and the CSFT combination (NoteLLM, Zhang et al., WWW 2024).

GCL (Sec. 3.3, Eq. 2). A batch holds B related pairs, i.e. 2B notes with
L2-normalised embeddings z_1 .. z_2B. Note i's partner is p(i) (pair members
are rows i and i + B, see :func:`pair_partner`). With the learnable
temperature parameter tau (initialised to 3; the scale is exp(tau))::

    s_ij  = exp(tau) * cos(z_i, z_j)  =  exp(tau) * z_i . z_j
    l_i   = -log( exp(s_{i,p(i)}) / sum_{j != i} exp(s_ij) )
    L_cl  = (1 / 2B) * sum_{i=1}^{2B} l_i

i.e. a softmax cross-entropy over the 2B - 1 other notes of the batch (the
note itself is masked out), whose target is the pair partner.

CSFT (Sec. 3.4, Eq. 4). L_gen is the token-level cross-entropy of the output
tokens (category or hashtags) and::

    L = (L_cl + alpha * L_gen) / (1 + alpha),   alpha = 0.01 by default

Across ranks (data parallel), negatives span the global batch: every rank
all-gathers the embeddings of all ranks and puts its own local tensor back in
its slice, so the gradient flows through the local rows only
(:func:`gather_with_local_grad`). Every rank then computes the *same* global
L_cl; see ``training/model.py`` for how its gradient is scaled so that the
averaged data-parallel gradient equals the single-process gradient exactly.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from training.config import DEFAULT_ALPHA


def pair_partner(n_pairs: int, device=None) -> torch.Tensor:
    """Partner index for the layout [a_1..a_B, b_1..b_B]: p(i) = (i + B) mod 2B."""
    idx = torch.arange(2 * n_pairs, device=device)
    return (idx + n_pairs) % (2 * n_pairs)


def gcl_loss(embeddings: torch.Tensor, tau: torch.Tensor, partner: torch.Tensor | None = None) -> torch.Tensor:
    """L_cl of the module docstring for ``embeddings`` (2B, d), already L2-normalised.

    ``partner`` defaults to :func:`pair_partner` (rows i and i+B are a pair).
    Returns the mean over all 2B notes; differentiable in ``embeddings`` and ``tau``.
    """
    n = embeddings.shape[0]
    if n < 2 or n % 2:
        raise ValueError(f"GCL needs an even number (>= 2) of embeddings, got {n}")
    if partner is None:
        partner = pair_partner(n // 2, device=embeddings.device)
    # Similarities scaled by exp(tau) ~ 20 must stay in fp32: under a bf16
    # autocast the matmul would otherwise run in bf16 (measured: L_cl off by 5%).
    with torch.autocast(device_type=embeddings.device.type, enabled=False):
        z = embeddings.float()
        logits = torch.exp(tau.float()) * (z @ z.T)
        self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
        logits = logits.masked_fill(self_mask, float("-inf"))  # a note is never its own candidate
        return F.cross_entropy(logits, partner)


def combined_loss(l_cl: torch.Tensor, l_gen: torch.Tensor, alpha: float = DEFAULT_ALPHA) -> torch.Tensor:
    """CSFT total loss L = (L_cl + alpha * L_gen) / (1 + alpha)."""
    return (l_cl + alpha * l_gen) / (1.0 + alpha)


def gather_with_local_grad(local: torch.Tensor) -> torch.Tensor:
    """Concatenate ``local`` (n_r, d) of every rank in rank order; the caller's
    own slice is the local tensor itself (keeps its autograd graph), the other
    slices are constants. Every rank must pass the same shape. Identity when
    torch.distributed is not initialised or the world has one rank."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    gathered = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, local.detach().contiguous())
    gathered[dist.get_rank()] = local
    return torch.cat(gathered, dim=0)


def global_gcl_loss(emb_a: torch.Tensor, emb_b: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """L_cl over the global batch: rank r holds pairs (emb_a[i], emb_b[i]) of
    its slice; all ranks' a's then all b's give the [a; b] layout of
    :func:`gcl_loss`, so the result is identical to one process holding the
    whole global batch."""
    a = gather_with_local_grad(emb_a)
    b = gather_with_local_grad(emb_b)
    return gcl_loss(torch.cat([a, b], dim=0), tau)
