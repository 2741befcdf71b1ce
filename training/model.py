"""The training module: NoteEncoder + learnable temperature, GritLM-style
forward that returns every loss separately.

Data-parallel exactness. Each rank holds its slice of the global batch. The
forward computes the *global* L_cl on every rank (gathered embeddings, local
slice keeps its gradient) and the rank's share of the global token-mean
generation loss, sum_{local tokens} CE / N_global_tokens. DeepSpeed averages
gradients over the W ranks, so :attr:`TrainOutput.loss` (the tensor to
backpropagate) is W times the CSFT loss, and tau enters L_cl through a
straight-through copy whose gradient is scaled by 1/W (tau is used in full on
every rank). With these two scalings the averaged gradient equals the
gradient of a single process on the whole global batch; with W = 1 both are
the identity. The logged values (l_cl, l_gen, total) are unscaled.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.distributed as dist
from torch import nn

from notellm.encoder import NoteEncoder
from training.config import DEFAULT_ALPHA, DEFAULT_TAU_INIT
from training.loss import combined_loss, global_gcl_loss


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    if world_size() > 1:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def output_tokens(labels: torch.Tensor) -> torch.Tensor:
    """Output tokens of a batch: positions whose next token is a label (fp32 scalar)."""
    return (labels[:, 1:] != -100).sum().to(torch.float32)


def gen_loss_share(gen_loss: torch.Tensor, labels: torch.Tensor, tokens_global) -> torch.Tensor:
    """These rows' share of the global token-mean L_gen: mean CE over their output tokens x
    their tokens / all ranks' tokens (0 when no rank has an output token)."""
    total = float(tokens_global)
    return gen_loss.float() * output_tokens(labels) / total if total > 0 else gen_loss.float() * 0.0


@dataclasses.dataclass
class TrainOutput:
    loss: torch.Tensor         # tensor to backpropagate (W * CSFT loss, see module docstring)
    total: torch.Tensor        # (L_cl + alpha L_gen) / (1 + alpha), detached, global
    l_cl: torch.Tensor         # detached, global
    l_gen: torch.Tensor        # detached, global token mean
    tau: torch.Tensor          # detached current tau (the scale is exp(tau))
    emb_a: torch.Tensor        # local embeddings of the first pair members (detached)
    emb_b: torch.Tensor        # local embeddings of the second pair members (detached)


class NoteLLMTrainModel(nn.Module):
    """``forward(input_ids, attention_mask, emb_index, labels)`` on the local
    2*B_local notes laid out [a_1..a_Bl, b_1..b_Bl] (row i and i + B_local are a pair)."""

    def __init__(self, encoder: NoteEncoder, tau_init: float = DEFAULT_TAU_INIT, alpha: float = DEFAULT_ALPHA):
        super().__init__()
        self.encoder = encoder
        # shape (1,), not a 0-d scalar: DeepSpeed's parameter broadcast views params as bytes
        self.tau = nn.Parameter(torch.tensor([float(tau_init)]))
        self.alpha = float(alpha)

    def forward(self, input_ids, attention_mask, emb_index, labels=None, emb_grad=None, tau_grad=None,
                tokens_global=None):
        """Three modes, all through the DeepSpeed engine (so ZeRO-3 gathers the weights):

        * ``labels`` given, no ``emb_grad``: the whole loss of the local batch -> :class:`TrainOutput`;
        * no ``labels``: GradCache step 1 -> ``(embeddings, tau)``, nothing to back-propagate;
        * ``emb_grad`` given: GradCache step 3 on a chunk -> ``(surrogate, gen_share)``, see
          ``training/gradcache.py`` (the surrogate's gradient is the chunk's share of dL/dtheta).
        """
        if labels is None:
            out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, emb_index=emb_index)
            return out.embeddings, self.tau[0].detach().clone()
        if emb_grad is not None:
            return self._chunk_surrogate(input_ids, attention_mask, emb_index, labels, emb_grad, tau_grad,
                                         tokens_global)
        return self._whole_loss(input_ids, attention_mask, emb_index, labels)

    def _chunk_surrogate(self, input_ids, attention_mask, emb_index, labels, emb_grad, tau_grad, tokens_global):
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, emb_index=emb_index, labels=labels)
        gen_share = gen_loss_share(out.gen_loss, labels, tokens_global)
        contrastive = (out.embeddings.float() * emb_grad.to(out.embeddings.device).float()).sum()
        surrogate = world_size() * (contrastive + self.alpha / (1.0 + self.alpha) * gen_share)
        surrogate = surrogate + (self.tau[0] * tau_grad.to(self.tau.device)[0].float())
        return surrogate, gen_share.detach()

    def _whole_loss(self, input_ids, attention_mask, emb_index, labels) -> TrainOutput:
        n_local = input_ids.shape[0]
        if n_local % 2:
            raise ValueError(f"local batch must hold whole pairs ([a; b] layout), got {n_local} rows")
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, emb_index=emb_index, labels=labels)
        w = world_size()
        half = n_local // 2
        emb_a, emb_b = out.embeddings[:half], out.embeddings[half:]

        # tau: value unchanged, gradient / W (every rank uses all of it).
        tau = self.tau[0] / w + (self.tau[0] - self.tau[0] / w).detach()
        l_cl = global_gcl_loss(emb_a, emb_b, tau)

        # Generation loss as this rank's share of the global token mean.
        gen_share = gen_loss_share(out.gen_loss, labels, all_reduce_sum(output_tokens(labels)))
        l_gen = all_reduce_sum(gen_share.detach())

        backprop = w * combined_loss(l_cl, gen_share, self.alpha)
        total = combined_loss(l_cl.detach(), l_gen, self.alpha)
        return TrainOutput(backprop, total, l_cl.detach(), l_gen, self.tau[0].detach().clone(),
                           emb_a.detach(), emb_b.detach())


def train_only_top_layers(encoder: NoteEncoder, top_layers: int) -> dict:
    """Freeze the backbone except its top ``top_layers`` transformer blocks and final norm.

    The projection head stays trainable. Nothing below the lowest trainable block needs a
    gradient, so autograd stops there: the backward pass and the optimizer state shrink
    with the frozen share (a budget lever for CPUs and small demos; the paper trains all
    weights, ``top_layers = 0``). The input embeddings, and with them the tied LM head and
    the ``[EMB]`` row, stay frozen. Returns the trainable and total parameter counts.
    """
    base = encoder.lm.base_model
    blocks = getattr(base, "layers", None)
    if blocks is None:
        raise ValueError(f"{type(base).__name__}: no .layers to freeze by depth; use train_top_layers=0")
    if not 0 < top_layers <= len(blocks):
        raise ValueError(f"train_top_layers={top_layers}: the backbone has {len(blocks)} blocks")
    for param in encoder.lm.parameters():
        param.requires_grad_(False)
    trainable = [*blocks[len(blocks) - top_layers:]]
    if getattr(base, "norm", None) is not None:
        trainable.append(base.norm)
    for module in trainable:
        for param in module.parameters():
            param.requires_grad_(True)
    return {"trainable": sum(p.numel() for p in encoder.parameters() if p.requires_grad),
            "total": sum(p.numel() for p in encoder.parameters())}


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on biases, norms, embeddings' new rows... and tau."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        # a ZeRO-3 partition's data is flat (or empty): its shape is in ds_shape
        ndim = len(getattr(param, "ds_shape", param.shape))
        if ndim < 2 or name == "tau" or "norm" in name.lower():
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def unwrap_encoder_state(state: dict) -> dict:
    """Keys of NoteLLMTrainModel.state_dict() -> keys of NoteEncoder.state_dict() (drops tau)."""
    prefix = "encoder."
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}

