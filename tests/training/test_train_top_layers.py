"""training.model.train_only_top_layers: the demo's budget lever (top N blocks trained)."""

import pytest
import torch

from notellm.encoder import NoteEncoder
from tests.support.models import tiny_llama
from training.config import TrainConfig
from training.model import NoteLLMTrainModel, train_only_top_layers

NOTES = [
    {"title": "Espresso grinder", "content": "Which burr grinder for espresso?", "hashtags": ["coffee"],
     "category": "food"},
    {"title": "Latte art", "content": "Milk foam at 60 degrees.", "hashtags": ["coffee", "latte"], "category": "food"},
    {"title": "Chain skipping", "content": "My bike chain skips.", "hashtags": ["chain"], "category": "sports"},
    {"title": "Gravel tyres", "content": "Tubeless or not?", "hashtags": ["gravel"], "category": "sports"},
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, backbone_dir):
    return tiny_llama(tmp_path_factory.mktemp("tiny") / "llama", backbone_dir, layers=3)


def _step(encoder):
    model = NoteLLMTrainModel(encoder)
    encoded = [encoder.prompts.encode(n, task="category") for n in NOTES]
    out = model(**encoder.collate(encoded, with_labels=True))
    out.loss.backward()
    return model


def test_only_the_top_blocks_norm_and_projection_get_gradients(tiny_dir):
    torch.manual_seed(0)
    encoder = NoteEncoder.build(tiny_dir, dim=16)
    counts = train_only_top_layers(encoder, 1)
    layers = encoder.lm.base_model.layers
    expected = {id(p) for p in [*layers[2].parameters(), *encoder.lm.base_model.norm.parameters(),
                                *encoder.projection.parameters()]}
    assert counts["trainable"] == sum(p.numel() for p in encoder.parameters() if id(p) in expected)
    assert counts["total"] == sum(p.numel() for p in encoder.parameters())
    _step(encoder)
    for name, p in encoder.named_parameters():
        if id(p) in expected:
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert not p.requires_grad and p.grad is None, name


def test_top_layer_gradients_equal_the_full_models(tiny_dir):
    """Freezing changes which weights learn, not the gradient of those that do."""
    grads = []
    for top in (0, 2):
        torch.manual_seed(0)
        encoder = NoteEncoder.build(tiny_dir, dim=16)
        if top:
            train_only_top_layers(encoder, top)
        _step(encoder)
        grads.append({n: p.grad.clone() for n, p in encoder.named_parameters() if p.grad is not None})
    full, top = grads
    assert set(top) < set(full)
    for name, g in top.items():
        torch.testing.assert_close(g, full[name], rtol=1e-5, atol=1e-7)


def test_bad_depth_is_refused(tiny_dir):
    encoder = NoteEncoder.build(tiny_dir, dim=16)
    with pytest.raises(ValueError, match="has 3 blocks"):
        train_only_top_layers(encoder, 4)
    with pytest.raises(ValueError, match="train_top_layers must be >= 0"):
        TrainConfig(pairs="p", notes="n", output_dir="o", train_top_layers=-1).validate()
