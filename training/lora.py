"""LoRA adapters for NoteLLM training (RepLLaMA style, GitHub issue 18).

Each targeted linear layer ``y = W x`` of the backbone (attention and MLP
projections, by module-name suffix) gets a trainable low-rank update

    W' = W + (lora_alpha / r) * B A,   A in R^{r x in}, B in R^{out x r}

with W frozen, A random (Kaiming-uniform) and B zero at the start, so the
adapted model starts equal to the backbone. What trains in full besides the
adapters: the ``[EMB]`` row of the input embedding (a new token has no other
way to get a meaning), the final norm and the projection head. The rest of
the backbone is frozen.

The adapters are injected in place with ``peft.inject_adapter_in_model``:
``encoder.lm`` stays the Hugging Face causal LM, so ``lm.base_model``,
``get_input_embeddings()`` and ``get_output_embeddings()`` are what
:class:`notellm.encoder.NoteEncoder` expects (``get_peft_model`` would wrap it
in a ``PeftModel`` whose ``base_model`` is the ``LoraModel``). Only the
parameter names change: ``...q_proj.weight`` becomes
``...q_proj.base_layer.weight`` plus ``...q_proj.lora_A.default.weight`` and
``...q_proj.lora_B.default.weight``.

Only the ``[EMB]`` row of the embedding matrix. The embedding weight (tied
to the LM head in SmolLM2 and the test Llama) keeps ``requires_grad`` and a
gradient hook replaces its gradient by zeros everywhere except that row. With
a zero gradient from the first step, Adam's moments of those rows stay zero
and their update is 0 / (0 + eps) = 0, so the other rows stay bit-identical,
provided no weight decay applies to this matrix: put the optimizer groups
through :func:`without_decay_on_masked` (it moves the masked weight to the
weight-decay-free group).

Export. A model directory must be a plain Hugging Face model, so the adapters
are merged, W' = W + scale * B A in fp32, cast back to W's dtype, under the
plain key names (:func:`merge_lora_state_dict`). It works on any full state
dict, including DeepSpeed ZeRO-3's gathered one on rank 0
(``_zero3_consolidated_16bit_state_dict``), which is the only full copy there
is under ZeRO-3; :func:`merged_state_dict` does the same for a live,
unpartitioned encoder.
"""

from __future__ import annotations

import re
from typing import Iterable

import torch
from torch import nn

ADAPTER = "default"
_MASKED_ATTR = "_notellm_trainable_rows"
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<part>A|B)\.(?P<adapter>[^.]+)\.weight$")
_OTHER_PEFT_KEY = re.compile(r"\.(lora_[A-Za-z_]+|lora_magnitude_vector)\.")


def _count(params: Iterable[nn.Parameter]) -> int:
    return sum(p.numel() for p in params)


def _row_mask_hook(rows: torch.Tensor):
    """Gradient hook: keep ``rows`` of the gradient, zeros elsewhere (also where it is NaN/Inf)."""
    def hook(grad: torch.Tensor) -> torch.Tensor:
        idx = rows.to(grad.device)
        kept = torch.zeros_like(grad)
        kept[idx] = grad[idx]
        return kept
    return hook


def apply_lora(encoder, r: int, alpha: float, dropout: float = 0.0,
               target_modules: Iterable[str] = ("q_proj", "k_proj", "v_proj", "o_proj",
                                                "gate_proj", "up_proj", "down_proj"),
               seed: int = 0) -> dict:
    """Inject LoRA adapters into ``encoder.lm`` in place and set what trains.

    Trainable: the adapters (A, B), the ``[EMB]`` row of the input embedding (by a
    gradient mask on the whole weight), the final norm and ``encoder.projection``;
    everything else is frozen. The adapters are initialised under ``seed`` (the
    global RNG is left as it was), so every rank builds the same model, which
    ZeRO-3 needs (each rank keeps its own partition of its local copy).

    Call it after ``NoteEncoder.build`` (or a load) and before ``deepspeed.initialize``.
    Returns ``{"trainable": n, "total": n}``: ``trainable`` counts the embedding
    matrix as its one ``[EMB]`` row; ``total`` counts every parameter, adapters included.
    """
    from peft import LoraConfig, inject_adapter_in_model

    if r <= 0:
        raise ValueError(f"lora_r={r}: LoRA needs a rank >= 1 (0 means: no LoRA, do not call apply_lora)")
    targets = sorted({str(t) for t in target_modules})
    if not targets:
        raise ValueError("lora_target_modules is empty")
    if getattr(encoder.lm, "peft_config", None):
        raise ValueError("encoder.lm already carries peft adapters")
    config = LoraConfig(r=int(r), lora_alpha=float(alpha), lora_dropout=float(dropout), target_modules=targets,
                        bias="none")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lm = inject_adapter_in_model(config, encoder.lm, adapter_name=ADAPTER)
    if lm is not encoder.lm:   # peft injects in place; guard against an API change
        raise RuntimeError("peft.inject_adapter_in_model returned a new module; expected an in-place injection")

    for param in encoder.parameters():
        param.requires_grad_(False)
    lora_params = [p for n, p in encoder.named_parameters() if ".lora_A." in n or ".lora_B." in n]
    if not lora_params:
        raise ValueError(f"no module of the backbone matched lora_target_modules={targets}")
    base = encoder.lm.base_model
    norm = getattr(base, "norm", None)
    full = [*lora_params, *encoder.projection.parameters(), *(norm.parameters() if norm is not None else [])]
    for param in full:
        param.requires_grad_(True)

    emb_id = int(encoder.config.emb_token_id)
    weight = encoder.lm.get_input_embeddings().weight
    shape = getattr(weight, "ds_shape", weight.shape)   # a ZeRO-3 partition's data is empty
    if not 0 <= emb_id < shape[0]:
        raise ValueError(f"[EMB] id {emb_id} outside the input embedding ({shape[0]} rows)")
    rows = torch.tensor([emb_id], dtype=torch.long)
    weight.requires_grad_(True)
    weight.register_hook(_row_mask_hook(rows))
    setattr(weight, _MASKED_ATTR, rows)
    return {"trainable": _count(full) + len(rows) * shape[1],
            "total": _count(encoder.parameters())}


def is_row_masked(param: nn.Parameter) -> bool:
    """True for a weight of which :func:`apply_lora` trains only some rows."""
    return getattr(param, _MASKED_ATTR, None) is not None


def without_decay_on_masked(groups: list[dict]) -> list[dict]:
    """Optimizer groups with every row-masked weight moved to a ``weight_decay=0`` group.

    AdamW's decoupled decay shrinks every row whatever its gradient, so the frozen rows
    of the embedding would move; ``training.model.parameter_groups`` puts 2-d weights
    in the decaying group.
    """
    out, masked = [], []
    for group in groups:
        keep = [p for p in group["params"] if not is_row_masked(p)]
        masked += [p for p in group["params"] if is_row_masked(p)]
        out.append({**group, "params": keep})
    zero = next((g for g in out if g.get("weight_decay", 0.0) == 0.0), None)
    if zero is None:
        out.append({"params": masked, "weight_decay": 0.0})
    else:
        zero["params"] = [*zero["params"], *masked]
    return [g for g in out if g["params"]]


def lora_scale(encoder) -> float:
    """``lora_alpha / r`` of the adapters :func:`apply_lora` injected."""
    config = encoder.lm.peft_config[ADAPTER]
    if getattr(config, "use_rslora", False):
        raise ValueError("rsLoRA scaling (alpha / sqrt(r)) is not what merge_lora_state_dict assumes")
    return float(config.lora_alpha) / float(config.r)


def merge_lora_state_dict(state: dict, alpha_over_r: float) -> dict:
    """A state dict with peft LoRA keys -> the plain one, adapters merged.

    For every ``P.lora_A.<adapter>.weight`` / ``P.lora_B.<adapter>.weight`` pair with
    ``P.base_layer.weight``: ``P.weight = W + alpha_over_r * B @ A`` computed in fp32
    and cast back to W's dtype. Other ``P.base_layer.*`` entries (a bias) become
    ``P.*``; every other key passes through unchanged (order kept). Raises on an
    incomplete triple, on more than one adapter per layer and on peft keys it does not
    know (DoRA magnitudes, embedding adapters), rather than export a wrong model.
    """
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        m = _LORA_KEY.match(key)
        if m is None:
            if _OTHER_PEFT_KEY.search(key):
                raise ValueError(f"{key}: a peft key merge_lora_state_dict does not know how to merge")
            continue
        slot = parts.setdefault(m["module"], {})
        if m["part"] in slot:
            raise ValueError(f"{m['module']}: more than one LoRA adapter; merge one at a time")
        slot[m["part"]] = value
    merged: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if _LORA_KEY.match(key):
            continue
        module, sep, rest = key.partition(".base_layer.")
        if not sep:
            merged[key] = value
            continue
        plain = f"{module}.{rest}"
        if rest == "weight":
            ab = parts.pop(module, None)
            if ab is None or set(ab) != {"A", "B"}:
                raise ValueError(f"{key}: no complete lora_A / lora_B pair to merge into it")
            a, b = ab["A"].to(torch.float32), ab["B"].to(torch.float32)
            delta = (b.to(value.device) @ a.to(value.device)) * float(alpha_over_r)
            if delta.shape != value.shape:
                raise ValueError(f"{module}: B @ A is {tuple(delta.shape)}, the weight {tuple(value.shape)}")
            value = (value.to(torch.float32) + delta).to(value.dtype)
        merged[plain] = value
    if parts:
        raise ValueError(f"LoRA adapters without a base_layer.weight: {sorted(parts)[:3]}")
    return merged


def merged_state_dict(encoder) -> dict:
    """The unpartitioned encoder's plain state dict (keys as ``NoteEncoder.state_dict()``
    without adapters), for ``NoteEncoder.save(dir, state_dict=...)``."""
    with torch.no_grad():
        state = {k: v.detach() for k, v in encoder.state_dict().items()}
    return merge_lora_state_dict(state, lora_scale(encoder))
