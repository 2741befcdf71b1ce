"""Generation metrics of the quality report: BLEU-4 (nltk) and ROUGE (rouge-score) against
hand-computed values, brute force, the values of the hand-written implementation they replaced
(on fixed corpora and on the committed report's cases), and the hashtag tokenisation."""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path

import pytest

from evaluation.text_metrics import (
    bleu4,
    category_metrics,
    corpus_rouge,
    hashtag_metrics,
    hashtag_words,
    parse_hashtags,
    rouge,
)
from notellm.prompts import output_text

S = str.split
DATA = Path(__file__).parent / "data"
REPORTS = Path(__file__).resolve().parents[2] / "reports"


def rouge_n(cand, ref, n):
    return rouge(cand, ref)[f"rouge{n}"]


def rouge_l(cand, ref):
    return rouge(cand, ref)["rougeL"]


# ---------------------------------------------------------------- BLEU-4

# Sentence 1: cand "the cat sat on the mat" vs ref "the cat is on the mat"
#   1-grams: the x2 (ref has 2) + cat + on + mat match, sat does not  -> 5 / 6
#   2-grams: the-cat, cat-sat, sat-on, on-the, the-mat; ref has the-cat, on-the, the-mat -> 3 / 5
#   3-grams: the-cat-sat, cat-sat-on, sat-on-the, on-the-mat; only on-the-mat        -> 1 / 4
#   4-grams: the-cat-sat-on, cat-sat-on-the, sat-on-the-mat; none                    -> 0 / 3
# Sentence 2: cand "a b c d e" vs ref "a b c d f"
#   1-grams 4/5 (e misses), 2-grams ab bc cd | de -> 3/4, 3-grams abc bcd | cde -> 2/3, 4-grams abcd | bcde -> 1/2
# Pooled over the corpus: p1 = 9/11, p2 = 6/9, p3 = 3/7, p4 = 1/5
# c = 6 + 5 = 11, r = 6 + 5 = 11 -> c > r is false -> BP = exp(1 - 11/11) = 1
# BLEU = (9/11 * 6/9 * 3/7 * 1/5) ** (1/4) = (162 / 3465) ** 0.25
CORPUS_C = [S("the cat sat on the mat"), S("a b c d e")]
CORPUS_R = [S("the cat is on the mat"), S("a b c d f")]


def test_corpus_bleu_pools_clipped_counts_over_sentences():
    expected = (9 / 11 * 6 / 9 * 3 / 7 * 1 / 5) ** 0.25
    assert expected == pytest.approx((162 / 3465) ** 0.25)
    assert bleu4(CORPUS_C, CORPUS_R) == pytest.approx(expected, rel=1e-12)
    # Not the mean of sentence scores: sentence 1 alone has p4 = 0 -> 0 without smoothing.
    assert bleu4(CORPUS_C[:1], CORPUS_R[:1]) == 0.0


def test_bleu_brevity_penalty():
    # all p_n = 1, c = 4 <= r = 6 -> BP = exp(1 - 6/4) = exp(-0.5)
    assert bleu4([S("a b c d")], [S("a b c d e f")]) == pytest.approx(math.exp(-0.5), rel=1e-12)
    # c = 5 > r = 4 -> BP = 1; p = 4/5, 3/4, 2/3, 1/2 -> product 24/120 = 1/5
    assert bleu4([S("a b c d e")], [S("a b c d")]) == pytest.approx((1 / 5) ** 0.25, rel=1e-12)


def test_bleu_clips_repeated_ngrams():
    # "the the the the" vs "the cat": unigram matches clipped to 1 of 4; no bigram match -> 0 unsmoothed
    assert bleu4([S("the the the the")], [S("the cat")]) == 0.0
    # "a a a a b c d" vs "a b c d e": a clipped to 1 -> p1 = 4/7; p2 = ab bc cd of 6 = 3/6;
    # p3 = abc bcd of 5 = 2/5; p4 = abcd of 4 = 1/4; c = 7 > r = 5 -> BP = 1; BLEU = (1/35) ** 0.25
    assert bleu4([S("a a a a b c d")], [S("a b c d e")]) == pytest.approx((1 / 35) ** 0.25, rel=1e-12)


def test_bleu_zero_precision_and_empty_cases():
    # every candidate shorter than 4 tokens -> no 4-grams at all -> p4 undefined/0 -> 0
    assert bleu4([S("a b c"), S("x y")], [S("a b c"), S("x y")]) == 0.0
    assert bleu4([S("q r s t")], [S("a b c d")]) == 0.0           # p1 = 0
    assert bleu4([[]], [S("a b")]) == 0.0                            # c = 0
    assert bleu4([], []) == 0.0
    with pytest.raises(ValueError, match="one reference per candidate"):
        bleu4([S("a")], [])


def test_a_candidate_shorter_than_n_has_no_n_grams():
    # "a b c d" = ref: 4/4, 3/3, 2/2, 1/1; "x" vs "x y": 1/1 and no 2-, 3- or 4-grams (0 in the denominators)
    # -> p_n = 1 for every n; c = 5 < r = 6 -> BLEU = BP = exp(1 - 6/5)
    cands, refs = [S("a b c d"), ["x"]], [S("a b c d"), S("x y")]
    assert bleu4(cands, refs) == pytest.approx(math.exp(-0.2), rel=1e-12)
    # nltk's corpus_bleu on its own counts "x" as one n-gram of every order: p2 = 3/4, p3 = 2/3, p4 = 1/2
    from nltk.translate.bleu_score import corpus_bleu
    assert corpus_bleu([[r] for r in refs], cands) == pytest.approx(
        math.exp(-0.2) * (3 / 4 * 2 / 3 * 1 / 2) ** 0.25, rel=1e-12)


def _random_corpus(rng: random.Random, n_sent: int):
    vocab = [f"w{i}" for i in range(8)]
    cands, refs = [], []
    for _ in range(n_sent):
        ref = [rng.choice(vocab) for _ in range(rng.randint(4, 12))]
        cand = [t if rng.random() < 0.7 else rng.choice(vocab) for t in ref]   # noisy copy
        cand = cand[:rng.randint(4, len(cand))] + [rng.choice(vocab) for _ in range(rng.randint(0, 3))]
        cands.append(cand)
        refs.append(ref)
    return cands, refs


def test_bleu_is_nltk_corpus_bleu_where_every_candidate_has_four_tokens():
    from nltk.translate.bleu_score import corpus_bleu
    rng = random.Random(7)
    checked = 0
    for _ in range(40):
        cands, refs = _random_corpus(rng, rng.randint(1, 5))
        ours = bleu4(cands, refs)
        if ours > 0:   # nltk warns and returns a tiny float instead of 0 when a p_n is 0
            assert ours == pytest.approx(corpus_bleu([[r] for r in refs], cands), rel=1e-9)
            checked += 1
    assert checked >= 10


def test_library_metrics_reproduce_the_hand_written_implementation():
    """Values of the hand-written BLEU/ROUGE (before nltk / rouge-score) on fixed corpora with short,
    empty and repeated-token candidates, stored with their inputs."""
    reference = json.loads((DATA / "text_metrics_reference.json").read_text())["corpora"]
    assert len(reference) >= 20 and sum(c["bleu4"] > 0 for c in reference) >= 10
    for case in reference:
        cands, refs = case["candidates"], case["references"]
        assert bleu4(cands, refs) == pytest.approx(case["bleu4"], rel=1e-12, abs=1e-15)
        got = corpus_rouge(cands, refs)
        for key in ("rouge1", "rouge2", "rougeL"):
            assert got[key] == pytest.approx(case[key], rel=1e-12, abs=1e-15)


# The hashtag figures of the committed report's 12 generation cases (of its 24 held-out notes; the other
# 12 notes' generations live only in var/quality, which is not committed), computed by the hand-written
# implementation: (BLEU-4, ROUGE-1, ROUGE-2, ROUGE-L).
COMMITTED_CASE_FIGURES = {
    "notellm_no_csft": (0.0, 0.10873015873015875, 0.01388888888888889, 0.10873015873015875),
    "notellm": (0.0, 0.19761904761904767, 0.03333333333333333, 0.16428571428571428),
    "notellm_short": (0.0, 0.05555555555555555, 0.041666666666666664, 0.05555555555555555),
}


def test_committed_report_generation_cases_are_reproduced():
    from evaluation.generation import generation_metrics
    metrics = json.loads((REPORTS / "2026-11-26" / "metrics.json").read_text(encoding="utf-8"))
    cases = metrics["cases"]["generation"]
    notes = [{"note_id": c["note_id"], "category": c["true_category"], "hashtags": c["true_hashtags"]} for c in cases]
    categories = sorted({c["true_category"] for c in cases})
    for name, figures in COMMITTED_CASE_FIGURES.items():
        rows = [{k: c["generated"][name][k] for k in ("category_free", "category_constrained", "hashtags")}
                for c in cases]
        tags = generation_metrics(rows, notes, categories)["hashtags"]
        assert (tags["bleu4"], tags["rouge1"], tags["rouge2"], tags["rougeL"]) == pytest.approx(figures, rel=1e-12)
        assert tags["n"] == len(cases) == 12
    # the report's BLEU-4 of 0.0: no generated hashtag string has 4 words matching in order
    shown = {s["name"]: s["generation"]["hashtags"] for s in metrics["systems"] if s.get("generation")}
    assert {k: v["bleu4"] for k, v in shown.items()} == {k: 0.0 for k in COMMITTED_CASE_FIGURES}


# ---------------------------------------------------------------- ROUGE

def test_rouge_by_hand():
    cand, ref = S("the cat was found under the bed"), S("the cat was under the bed")
    # ROUGE-1: ref unigrams the x2, cat, was, under, bed all in cand -> overlap 6; P = 6/7, R = 6/6
    r1 = rouge_n(cand, ref, 1)
    assert (r1["precision"], r1["recall"]) == (pytest.approx(6 / 7), pytest.approx(1.0))
    assert r1["f1"] == pytest.approx(12 / 13)           # 2 * 6/7 * 1 / (6/7 + 1)
    # ROUGE-2: cand bigrams the-cat cat-was was-found found-under under-the the-bed (6)
    #          ref  bigrams the-cat cat-was was-under under-the the-bed (5); overlap 4
    r2 = rouge_n(cand, ref, 2)
    assert (r2["precision"], r2["recall"]) == (pytest.approx(4 / 6), pytest.approx(4 / 5))
    assert r2["f1"] == pytest.approx(8 / 11)            # 2 * 2/3 * 4/5 / (2/3 + 4/5) = (16/15) / (22/15)
    # ROUGE-L: LCS = "the cat was under the bed" (6) -> P = 6/7, R = 1
    assert rouge_l(cand, ref)["f1"] == pytest.approx(12 / 13)


def test_rouge_l_is_order_sensitive_where_rouge1_is_not():
    # Lin (2004)'s example: ref "police killed the gunman", cand "the gunman police killed"
    ref, cand = S("police killed the gunman"), S("the gunman police killed")
    assert rouge_n(cand, ref, 1)["f1"] == pytest.approx(1.0)      # same bag of words
    # LCS: "police killed" or "the gunman" -> 2; P = R = 2/4
    assert rouge_l(cand, ref) == {"precision": 0.5, "recall": 0.5, "f1": 0.5}
    # "police kill the gunman": LCS = police . the gunman = 3 -> 3/4
    assert rouge_l(S("police kill the gunman"), ref)["f1"] == pytest.approx(0.75)


def test_rouge_empty_sides_score_zero():
    zero = {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert rouge_n([], S("a b"), 1) == zero
    assert rouge_n(S("a b"), [], 1) == zero
    assert rouge_n([], [], 1) == zero
    assert rouge_n(["a"], ["a"], 2) == zero            # no bigrams on either side
    assert rouge_l([], []) == zero
    with pytest.raises(ValueError, match="whitespace"):
        rouge(["a b"], ["a"])                          # a token must not carry the joiner


def test_corpus_rouge_is_macro_average_over_all_examples():
    cands = [S("the cat was found under the bed"), S("a b"), []]
    refs = [S("the cat was under the bed"), S("a b"), S("x")]
    out = corpus_rouge(cands, refs)
    # per-example F1s: R1 (12/13, 1, 0), R2 (8/11, 1, 0), RL (12/13, 1, 0)
    assert out["rouge1"] == pytest.approx((12 / 13 + 1 + 0) / 3)
    assert out["rouge2"] == pytest.approx((8 / 11 + 1 + 0) / 3)
    assert out["rougeL"] == pytest.approx((12 / 13 + 1 + 0) / 3)
    assert (out["n"], out["empty_references"]) == (3, 0)
    assert corpus_rouge([["a"]], [[]])["empty_references"] == 1
    assert corpus_rouge([], []) == {"rouge1": None, "rouge2": None, "rougeL": None, "n": 0, "empty_references": 0}


def _brute_lcs(a, b) -> int:
    """Longest subsequence of a (tried longest first) that is also a subsequence of b."""
    def is_subseq(s, t):
        it = iter(t)
        return all(x in it for x in s)
    for k in range(min(len(a), len(b)), 0, -1):
        if any(is_subseq(s, b) for s in itertools.combinations(a, k)):
            return k
    return 0


def _brute_rouge_n_overlap(cand, ref, n) -> int:
    """Greedy one-to-one matching of reference n-gram occurrences to candidate occurrences."""
    cand_grams = [tuple(cand[i:i + n]) for i in range(len(cand) - n + 1)]
    used = [False] * len(cand_grams)
    hits = 0
    for i in range(len(ref) - n + 1):
        g = tuple(ref[i:i + n])
        for j, h in enumerate(cand_grams):
            if not used[j] and h == g:
                used[j] = True
                hits += 1
                break
    return hits


def test_rouge_against_brute_force():
    rng = random.Random(3)
    vocab = list("abcde")
    for _ in range(200):
        cand = [rng.choice(vocab) for _ in range(rng.randint(0, 8))]
        ref = [rng.choice(vocab) for _ in range(rng.randint(0, 8))]
        lcs = _brute_lcs(cand, ref)
        got_l = rouge_l(cand, ref)
        assert got_l["precision"] == pytest.approx(lcs / len(cand) if cand and ref else 0.0)
        assert got_l["recall"] == pytest.approx(lcs / len(ref) if cand and ref else 0.0)
        for n in (1, 2):
            overlap = _brute_rouge_n_overlap(cand, ref, n)
            got = rouge_n(cand, ref, n)
            n_c, n_r = max(len(cand) - n + 1, 0), max(len(ref) - n + 1, 0)
            assert got["precision"] == pytest.approx(overlap / n_c if n_c else 0.0)
            assert got["recall"] == pytest.approx(overlap / n_r if n_r else 0.0)


def test_hashtag_words_are_rouge_tokens_as_given():
    # rouge-score's own tokenizer would drop '#', '.' and '+' ('c#' -> 'c', 'node.js' -> 'node js'):
    # here a hashtag word is one token, compared exactly
    from rouge_score.rouge_scorer import RougeScorer
    words = hashtag_words(["C#", "node.js", "3d-printing", "#c++"])
    assert words == ["c#", "node.js", "3d", "printing", "c++"]
    assert rouge(["c#"], ["c"])["rouge1"]["f1"] == 0.0
    assert RougeScorer(["rouge1"]).score("c", "c#")["rouge1"].fmeasure == 1.0
    assert rouge(words, words)["rougeL"]["f1"] == 1.0
    # on plain lower-case words the given tokens and rouge-score's tokenizer agree
    scorer = RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    rng = random.Random(11)
    vocab = ["apple", "beer", "coffee", "dog", "egg", "fig"]
    for _ in range(50):
        cand = [rng.choice(vocab) for _ in range(rng.randint(2, 9))]
        ref = [rng.choice(vocab) for _ in range(rng.randint(2, 9))]
        theirs = scorer.score(" ".join(ref), " ".join(cand))
        ours = rouge(cand, ref)
        for key in ("rouge1", "rouge2", "rougeL"):
            assert ours[key]["f1"] == pytest.approx(theirs[key].fmeasure)


def test_hashtag_metrics_block():
    out = hashtag_metrics(CORPUS_C, CORPUS_R)
    assert out["bleu4"] == pytest.approx((162 / 3465) ** 0.25)
    assert out["rouge1"] == pytest.approx(corpus_rouge(CORPUS_C, CORPUS_R)["rouge1"])
    assert out["n"] == 2
    assert set(out) >= {"bleu4", "rouge1", "rouge2", "rougeL", "n"}


# ---------------------------------------------------------------- categories

def test_category_metrics_normalises_case_and_space():
    predicted = [" Beer ", "COFFEE", "tea", "bicycles\n"]
    true = ["beer", "coffee", "coffee", "Bicycles "]
    known = {"Beer", "coffee ", "bicycles"}
    # beer == beer, coffee == coffee, tea != coffee, bicycles == bicycles -> 3/4
    # "tea" is the only prediction outside {beer, coffee, bicycles} -> 1/4
    assert category_metrics(predicted, true, known) == {"accuracy": 0.75, "outside_known": 0.25, "n": 4}
    # a wrong but known category is not "outside"
    assert category_metrics(["beer"], ["coffee"], known) == {"accuracy": 0.0, "outside_known": 0.0, "n": 1}
    assert category_metrics([], [], known) == {"accuracy": None, "outside_known": None, "n": 0}
    with pytest.raises(ValueError):
        category_metrics(["beer"], [], known)


# ---------------------------------------------------------------- hashtag parsing

@pytest.mark.parametrize("tags", [
    ["python"],
    ["python", "numpy", "pandas"],
    ["c#", "asp.net", ".net", "c++"],          # Stack Exchange tags with '#', '.', '+'
    ["dark comedy", "quentin tarantino"],      # MovieLens user tags contain spaces
    ["beer-style", "ipa"],
])
def test_parse_hashtags_inverts_prompt_output_text(tags):
    assert parse_hashtags(output_text("hashtag", "unused", tags)) == tags


def test_parse_hashtags_other_formats():
    assert parse_hashtags("#Python #NumPy #python") == ["python", "numpy"]     # '#'-marked, dedupe after lower()
    assert parse_hashtags("python numpy") == ["python", "numpy"]              # space separated
    assert parse_hashtags(" #a #b, #c d\n") == ["a", "b", "c d"]               # comma list with '#' inside
    assert parse_hashtags("'beer', \"ipa\" ,, ") == ["beer", "ipa"]           # quotes and empty pieces
    assert parse_hashtags("c#, f#") == ["c#", "f#"]                            # only a leading '#' is a marker
    assert parse_hashtags("") == [] and parse_hashtags("  , #") == []


def test_generated_labels_lose_sentence_punctuation_only():
    from evaluation.text_metrics import normalise_label
    assert normalise_label(' "Coffee." ') == "coffee"
    assert normalise_label("3dprinting.meta") == "3dprinting.meta"
    assert category_metrics(["Coffee.", "Beer!", "3dprinting.meta."], ["coffee", "beer", "3dprinting.meta"],
                            ["coffee", "beer", "3dprinting.meta"]) == {"accuracy": 1.0, "outside_known": 0.0, "n": 3}


def test_parse_hashtags_drops_list_numbering_and_sentence_ends():
    assert parse_hashtags("1. blockchain. 2. bitcoin. 3.") == ["blockchain", "bitcoin"]
    assert parse_hashtags("1) node.js, 2) c#") == ["node.js", "c#"]
    assert parse_hashtags("42") == ["42"]          # a bare number without a list marker is a tag



def test_normalisation_strips_quotes_and_punctuation_in_any_order():
    from evaluation.text_metrics import normalise_label, normalise_tag
    assert normalise_label('"Coffee".') == normalise_label('"Coffee"!') == "coffee"
    assert parse_hashtags('"blockchain", "bitcoin".') == ["blockchain", "bitcoin"]
    assert parse_hashtags("1. c++\n2. .net") == ["c++", ".net"]
    assert parse_hashtags("asp.net., web 2.0") == ["asp.net", "web 2.0"]
    assert normalise_tag(" '#Node.js.' ") == "node.js"
