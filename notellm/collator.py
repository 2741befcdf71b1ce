"""Prompt batches: dynamic right-padding of encoded Note Compression Prompts.

Shared by training (batches with output labels), indexing and evaluation
(inference prompts, no labels). Rows are padded to the longest row of the
batch; ``attention_mask`` marks real tokens, ``labels`` is -100 except on the
output tokens (the generation loss), ``emb_index`` is the position of
``[EMB]`` (the embedding is read at ``emb_index - 1``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def collate(encoded: Sequence, pad_token_id: int | None, with_labels: bool = True) -> dict[str, torch.Tensor]:
    """Right-pad a list of :class:`notellm.prompts.EncodedPrompt` into tensors."""
    pad = pad_token_id if pad_token_id is not None else 0
    width = max(len(e.input_ids) for e in encoded)
    ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    labels = torch.full((len(encoded), width), -100, dtype=torch.long)
    for i, e in enumerate(encoded):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        mask[i, :n] = 1
        labels[i, :n] = torch.tensor(e.labels)
    batch = {"input_ids": ids, "attention_mask": mask,
             "emb_index": torch.tensor([e.emb_index for e in encoded], dtype=torch.long)}
    if with_labels:
        batch["labels"] = labels
    return batch


def length_sorted_batches(lengths: Sequence[int], batch_size: int, sort_by_length: bool = True) -> list[np.ndarray]:
    """Row indices per batch; sorted by length (stable) so little compute goes to padding."""
    order = np.argsort(np.asarray(lengths), kind="stable") if sort_by_length else np.arange(len(lengths))
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def token_budget_batches(lengths: Sequence[int], max_batch_tokens: int, max_batch_notes: int) -> list[np.ndarray]:
    """Row indices per batch, longest prompts first, each batch as large as its padded size allows:
    ``len(batch) * longest prompt in it <= max_batch_tokens`` and ``len(batch) <= max_batch_notes``
    (a single prompt longer than the budget gets a batch of its own). Ties keep the input order,
    so the same rows always form the same batches."""
    if max_batch_tokens <= 0 or max_batch_notes <= 0:
        raise ValueError("max_batch_tokens and max_batch_notes must be positive")
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    batches, start = [], 0
    while start < len(order):
        width = max(int(lengths[order[start]]), 1)       # the longest prompt of the batch is its first
        size = max(1, min(max_batch_notes, max_batch_tokens // width))
        batches.append(order[start:start + size])
        start += size
    return batches
