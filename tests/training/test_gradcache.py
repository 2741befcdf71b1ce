"""GradCache (training/gradcache.py): the chunked loss gives the gradient of the whole-batch loss.

Reference: the unchunked NoteLLMTrainModel loss (GCL + CSFT) back-propagated in one pass on a
tiny random Llama (real tokenizer); every parameter's gradient, tau's included, must match."""

import pytest
import torch

from notellm.encoder import NoteEncoder
from tests.support.pairs import make_notes_and_pairs
from training.data import batch_examples
from training.gradcache import (
    RngStates,
    backward_chunks,
    cached_loss,
    chunk_rows,
    embed_without_graph,
    take_rows,
)
from training.model import NoteLLMTrainModel


@pytest.fixture(scope="module")
def model_and_batch(tiny_llama_dir):
    torch.manual_seed(0)
    encoder = NoteEncoder.build(tiny_llama_dir, dim=16, seed=0)
    model = NoteLLMTrainModel(encoder, tau_init=3.0, alpha=0.5)   # a large alpha: L_gen's share is visible
    notes, pairs = make_notes_and_pairs(8)
    by_id = {n["note_id"]: n for n in notes}
    examples = batch_examples(list(range(8)), pairs, by_id,
                              r=0.4, seed=0, step=0)
    encoded = [encoder.prompts.encode(e.note, task=e.task, hashtags_out=e.hashtags_out) for e in examples]
    return model, encoder.collate(encoded, with_labels=True)


def grads(model):
    out = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out


@pytest.mark.parametrize("chunk_notes", [4, 5, 16])
def test_chunked_gradients_equal_the_whole_batch_gradients(model_and_batch, chunk_notes):
    model, batch = model_and_batch
    model.zero_grad(set_to_none=True)
    whole = model(**batch)
    whole.loss.backward()
    reference = grads(model)

    chunks = chunk_rows(batch["input_ids"].shape[0], chunk_notes)
    rng = RngStates()
    emb, tau = embed_without_graph(model, batch, chunks, rng)
    cache = cached_loss(emb, tau, model.alpha)
    tokens = (batch["labels"][:, 1:] != -100).sum()
    gen = backward_chunks(model, lambda s: s.backward(), batch, chunks, cache, tokens, rng)
    chunked = grads(model)

    assert cache.l_cl.item() == pytest.approx(whole.l_cl.item(), rel=1e-5)
    assert gen.item() == pytest.approx(whole.l_gen.item(), rel=1e-5)
    assert set(chunked) == set(reference) and "tau" in reference
    for name, ref in reference.items():
        torch.testing.assert_close(chunked[name], ref, rtol=1e-4, atol=1e-6, msg=name)


def test_chunks_cover_the_rows_and_trim_only_shared_padding(model_and_batch):
    _, batch = model_and_batch
    assert chunk_rows(10, 4) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert chunk_rows(10, 0) == [slice(0, 10)] == chunk_rows(10, 32)
    part = take_rows(batch, slice(0, 3))
    lengths = batch["attention_mask"][:3].sum(dim=1)
    assert part["input_ids"].shape == (3, int(lengths.max()))
    assert torch.equal(part["input_ids"], batch["input_ids"][:3, :int(lengths.max())])
    assert torch.equal(part["emb_index"], batch["emb_index"][:3])


def test_each_chunk_replays_its_random_draws():
    rng = RngStates()
    rng.save()
    first = torch.rand(5)
    rng.save()
    second = torch.rand(5)
    rng.restore(0)
    assert torch.equal(torch.rand(5), first)
    rng.restore(1)
    assert torch.equal(torch.rand(5), second)
