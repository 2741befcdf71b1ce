"""Inference loop: embed notes with the category prompt (no output appended).

Used by indexing (the nightly corpus embedding) and by evaluation.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
import torch

from notellm.collator import collate, length_sorted_batches, token_budget_batches
from notellm.finite import require_finite


@torch.no_grad()
def embed_notes(encoder, notes: Iterable[Mapping], batch_size: int = 32, autocast_bf16: bool = False,
                sort_by_length: bool = True, progress=None, max_batch_tokens: int | None = None) -> np.ndarray:
    """Embed notes with ``encoder`` (a :class:`notellm.encoder.NoteEncoder`). Returns float32 (n, d).

    Notes are sorted by token count and padded per batch, so little compute
    is spent on padding; the output keeps the input order. Batches hold
    ``batch_size`` notes, or with ``max_batch_tokens`` as many notes as fit
    that many padded tokens (longest prompt x notes), at most ``batch_size``
    (:func:`notellm.collator.token_budget_batches`): short notes share large
    batches, long ones small batches, at a steady cost per forward pass.
    A NaN or Inf embedding (a diverged model) raises
    :class:`notellm.finite.NonFiniteError` instead of being returned.
    """
    notes = list(notes)
    encoded = [encoder.prompts.encode(n, task="category", with_output=False) for n in notes]
    out = np.zeros((len(notes), encoder.config.dim), dtype=np.float32)
    was_training = encoder.training
    encoder.eval()
    device = encoder.device
    pad = encoder.tokenizer.pad_token_id
    try:
        lengths = [len(e.input_ids) for e in encoded]
        if max_batch_tokens is not None:
            batches = token_budget_batches(lengths, max_batch_tokens, batch_size)
        else:
            batches = length_sorted_batches(lengths, batch_size, sort_by_length)
        for idx in batches:
            batch = collate([encoded[i] for i in idx], pad, with_labels=False)
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast_bf16):
                emb = encoder(**batch).embeddings
            out[idx] = emb.float().cpu().numpy()
            if progress is not None:
                progress(len(idx))
    finally:
        encoder.train(was_training)
    return require_finite(out, f"embeddings of model {encoder.config.model_id}")
