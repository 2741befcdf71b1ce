"""NoteEncoder (notellm/encoder.py): [EMB] read-out, losses, save/load, generation."""

import numpy as np
import pytest
import torch

from notellm.encoder import NoteEncoder
from notellm.prompts import EMB_TOKEN
from tests.support.models import tiny_llama

NOTES = [
    {"title": "Espresso grinder", "content": "Which burr grinder for espresso?", "hashtags": ["coffee", "grinder"],
     "category": "coffee"},
    {"title": "Chain skipping", "content": "My bike chain skips on the small cog.", "hashtags": ["chain"],
     "category": "bicycles"},
    {"title": "Stout yeast", "content": "Which yeast for a dry stout? " * 5, "hashtags": ["beer", "yeast", "stout"],
     "category": "beer"},
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from notellm.backbone import ensure_default_backbone
    return tiny_llama(tmp_path_factory.mktemp("tiny") / "llama", ensure_default_backbone())


@pytest.fixture(scope="module")
def encoder(tiny_dir):
    torch.manual_seed(0)
    return NoteEncoder.build(tiny_dir, dim=16)


def test_emb_token_initialised_to_mean(tiny_dir, encoder):
    from transformers import AutoModelForCausalLM
    plain = AutoModelForCausalLM.from_pretrained(tiny_dir).get_input_embeddings().weight
    emb_id = encoder.tokenizer.convert_tokens_to_ids(EMB_TOKEN)
    assert emb_id == encoder.config.emb_token_id == plain.shape[0]
    got = encoder.lm.get_input_embeddings().weight[emb_id]
    assert torch.allclose(got, plain.mean(0), atol=1e-6)


@pytest.mark.parametrize("version", ["v1-paper", "v2-short"])
def test_training_and_inference_embeddings_equal(tiny_dir, version):
    enc = NoteEncoder.build(tiny_dir, dim=16, template_version=version)
    enc.eval()
    train = [enc.prompts.encode(n, task="category") for n in NOTES]
    hashtag = [enc.prompts.encode(n, task="hashtag", hashtags_out=n["hashtags"][:1]) for n in NOTES]
    with torch.no_grad():
        e_train = enc(**enc.collate(train)).embeddings
        e_hash = enc(**enc.collate(hashtag)).embeddings
    e_inf = enc.embed_notes(NOTES, batch_size=2)
    np.testing.assert_allclose(e_train.numpy(), e_inf, atol=1e-5)
    assert not np.allclose(e_hash.numpy(), e_inf, atol=1e-3)        # the hashtag prompt is a different view
    np.testing.assert_allclose(np.linalg.norm(e_inf, axis=1), 1.0, atol=1e-5)


def test_gen_loss_is_output_token_cross_entropy(encoder):
    enc = encoder
    encoded = [enc.prompts.encode(n, task="category") for n in NOTES]
    batch = enc.collate(encoded)
    with torch.no_grad():
        out = enc(**batch)
        logits = enc.lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    total, count = 0.0, 0
    for i, e in enumerate(encoded):
        for t, label in enumerate(e.labels):
            if label != -100:
                total += -torch.log_softmax(logits[i, t - 1], -1)[label].item()
                count += 1
    assert out.gen_loss.item() == pytest.approx(total / count, rel=1e-4)


def test_save_load_roundtrip(encoder, tmp_path):
    encoder.save(tmp_path / "m", tau=2.5)
    loaded = NoteEncoder.load(tmp_path / "m")
    assert loaded.config.tau == 2.5 and loaded.config.model_id
    np.testing.assert_allclose(loaded.embed_notes(NOTES), encoder.embed_notes(NOTES), atol=1e-6)


def test_constrained_generation_returns_known_category(encoder):
    options = ["coffee", "bicycles", "beer", "beer brewing"]
    for note in NOTES:
        assert encoder.generate(note, allowed_outputs=options) in options
    free = encoder.generate(NOTES[0], max_new_tokens=3)
    assert isinstance(free, str)


def test_option_scores_with_reused_prompt_cache_equal_full_sequences(encoder):
    """The KV-cache shortcut of constrained generation scores every option exactly like
    running prompt + option in full (options of different lengths, one of one token)."""
    prompt = encoder.prompts.generation_prompt(NOTES[0], task="category")
    tok = encoder.tokenizer
    outs = [tok(" " + o, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            for o in ("coffee", "bicycles", "beer brewing", "a much longer category name here")]
    outs.append([tok.eos_token_id])
    fast = encoder.option_log_likelihoods(prompt, outs, reuse_prefix=True)
    full = encoder.option_log_likelihoods(prompt, outs, reuse_prefix=False)
    np.testing.assert_allclose(fast, full, rtol=1e-4, atol=1e-4)
    assert len(set(np.round(full, 3))) == len(full)        # the options really differ


@pytest.mark.parametrize("step", ["files_written", "verified", "old_moved_aside", "renamed"])
def test_sigkill_during_export_leaves_the_old_or_new_model_and_the_rerun_converges(encoder, tmp_path, step):
    """An export over an existing model is SIGKILLed at ``step`` (3 trials): loading then gives the
    complete old model or the complete new one (between the two renames: none, refused), never a
    mix; rerunning the export gives the same files as an uninterrupted one and no temp is left."""
    import functools

    from notellm.integrity import SUMS_FILE
    from tests.support.kill import kill_at_fault_point

    weights = {"old": encoder.projection.weight.detach().clone()}
    weights["new"] = weights["old"] * 1.5

    def save_as(which, out):
        with torch.no_grad():
            encoder.projection.weight.copy_(weights[which])
        return encoder.save(out)

    try:
        ids = {w: NoteEncoder.load(save_as(w, tmp_path / f"ref-{w}")).config.model_id for w in weights}
        assert ids["old"] != ids["new"]
        final = tmp_path / "model"
        for _ in range(3):
            save_as("old", final)
            kill_at_fault_point(functools.partial(save_as, "new", final), f"export:{step}", tmp_path / "ready")
            if final.exists():
                assert NoteEncoder.load(final).config.model_id == ids["new" if step == "renamed" else "old"]
            else:
                assert step == "old_moved_aside", "the model vanished outside the swap window"
            save_as("new", final)
            assert (final / SUMS_FILE).read_bytes() == (tmp_path / "ref-new" / SUMS_FILE).read_bytes()
            assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []
    finally:
        with torch.no_grad():
            encoder.projection.weight.copy_(weights["old"])
