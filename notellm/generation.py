"""Generation with a NoteEncoder's LM head (the CSFT side): free greedy decoding,
and constrained choice among known answers by their complete log-likelihood."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch


@torch.no_grad()
def generate(encoder, note: Mapping, task: str = "category", j: int = 3, max_new_tokens: int = 24,
             allowed_outputs: Sequence[str] | None = None) -> str:
    """Generate the note's category (``task='category'``) or j hashtags.

    With ``allowed_outputs`` (constrained mode) the answer is the allowed
    string whose complete output, ``" <option>"`` followed by EOS, has the
    highest log-likelihood under the model, so it can only be one of the
    known categories. Scoring the EOS too makes it a comparison of whole
    answers: without it an option that is a prefix of another (e.g.
    ``beer`` vs ``beer.meta``) is scored as a partial answer. All options
    are scored in one right-padded batch.
    """
    prompt = encoder.prompts.generation_prompt(note, task=task, j=j)
    device = encoder.device
    if allowed_outputs:
        options = list(dict.fromkeys(allowed_outputs))
        eos = [encoder.tokenizer.eos_token_id] if encoder.tokenizer.eos_token_id is not None else []
        outs = [encoder.tokenizer(" " + o, add_special_tokens=False)["input_ids"] + eos for o in options]
        scores = option_log_likelihoods(encoder, prompt, outs)
        return options[int(np.argmax(scores))]
    ids = torch.tensor([prompt], device=device)
    gen = encoder.lm.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                           do_sample=False, pad_token_id=encoder.tokenizer.pad_token_id,
                           eos_token_id=encoder.tokenizer.eos_token_id)
    return encoder.tokenizer.decode(gen[0, len(prompt):], skip_special_tokens=True).strip()

@torch.no_grad()
def option_log_likelihoods(encoder, prompt: Sequence[int], outs: Sequence[Sequence[int]],
                           reuse_prefix: bool = True) -> list[float]:
    """log P(out_i | prompt) = sum_k log p(out_i[k] | prompt, out_i[:k]) for each option.

    With ``reuse_prefix`` the prompt runs once and its KV cache is repeated
    for the options (the prompt is ~90% of each sequence, so this is several
    times cheaper); without it every prompt + option runs in full. Both give
    the same values up to float rounding (tested).
    """
    device = encoder.device
    pad = encoder.tokenizer.pad_token_id if encoder.tokenizer.pad_token_id is not None else 0
    n, width = len(outs), max(len(o) for o in outs)
    if reuse_prefix:
        first = encoder.lm(input_ids=torch.tensor([list(prompt)], device=device), use_cache=True)
        first_logp = torch.log_softmax(first.logits[0, -1].float(), -1)
        cache = first.past_key_values
        cache.batch_repeat_interleave(n)
        ids = torch.full((n, width), pad, dtype=torch.long, device=device)
        mask = torch.zeros((n, len(prompt) + width), dtype=torch.long, device=device)
        mask[:, :len(prompt)] = 1
        for i, o in enumerate(outs):
            ids[i, :len(o)] = torch.tensor(o, device=device)
            mask[i, len(prompt):len(prompt) + len(o)] = 1
        logp = torch.log_softmax(encoder.lm(input_ids=ids, attention_mask=mask, cache=cache,
                                         use_cache=True).logits.float(), -1)
        scores = []
        for i, o in enumerate(outs):
            total = first_logp[o[0]]
            if len(o) > 1:
                pos = torch.arange(0, len(o) - 1, device=device)
                total = total + logp[i, pos, torch.tensor(o[1:], device=device)].sum()
            scores.append(float(total))
        return scores
    full_width = len(prompt) + width
    ids = torch.full((n, full_width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, o in enumerate(outs):
        seq = list(prompt) + list(o)
        ids[i, :len(seq)] = torch.tensor(seq)
        mask[i, :len(seq)] = 1
    ids, mask = ids.to(device), mask.to(device)
    logp = torch.log_softmax(encoder.lm(input_ids=ids, attention_mask=mask, use_cache=False).logits.float(), -1)
    scores = []
    for i, o in enumerate(outs):
        pos = torch.arange(len(prompt) - 1, len(prompt) - 1 + len(o), device=device)
        scores.append(logp[i, pos, torch.tensor(o, device=device)].sum().item())
    return scores
