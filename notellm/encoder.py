"""The NoteLLM note encoder: a causal LM that compresses a note into ``[EMB]``.

Shared by training (which optimises it) and indexing (which embeds the corpus
with it). Following NoteLLM (Zhang et al., WWW 2024, Sec. 3.3):

* ``[EMB]`` is a new special token; its input embedding is initialised to the
  mean of the existing input embeddings.
* For a prompt whose ``[EMB]`` sits at position p, the note embedding is

      n = normalize(W h_{p-1}),   W in R^{d x H} (bias-free), ||n||_2 = 1

  where h_{p-1} is the final-layer hidden state at the position just before
  ``[EMB]``. Causal attention means h_{p-1} does not depend on ``[EMB]`` or on
  anything after it, so the training sequence (with output) and the inference
  prompt (ending before ``[EMB]``) give the same vector.
* The generation loss is token-level cross-entropy on the output tokens only
  (labels != -100), computed by the LM head on those positions alone.

Saved layout (:meth:`NoteEncoder.save`)::

    <dir>/model.safetensors ...     Hugging Face causal LM (with [EMB] in the vocab)
    <dir>/tokenizer*                tokenizer including [EMB]
    <dir>/projection.safetensors    {"weight": W}  (d x H)
    <dir>/notellm.json              side-car config (see EncoderConfig)
    <dir>/SHA256SUMS.json           every file above with its sha256 (notellm.integrity), written last
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from notellm.collator import collate
from notellm.faults import fault_point
from notellm.files import fsync_file
from notellm.integrity import check_model_id, verify_sums, write_sums
from notellm.locking import remove_dead_temps, replace_dir, temp_name
from notellm.prompts import EMB_TOKEN, PromptBuilder, PromptConfig

SIDECAR = "notellm.json"
PROJECTION_FILE = "projection.safetensors"
SIDECAR_FORMAT = 1


@dataclasses.dataclass
class EncoderConfig:
    """The side-car config the indexing step needs to reproduce embeddings."""

    base_model: str = ""
    dim: int = 128
    template_version: str = "v1-paper"
    max_title_tokens: int = 20
    max_content_tokens: int = 80
    emb_token: str = EMB_TOKEN
    emb_token_id: int = -1
    tau: float = 3.0
    data_window: dict | None = None
    model_id: str = ""
    format: int = SIDECAR_FORMAT
    extra: dict = dataclasses.field(default_factory=dict)

    @property
    def prompt_config(self) -> PromptConfig:
        return PromptConfig(self.template_version, self.max_title_tokens, self.max_content_tokens)

    @classmethod
    def from_json(cls, path: Path) -> "EncoderConfig":
        data = json.loads(Path(path).read_text())
        if data.get("format") != SIDECAR_FORMAT:
            raise ValueError(f"{path}: side-car format {data.get('format')} not supported (expected {SIDECAR_FORMAT})")
        known = {f.name for f in dataclasses.fields(cls)}
        if data.get("model_id") is not None:   # it names store folders and snapshots: never a path
            check_model_id(data["model_id"], str(path))
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclasses.dataclass
class EncoderOutput:
    embeddings: torch.Tensor               # (batch, d), L2-normalised
    gen_loss: torch.Tensor | None = None   # mean CE over output tokens, or None


class NoteEncoder(nn.Module):
    """Backbone LM + ``[EMB]`` read-out + bias-free projection."""

    def __init__(self, lm, tokenizer, config: EncoderConfig, projection: nn.Linear | None = None):
        super().__init__()
        self.lm = lm
        self.tokenizer = tokenizer
        self.config = config
        hidden = lm.config.hidden_size
        self.projection = projection if projection is not None else nn.Linear(hidden, config.dim, bias=False)
        self.prompts = PromptBuilder(tokenizer, config.prompt_config)

    # ------------------------------------------------------------ build / load / save
    @classmethod
    def build(cls, backbone: str | os.PathLike, dim: int = 128, template_version: str = "v1-paper",
              max_title_tokens: int = 20, max_content_tokens: int = 80, dtype=torch.float32,
              seed: int = 0) -> "NoteEncoder":
        """Start from a plain causal LM: add ``[EMB]`` (mean-initialised) and a fresh projection."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(backbone)
        lm = AutoModelForCausalLM.from_pretrained(backbone, dtype=dtype)
        if EMB_TOKEN not in tokenizer.get_vocab():
            tokenizer.add_special_tokens({"additional_special_tokens": [EMB_TOKEN]})
        emb_id = tokenizer.convert_tokens_to_ids(EMB_TOKEN)
        # Mean of the existing token embeddings (paper Sec. 3.3). Computed over the
        # tokenizer's original vocabulary, not over padding rows some checkpoints
        # carry past it, and written even when [EMB] lands in such a spare row.
        # Under ZeRO-3 (a live HfDeepSpeedConfig) the weights arrive partitioned: the embedding
        # matrices are gathered only for these row writes, and rank 0's rows are re-partitioned.
        with gathered([lm.get_input_embeddings().weight]):
            emb_rows = lm.get_input_embeddings().weight
            n_existing = min(emb_id, emb_rows.shape[0])
            n_rows = emb_rows.shape[0]
            with torch.no_grad():
                mean = emb_rows[:n_existing].float().mean(dim=0)
        if emb_id >= n_rows:
            lm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        in_emb, out_emb = lm.get_input_embeddings(), lm.get_output_embeddings()
        untied = out_emb is not None and out_emb.weight is not in_emb.weight
        with gathered([in_emb.weight, out_emb.weight] if untied else [in_emb.weight]), torch.no_grad():
            in_emb.weight[emb_id] = mean.to(in_emb.weight.dtype)
            if untied and out_emb.weight.data_ptr() != in_emb.weight.data_ptr():
                # untied head: [EMB] is never a target (it is never in the labels), but
                # keep its row defined instead of resize's random init
                out_emb.weight[emb_id] = out_emb.weight[:n_existing].float().mean(dim=0).to(out_emb.weight.dtype)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        config = EncoderConfig(base_model=str(backbone), dim=dim, template_version=template_version,
                               max_title_tokens=max_title_tokens, max_content_tokens=max_content_tokens,
                               emb_token_id=int(emb_id))
        gen = torch.Generator().manual_seed(seed)
        projection = nn.Linear(lm.config.hidden_size, dim, bias=False)
        with torch.no_grad():
            bound = 1.0 / np.sqrt(lm.config.hidden_size)
            projection.weight.copy_(torch.empty_like(projection.weight).uniform_(-bound, bound, generator=gen))
        return cls(lm, tokenizer, config, projection.to(dtype))

    @classmethod
    def load(cls, model_dir: str | os.PathLike, dtype=torch.float32) -> "NoteEncoder":
        """Load a directory written by :meth:`save` (weights from safetensors only), after
        checking it against its ``SHA256SUMS.json``."""
        from safetensors.torch import load_file
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model_dir = Path(model_dir)
        sidecar = model_dir / SIDECAR
        if not sidecar.exists():
            raise FileNotFoundError(f"{model_dir}: no {SIDECAR}; not a NoteLLM model directory")
        verify_sums(model_dir)   # every file as exported, nothing added (weights, tokenizer, side-car)
        config = EncoderConfig.from_json(sidecar)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        lm = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, use_safetensors=True)
        weight = load_file(str(model_dir / PROJECTION_FILE))["weight"]
        if tuple(weight.shape) != (config.dim, lm.config.hidden_size):
            raise ValueError(f"{model_dir / PROJECTION_FILE}: weight shape {tuple(weight.shape)} != "
                             f"({config.dim}, {lm.config.hidden_size})")
        projection = nn.Linear(lm.config.hidden_size, config.dim, bias=False)
        with torch.no_grad():
            projection.weight.copy_(weight)
        if tokenizer.convert_tokens_to_ids(config.emb_token) != config.emb_token_id:
            raise ValueError(f"{model_dir}: tokenizer's {config.emb_token} id differs from the side-car")
        return cls(lm, tokenizer, config, projection.to(dtype))

    def save(self, out_dir: str | os.PathLike, state_dict: dict | None = None, **sidecar_updates) -> Path:
        """Write the HF directory, the projection and the side-car config.

        ``state_dict`` may be given (e.g. weights gathered by DeepSpeed ZeRO-3)
        with keys as in ``self.state_dict()`` (``lm.*`` and ``projection.*``).
        The side-car's ``model_id`` is a digest of the saved weights. The folder is
        written under a temp name, listed in ``SHA256SUMS.json`` (notellm.integrity),
        verified and only then renamed onto ``out_dir``.
        """
        from safetensors.torch import save_file

        final = Path(out_dir)
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_dead_temps(final.parent, final.name)
        out_dir = final.parent / temp_name(final.name)   # staged: a killed export never leaves a partial model
        out_dir.mkdir()
        if state_dict is None:
            lm_state, proj = None, self.projection.weight
        else:
            lm_state = {k[len("lm."):]: v for k, v in state_dict.items() if k.startswith("lm.")}
            proj = state_dict["projection.weight"]
        self.lm.save_pretrained(out_dir, state_dict=lm_state, safe_serialization=True)
        self.tokenizer.save_pretrained(out_dir)
        save_file({"weight": proj.detach().to(torch.float32).cpu().contiguous()}, str(out_dir / PROJECTION_FILE))
        for key, value in sidecar_updates.items():
            setattr(self.config, key, value)
        self.config.model_id = weights_digest(out_dir)
        (out_dir / SIDECAR).write_text(json.dumps(dataclasses.asdict(self.config), indent=2, sort_keys=True))
        fault_point("export", "files_written")
        for path in out_dir.iterdir():
            fsync_file(path)
        write_sums(out_dir)
        verify_sums(out_dir)
        fault_point("export", "verified")
        replace_dir(out_dir, final, writer="export")
        return final

    # ------------------------------------------------------------ forward
    @property
    def device(self) -> torch.device:
        return self.projection.weight.device

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, emb_index: torch.Tensor,
                labels: torch.Tensor | None = None) -> EncoderOutput:
        """``emb_index[i]`` is the position of ``[EMB]`` in row i (or one past the
        last prompt token at inference); the embedding is read at ``emb_index - 1``."""
        base = self.lm.base_model
        # use_cache=False: no KV cache is needed here (saves memory in training)
        hidden = base(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        h = hidden[rows, emb_index - 1]
        emb = F.normalize(self.projection(h.to(self.projection.weight.dtype)).float(), dim=-1)
        gen_loss = None
        if labels is not None:
            # Position t predicts token t+1: only positions whose next token is
            # an output token go through the LM head (saves the full-vocab matmul).
            target = labels[:, 1:]
            mask = target != -100
            if mask.any():
                logits = self.lm.get_output_embeddings()(hidden[:, :-1][mask])
                gen_loss = F.cross_entropy(logits.float(), target[mask])
            else:
                gen_loss = hidden.sum() * 0.0
        return EncoderOutput(emb, gen_loss)

    # ------------------------------------------------------------ delegates
    def collate(self, encoded: Sequence, with_labels: bool = True) -> dict:
        """Right-pad encoded prompts into tensors (:func:`notellm.collator.collate`)."""
        return collate(encoded, self.tokenizer.pad_token_id, with_labels=with_labels)

    def embed_notes(self, notes: Iterable[Mapping], batch_size: int = 32, autocast_bf16: bool = False,
                    sort_by_length: bool = True, progress=None) -> np.ndarray:
        """Embeddings (n, d) float32 in input order (:func:`notellm.inference.embed_notes`)."""
        from notellm.inference import embed_notes

        return embed_notes(self, notes, batch_size=batch_size, autocast_bf16=autocast_bf16,
                           sort_by_length=sort_by_length, progress=progress)

    def generate(self, note: Mapping, task: str = "category", j: int = 3, max_new_tokens: int = 24,
                 allowed_outputs: Sequence[str] | None = None) -> str:
        """Category or j hashtags, free or constrained (:func:`notellm.generation.generate`)."""
        from notellm.generation import generate

        return generate(self, note, task=task, j=j, max_new_tokens=max_new_tokens, allowed_outputs=allowed_outputs)

    def option_log_likelihoods(self, prompt: Sequence[int], outs: Sequence[Sequence[int]],
                               reuse_prefix: bool = True) -> list[float]:
        """log P(out_i | prompt) per option (:func:`notellm.generation.option_log_likelihoods`)."""
        from notellm.generation import option_log_likelihoods

        return option_log_likelihoods(self, prompt, outs, reuse_prefix=reuse_prefix)


def gathered(params: Sequence[torch.Tensor]):
    """Full parameters for reading and writing them, rank 0's writes kept: DeepSpeed's
    GatheredParameters for ZeRO-3-partitioned ones, a no-op for ordinary tensors."""
    import contextlib

    if not any(hasattr(p, "ds_id") for p in params):
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(params), modifier_rank=0)


def weights_digest(model_dir: Path) -> str:
    """Short id of a saved model: sha256 over its weight files (safetensors)."""
    digest = hashlib.sha256()
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        digest.update(path.name.encode())
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:12]
