"""Note Compression Prompt (notellm/prompts.py), paper Sec. 3.2."""

import random

import pytest

from notellm.prompts import (
    CATEGORY_INSTRUCTION,
    EMB_TOKEN,
    PromptBuilder,
    PromptConfig,
    note_fingerprint,
    prefix_text,
    sample_hashtags,
)

NOTE = {"title": "Best grinder for espresso", "content": "I want a burr grinder that works well for espresso shots.",
        "hashtags": ["coffee", "grinder", "espresso"], "category": "coffee"}


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from notellm.backbone import ensure_default_backbone
    tok = AutoTokenizer.from_pretrained(ensure_default_backbone())
    tok.add_special_tokens({"additional_special_tokens": [EMB_TOKEN]})
    return tok


def test_paper_template_text():
    text = prefix_text("category", "T", "C", ["a", "b"], 1, "v1-paper")
    assert text == CATEGORY_INSTRUCTION + " {'title': 'T', 'topic': 'a, b', 'content': 'C'} The compression word is:\""
    hashtag = prefix_text("hashtag", "T", "C", ["a", "b"], 2, "v1-paper")
    assert "generate 2 topics of the note." in hashtag and "topic'" not in hashtag   # hashtags removed from input
    assert prefix_text("category", "T", "C", ["a"], 1, "v2-short").startswith("{'title'")


@pytest.mark.parametrize("version", ["v1-paper", "v2-short"])
@pytest.mark.parametrize("task", ["category", "hashtag"])
def test_encode_layout(tokenizer, version, task):
    pb = PromptBuilder(tokenizer, PromptConfig(version))
    out = ["coffee", "espresso"] if task == "hashtag" else None
    enc = pb.encode(NOTE, task=task, hashtags_out=out)
    inf = pb.encode(NOTE, task=task, hashtags_out=out, with_output=False)  # j is part of the hashtag prompt
    emb_id = tokenizer.convert_tokens_to_ids(EMB_TOKEN)
    assert enc.input_ids[enc.emb_index] == emb_id and enc.input_ids.count(emb_id) == 1
    assert enc.input_ids[:enc.emb_index] == inf.input_ids          # same prefix -> same embedding state
    assert inf.emb_index == len(inf.input_ids)
    assert enc.input_ids[0] == tokenizer.bos_token_id and enc.input_ids[-1] == tokenizer.eos_token_id
    # labels only on the output tokens and EOS
    labelled = [t for t, label in zip(enc.input_ids, enc.labels) if label != -100]
    expected = " coffee" if task == "category" else " coffee, espresso"
    assert tokenizer.decode(labelled[:-1]) == expected and labelled[-1] == tokenizer.eos_token_id
    text = tokenizer.decode(enc.input_ids)
    guidance = "The category is:" if task == "category" else "The 2 topics are:"
    assert f'The compression word is:"{EMB_TOKEN}". {guidance}' in text


def test_truncation_to_20_and_80_tokens(tokenizer):
    pb = PromptBuilder(tokenizer)
    long = {"title": " ".join(["word"] * 50), "content": " ".join(["token"] * 300), "hashtags": [], "category": "x"}
    title, content = pb.truncated_fields(long)
    assert len(tokenizer(title, add_special_tokens=False)["input_ids"]) <= 20
    assert len(tokenizer(content, add_special_tokens=False)["input_ids"]) <= 80
    v1 = len(pb.encode(NOTE, with_output=False).input_ids)
    v2 = len(PromptBuilder(tokenizer, PromptConfig("v2-short")).encode(NOTE, with_output=False).input_ids)
    assert v1 - v2 >= 15


def test_sample_hashtags_and_fingerprint():
    rng = random.Random(0)
    for _ in range(50):
        picked = sample_hashtags(NOTE["hashtags"], rng)
        assert 1 <= len(picked) <= 3 and all(h in NOTE["hashtags"] for h in picked)
    assert note_fingerprint(NOTE) != note_fingerprint({**NOTE, "title": "other"})
    assert note_fingerprint(NOTE) != note_fingerprint(NOTE, PromptConfig("v2-short"))


def test_early_cut_before_tokenising_keeps_the_same_truncation(tokenizer):
    """Huge texts are cut before the tokenizer sees them; the kept tokens equal those of
    tokenising the whole text (checked on long words, runs of spaces and punctuation, CJK,
    emoji, a 1 MB single word and mixed prose)."""
    import random

    pb = PromptBuilder(tokenizer)
    rng = random.Random(0)
    words = ["coffee", "espresso", "naïve", "咖啡豆", "☕☕", "=====", "    ", "\n\n", "supercalifragilistic",
             "https://example.com/a/b?c=d", "1234567890", "Ⅻ", "—", "🙂"]
    texts = [" ".join(rng.choice(words) for _ in range(n)) for n in (50, 500, 5_000, 50_000)]
    texts += ["x" * 1_000_000, " " * 100_000 + "end", "ab" * 200_000, "咖啡" * 100_000]
    for text in texts:
        for max_tokens in (20, 80):
            whole = tokenizer(text, add_special_tokens=False)["input_ids"]
            expected = text if len(whole) <= max_tokens else tokenizer.decode(whole[:max_tokens])
            assert pb._truncate(text, max_tokens) == expected, (text[:40], max_tokens)
