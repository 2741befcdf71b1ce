"""training.lora: LoRA adapters (what trains, what stays bit-identical) and the export merge."""

import numpy as np
import pytest
import torch

from notellm.encoder import NoteEncoder
from tests.support.notes import make_notes
from training.lora import (
    apply_lora,
    is_row_masked,
    lora_scale,
    merge_lora_state_dict,
    merged_state_dict,
    without_decay_on_masked,
)
from training.model import parameter_groups

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
NOTES = make_notes(6, seed=3)


def _lora_encoder(model_dir, r=4, alpha=8.0):
    torch.manual_seed(0)
    encoder = NoteEncoder.build(model_dir, dim=16)
    counts = apply_lora(encoder, r=r, alpha=alpha, dropout=0.0, target_modules=TARGETS, seed=0)
    return encoder, counts


def _train(encoder, steps=3, lr=1e-2, weight_decay=0.1):
    """AdamW steps on sum(embeddings) + the generation loss (the tied LM head then sends
    gradient to every row of the embedding matrix: the mask must stop it)."""
    optimizer = torch.optim.AdamW(without_decay_on_masked(parameter_groups(encoder, weight_decay)), lr=lr)
    encoder.train()
    for step in range(steps):
        encoded = [encoder.prompts.encode(n, task="category" if step % 2 else "hashtag") for n in NOTES]
        out = encoder(**encoder.collate(encoded, with_labels=True))
        loss = out.embeddings[:, : 1 + step].sum() + out.gen_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    encoder.eval()


def _is_adapter(name):
    return ".lora_A." in name or ".lora_B." in name


def test_only_adapters_emb_row_norm_and_projection_train(tiny_llama_dir):
    torch.manual_seed(0)
    plain = NoteEncoder.build(tiny_llama_dir, dim=16).embed_notes(NOTES)
    encoder, counts = _lora_encoder(tiny_llama_dir)
    np.testing.assert_array_equal(encoder.embed_notes(NOTES), plain)   # B = 0: starts as the backbone

    emb_id = encoder.config.emb_token_id
    embedding = encoder.lm.get_input_embeddings().weight
    assert embedding is encoder.lm.get_output_embeddings().weight   # tied: the LM head's gradient hits it too
    assert is_row_masked(embedding)
    hidden = embedding.shape[1]
    full = {n for n, _ in encoder.named_parameters()
            if _is_adapter(n) or n.startswith("projection.") or n == "lm.model.norm.weight"}
    params = dict(encoder.named_parameters())
    assert counts["trainable"] == sum(params[n].numel() for n in full) + hidden
    assert counts["total"] == sum(p.numel() for p in encoder.parameters())
    assert len([n for n in full if _is_adapter(n)]) == 2 * len(TARGETS) * len(encoder.lm.base_model.layers)
    assert {n for n, p in encoder.named_parameters() if p.requires_grad} == full | {"lm.model.embed_tokens.weight"}

    before = {n: p.detach().clone() for n, p in encoder.named_parameters()}
    _train(encoder)
    for name, param in encoder.named_parameters():
        if name in full:
            assert not torch.equal(param, before[name]), f"{name} did not train"
        elif name == "lm.model.embed_tokens.weight":
            changed = (param != before[name]).any(dim=1).nonzero().flatten().tolist()
            assert changed == [emb_id]   # every other row bit-identical, weight decay on the group or not
        else:
            assert torch.equal(param, before[name]), f"{name} moved"


def test_masked_embedding_goes_to_the_decay_free_group(tiny_llama_dir):
    encoder, _ = _lora_encoder(tiny_llama_dir)
    groups = without_decay_on_masked(parameter_groups(encoder, 0.1))
    embedding = encoder.lm.get_input_embeddings().weight
    for group in groups:
        if any(p is embedding for p in group["params"]):
            assert group["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in encoder.parameters() if p.requires_grad)


def test_merged_export_is_a_plain_model_with_the_same_embeddings(tiny_llama_dir, tmp_path):
    encoder, _ = _lora_encoder(tiny_llama_dir, r=4, alpha=16.0)
    _train(encoder, steps=4)
    b = encoder.lm.base_model.layers[0].self_attn.q_proj.lora_B["default"].weight
    assert b.abs().max() > 0
    assert lora_scale(encoder) == 4.0
    ref = encoder.embed_notes(NOTES)

    # what Trainer.export hands to save: NoteEncoder-keyed (unwrap_encoder_state), here unpartitioned
    merged = merged_state_dict(encoder)
    assert not any(".lora_" in k or ".base_layer." in k for k in merged)
    assert "lm.model.layers.0.self_attn.q_proj.weight" in merged
    saved = encoder.save(tmp_path / "model", state_dict=merged)

    loaded = NoteEncoder.load(saved)
    assert not any(".lora_" in n or ".base_layer." in n for n, _ in loaded.named_parameters())
    assert not hasattr(loaded.lm, "peft_config")
    np.testing.assert_allclose(loaded.embed_notes(NOTES), ref, atol=1e-5)


def test_merge_by_hand_on_a_tiny_state_dict():
    a = torch.tensor([[1.0, 2.0, 0.0], [0.0, -1.0, 3.0]])                # r=2, in=3
    b = torch.tensor([[1.0, 0.0], [2.0, 1.0]])                            # out=2, r=2
    w = torch.tensor([[0.5, 0.0, 0.0], [0.0, 0.5, 0.25]], dtype=torch.bfloat16)
    state = {
        "lm.model.embed_tokens.weight": torch.ones(4, 3),
        "lm.model.layers.0.self_attn.q_proj.base_layer.weight": w,
        "lm.model.layers.0.self_attn.q_proj.base_layer.bias": torch.tensor([7.0, 8.0]),
        "lm.model.layers.0.self_attn.q_proj.lora_A.default.weight": a,
        "lm.model.layers.0.self_attn.q_proj.lora_B.default.weight": b,
        "projection.weight": torch.zeros(2, 3),
    }
    out = merge_lora_state_dict(state, alpha_over_r=0.5)
    assert list(out) == ["lm.model.embed_tokens.weight", "lm.model.layers.0.self_attn.q_proj.weight",
                         "lm.model.layers.0.self_attn.q_proj.bias", "projection.weight"]
    # B @ A = [[1, 2, 0], [2, 3, 3]]; W + 0.5 * B A:
    expected = torch.tensor([[1.0, 1.0, 0.0], [1.0, 2.0, 1.75]])
    merged = out["lm.model.layers.0.self_attn.q_proj.weight"]
    assert merged.dtype == torch.bfloat16
    assert torch.equal(merged, expected.to(torch.bfloat16))
    assert torch.equal(out["lm.model.layers.0.self_attn.q_proj.bias"], torch.tensor([7.0, 8.0]))
    assert out["projection.weight"] is state["projection.weight"]


@pytest.mark.parametrize("drop", ["lora_B", "base_layer"])
def test_merge_refuses_an_incomplete_adapter(drop):
    state = {"m.q.base_layer.weight": torch.zeros(2, 2), "m.q.lora_A.default.weight": torch.zeros(1, 2),
             "m.q.lora_B.default.weight": torch.zeros(2, 1)}
    state = {k: v for k, v in state.items() if f".{drop}." not in k}
    with pytest.raises(ValueError):
        merge_lora_state_dict(state, 1.0)


def test_rank_zero_and_unmatched_targets_are_refused(tiny_llama_dir):
    encoder = NoteEncoder.build(tiny_llama_dir, dim=16)
    with pytest.raises(ValueError, match="rank"):
        apply_lora(encoder, r=0, alpha=8.0, target_modules=TARGETS)
    with pytest.raises(ValueError):
        apply_lora(encoder, r=4, alpha=8.0, target_modules=["no_such_proj"])
