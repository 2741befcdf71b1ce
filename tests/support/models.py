"""Small real models for fast tests: a randomly initialised Llama with the real
SmolLM2 tokenizer, and a NoteLLM encoder built on it (the components are real;
only the size is small)."""

from __future__ import annotations

import os
from pathlib import Path


def tiny_llama(out_dir: str | os.PathLike, tokenizer_dir: str | os.PathLike, hidden_size: int = 64,
               layers: int = 2, heads: int = 4, seed: int = 0) -> Path:
    """A small randomly initialised Llama with a real tokenizer, for fast tests
    and the CI end-to-end run (the components are real; only the size is small)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def tiny_model(out_dir: str | Path, dim: int = 16, seed: int = 0) -> Path:
    """Build and save a tiny NoteLLM encoder; returns the model directory."""
    from notellm.backbone import ensure_default_backbone
    from notellm.encoder import NoteEncoder

    out_dir = Path(out_dir)
    backbone = tiny_llama(out_dir / "tiny-backbone", ensure_default_backbone(), seed=seed)
    encoder = NoteEncoder.build(backbone, dim=dim, seed=seed)
    encoder.save(out_dir / "model")
    return out_dir / "model"


def diverged_model(model_dir: str | Path, out_dir: str | Path) -> Path:
    """A copy of a saved NoteLLM encoder whose projection is all NaN: what a diverged
    run exports (a real saved model with a new weights digest, hence a new model_id)."""
    import torch

    from notellm.encoder import NoteEncoder

    encoder = NoteEncoder.load(model_dir)
    with torch.no_grad():
        encoder.projection.weight.fill_(float("nan"))
    return encoder.save(out_dir)
