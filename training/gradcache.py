"""GradCache for the NoteLLM loss: the contrastive batch no longer bounds activation memory.

Gao et al., "Scaling Deep Contrastive Learning Batch Size under Memory Limited
Setup" (RepL4NLP 2021). With embeddings z_i = f_theta(x_i) of the 2B notes of the
global batch and the CSFT loss (training/loss.py)::

    L = (L_cl(z_1 .. z_2B, tau) + alpha * L_gen) / (1 + alpha)

the chain rule splits the gradient at the embeddings::

    dL/dtheta = sum_i  g_i . dz_i/dtheta  +  alpha / (1 + alpha) * dL_gen/dtheta,
    g_i       = (1 / (1 + alpha)) * dL_cl/dz_i,     g_tau = (1 / (1 + alpha)) * dL_cl/dtau

L_cl depends on theta only through the z's, so the steps are

1. every rank embeds its notes chunk by chunk **without** an autograd graph;
2. L_cl on the gathered (2B, d) embeddings, differentiated w.r.t. the detached
   local embeddings and tau: g_i and g_tau (a 2B x 2B matrix: no model involved);
3. each chunk c is run again **with** a graph and the surrogate

       s_c = W * ( sum_{i in c} <z_i, g_i>  +  alpha / (1 + alpha) * share_c(L_gen) )  [ + g_tau * tau, first chunk ]

   is back-propagated; its gradient is chunk c's exact share of dL/dtheta. The
   factor W undoes the data-parallel gradient average, as in training/model.py;
   every rank computes the whole g_tau, so its term is not scaled.

Only one chunk's activations are alive at a time, so the global batch (the
negatives of the paper's in-batch loss) can hold thousands of notes. The cost is
one extra forward pass. Each chunk's second pass restores the random-number state
of its first, so dropout (e.g. LoRA dropout) draws the same masks in both.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from training.loss import global_gcl_loss

Batch = dict[str, torch.Tensor]


def chunk_rows(n_rows: int, chunk_notes: int) -> list[slice]:
    """Consecutive row slices of at most ``chunk_notes`` rows (one slice when ``chunk_notes`` is 0)."""
    if chunk_notes <= 0 or chunk_notes >= n_rows:
        return [slice(0, n_rows)]
    return [slice(start, min(start + chunk_notes, n_rows)) for start in range(0, n_rows, chunk_notes)]


def take_rows(batch: Batch, rows: slice) -> Batch:
    """Rows of a right-padded batch, cut to the longest of them (no compute on shared padding)."""
    width = int(batch["attention_mask"][rows].sum(dim=1).max().item())
    return {k: (v[rows, :width] if v.dim() == 2 else v[rows]) for k, v in batch.items()}


@dataclasses.dataclass
class CachedLoss:
    """Step 2's result: the loss value and the gradients cached for step 3."""

    l_cl: torch.Tensor        # global L_cl (detached)
    emb_grad: torch.Tensor    # (n_local, d): dL/dz_i = (1 / (1 + alpha)) dL_cl/dz_i
    tau_grad: torch.Tensor    # (1,):        dL/dtau = (1 / (1 + alpha)) dL_cl/dtau


def cached_loss(embeddings: torch.Tensor, tau: torch.Tensor, alpha: float) -> CachedLoss:
    """L_cl over the global batch from this rank's detached local embeddings laid out [a; b]."""
    z = embeddings.detach().float().requires_grad_(True)
    t = tau.detach().float().reshape(()).requires_grad_(True)
    half = z.shape[0] // 2
    l_cl = global_gcl_loss(z[:half], z[half:], t)
    grad_z, grad_t = torch.autograd.grad(l_cl, (z, t))
    return CachedLoss(l_cl.detach(), grad_z / (1.0 + alpha), (grad_t / (1.0 + alpha)).reshape(1))


class RngStates:
    """The CPU (and current CUDA device's) generator state, saved and restored by chunk."""

    def __init__(self):
        self.saved: list[tuple] = []

    @staticmethod
    def _now() -> tuple:
        cuda = torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        return torch.get_rng_state(), cuda

    def save(self) -> None:
        self.saved.append(self._now())

    def restore(self, index: int) -> None:
        cpu, cuda = self.saved[index]
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda)


def embed_without_graph(call: Callable[..., tuple], batch: Batch, chunks: list[slice], rng: RngStates
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 1: the local embeddings (n_local, d) and tau, chunk by chunk, no autograd graph.

    ``call(**rows)`` without labels returns ``(embeddings, tau)`` (NoteLLMTrainModel's embed mode)."""
    parts, tau = [], None
    with torch.no_grad():
        for rows in chunks:
            rng.save()
            emb, tau = call(**{k: v for k, v in take_rows(batch, rows).items() if k != "labels"})
            parts.append(emb.detach().float())
    return torch.cat(parts, dim=0), tau


def backward_chunks(call: Callable[..., tuple], backward: Callable[[torch.Tensor], None], batch: Batch,
                    chunks: list[slice], cache: CachedLoss, tokens_global: torch.Tensor, rng: RngStates,
                    before_last_backward: Callable[[torch.Tensor], None] | None = None) -> torch.Tensor:
    """Step 3: re-run each chunk with a graph and back-propagate its surrogate; returns this
    rank's share of L_gen (detached). ``call(**rows, emb_grad=..., tau_grad=..., tokens_global=...)``
    returns ``(surrogate, gen_share)``; ``backward(surrogate)`` is the engine's backward plus its
    (accumulating) step. ``before_last_backward(gen_share_sum)`` runs once before the last chunk's
    backward (the trainer's non-finite check, while no update has been applied)."""
    after = RngStates._now()
    gen_total = torch.zeros((), dtype=torch.float32)
    for index, rows in enumerate(chunks):
        rng.restore(index)
        tau_grad = cache.tau_grad if index == 0 else torch.zeros_like(cache.tau_grad)
        surrogate, gen_share = call(**take_rows(batch, rows), emb_grad=cache.emb_grad[rows],
                                    tau_grad=tau_grad, tokens_global=tokens_global)
        gen_total = gen_total + gen_share.detach().float().cpu()
        if index == len(chunks) - 1 and before_last_backward is not None:
            before_last_backward(gen_total)
        backward(surrogate)
    torch.set_rng_state(after[0])
    if after[1] is not None:
        torch.cuda.set_rng_state(after[1])
    return gen_total
