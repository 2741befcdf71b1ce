"""Text-generation metrics for the quality report (NoteLLM, Zhang et al., WWW 2024, Sec. 5.5).

The paper scores category generation by exact-match accuracy (plus the share of
generated categories outside the known set) and hashtag generation by BLEU-4 and
ROUGE-1/2/L against the note's held-out hashtags. Everything here is a pure
function over token lists; the caller decides what a token is (for hashtags,
one hashtag = one token, see :func:`parse_hashtags`; for prose, words).

Conventions used throughout:

* ``Count_s(g)`` is the number of times n-gram ``g`` occurs in token list ``s``;
  ``G_n(s)`` is the multiset of n-grams of ``s`` (``max(len(s) - n + 1, 0)`` of them).
* One reference per candidate.
* Scores are fractions in [0, 1]; the report multiplies by 100.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Iterable, Sequence

import numpy as np

BLEU_MAX_N = 4


def ngrams(tokens: Sequence[str], n: int) -> Counter:
    """Multiset ``G_n(tokens)`` of n-grams (tuples), ``max(len - n + 1, 0)`` in total."""
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _clipped_matches(cand: Sequence[str], ref: Sequence[str], n: int) -> tuple[int, int]:
    """(sum_g min(Count_cand(g), Count_ref(g)), |G_n(cand)|) for one pair."""
    c, r = ngrams(cand, n), ngrams(ref, n)
    return sum(min(k, r[g]) for g, k in c.items()), max(len(cand) - n + 1, 0)


def _brevity_penalty(c: int, r: int) -> float:
    """BP = 1 if c > r else exp(1 - r / c)   (c > 0 assumed by the callers)."""
    return 1.0 if c > r else math.exp(1.0 - r / c)


def _check_parallel(candidates: Sequence, references: Sequence) -> None:
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} references; "
                         "one reference per candidate is required")


def bleu4(candidates: Sequence[Sequence[str]], references: Sequence[Sequence[str]]) -> float:
    """Corpus-level BLEU-4 (Papineni et al., 2002), one reference per candidate, no smoothing.

    Modified n-gram precision pooled over the corpus (clipped counts summed over
    all sentences before dividing, as in the paper, not averaged per sentence)::

        p_n  = sum_i sum_{g in G_n(c_i)} min(Count_{c_i}(g), Count_{r_i}(g))
               / sum_i |G_n(c_i)|                                     n = 1..4
        BP   = 1 if c > r else exp(1 - r / c),   c = sum_i |c_i|,  r = sum_i |r_i|
        BLEU = BP * exp( sum_{n=1..4} (1/4) * log p_n )

    Without smoothing the geometric mean is 0 as soon as one p_n is 0 (no
    matching 4-gram anywhere in the corpus, or no candidate with 4 tokens at
    all, which makes the denominator 0): then this returns exactly 0.0. It also
    returns 0.0 for an empty corpus or when every candidate is empty (c = 0).
    Use :func:`sentence_bleu4` with add-one smoothing to score single examples.
    """
    _check_parallel(candidates, references)
    c = sum(len(x) for x in candidates)
    r = sum(len(x) for x in references)
    if c == 0:
        return 0.0
    log_sum = 0.0
    for n in range(1, BLEU_MAX_N + 1):
        matched = total = 0
        for cand, ref in zip(candidates, references):
            m, t = _clipped_matches(cand, ref, n)
            matched += m
            total += t
        if matched == 0 or total == 0:
            return 0.0
        log_sum += math.log(matched / total) / BLEU_MAX_N
    return _brevity_penalty(c, r) * math.exp(log_sum)


def sentence_bleu4(candidate: Sequence[str], reference: Sequence[str], smoothing: str = "add1") -> float:
    """BLEU-4 of one candidate against one reference, for per-example display.

    With ``m_n`` = clipped n-gram matches and ``l_n = max(len(cand) - n + 1, 0)``
    the number of candidate n-grams:

    * ``smoothing="add1"`` (Lin & Och 2004, ORANGE, "BLEU-S"): add one to the
      numerator and the denominator of the precisions of order n > 1 only::

          p_1 = m_1 / l_1,    p_n = (m_n + 1) / (l_n + 1)   for n = 2..4

      so a short candidate without 4-gram matches still gets a non-zero score
      (a 1-token candidate has l_n = 0 and p_n = 1 for n > 1). p_1 = 0 (no
      unigram match, or an empty candidate) still gives 0.
    * ``smoothing="none"``: p_n = m_n / l_n; 0 as soon as any p_n is 0
      (identical to :func:`bleu4` on a one-sentence corpus).

    ``BLEU = BP * exp(sum_n (1/4) log p_n)`` with BP as in :func:`bleu4`.
    """
    if smoothing == "none":
        return bleu4([candidate], [reference])
    if smoothing != "add1":
        raise ValueError(f"unknown smoothing {smoothing!r} (expected 'add1' or 'none')")
    if not candidate:
        return 0.0
    log_sum = 0.0
    for n in range(1, BLEU_MAX_N + 1):
        m, t = _clipped_matches(candidate, reference, n)
        if n == 1:
            if m == 0:
                return 0.0
            p = m / t
        else:
            p = (m + 1) / (t + 1)
        log_sum += math.log(p) / BLEU_MAX_N
    return _brevity_penalty(len(candidate), len(reference)) * math.exp(log_sum)


def _prf(overlap: int, cand_total: int, ref_total: int) -> dict:
    """precision = overlap / cand_total (0 if cand_total = 0), recall likewise,
    F1 = 2PR / (P + R) (0 if P + R = 0)."""
    p = overlap / cand_total if cand_total else 0.0
    r = overlap / ref_total if ref_total else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f}


def rouge_n(cand: Sequence[str], ref: Sequence[str], n: int) -> dict:
    """ROUGE-N (Lin 2004) of one candidate against one reference::

        overlap   = sum_{g in G_n(ref)} min(Count_cand(g), Count_ref(g))
        precision = overlap / |G_n(cand)|,   recall = overlap / |G_n(ref)|
        F1        = 2 * P * R / (P + R)

    Empty handling: a side with no n-grams (empty, or shorter than n) has its
    ratio defined as 0, so an empty candidate or an empty reference scores
    P = R = F1 = 0 (both empty included): a system that generates nothing gets
    no credit. Returns ``{"precision", "recall", "f1"}``.
    """
    if n < 1:
        raise ValueError(f"ROUGE-N needs n >= 1, got {n}")
    c, r = ngrams(cand, n), ngrams(ref, n)
    overlap = sum(min(k, c[g]) for g, k in r.items())
    return _prf(overlap, sum(c.values()), sum(r.values()))


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (dynamic programming, O(|a| |b|))."""
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(cand: Sequence[str], ref: Sequence[str]) -> dict:
    """ROUGE-L, sentence level (Lin 2004, Sec. 3.1), with beta = 1::

        P_lcs = LCS(cand, ref) / |cand|,   R_lcs = LCS(cand, ref) / |ref|
        F_lcs = (1 + beta^2) R P / (R + beta^2 P) = 2 P R / (P + R)

    Empty handling as in :func:`rouge_n` (0 for an empty side).
    """
    return _prf(lcs_length(cand, ref), len(cand), len(ref))


def corpus_rouge(cands: Sequence[Sequence[str]], refs: Sequence[Sequence[str]]) -> dict:
    """Macro-averaged ROUGE F1 over examples::

        rouge1 = (1/N) sum_i F1(ROUGE-1(c_i, r_i)), rouge2 likewise, rougeL with ROUGE-L

    Every example counts, including those with an empty candidate or reference
    (they score 0, see :func:`rouge_n`), so N is always the number of examples;
    ``empty_references`` reports how many references were empty so that a
    caller who forgot to drop notes without hashtags notices. For N = 0 the
    scores are None. Returns ``{"rouge1", "rouge2", "rougeL", "n", "empty_references"}``.
    """
    _check_parallel(cands, refs)
    n = len(cands)
    out = {"rouge1": None, "rouge2": None, "rougeL": None, "n": n,
           "empty_references": sum(1 for r in refs if not r)}
    if n == 0:
        return out
    out["rouge1"] = float(np.mean([rouge_n(c, r, 1)["f1"] for c, r in zip(cands, refs)]))
    out["rouge2"] = float(np.mean([rouge_n(c, r, 2)["f1"] for c, r in zip(cands, refs)]))
    out["rougeL"] = float(np.mean([rouge_l(c, r)["f1"] for c, r in zip(cands, refs)]))
    return out


def hashtag_metrics(generated: Sequence[Sequence[str]], true: Sequence[Sequence[str]]) -> dict:
    """The report's hashtag row: corpus BLEU-4 and macro ROUGE-1/2/L F1.

    Returns ``{"bleu4", "rouge1", "rouge2", "rougeL", "n", "empty_references"}``
    (the ``generation.hashtags`` block of the results schema). Tokens are
    hashtags in generated order vs the note's hashtag order.
    """
    rouge = corpus_rouge(generated, true)
    return {"bleu4": bleu4(generated, true) if generated else None, **rouge}


_QUOTES_START = re.compile(r"^[\s\"'`]+")
_LABEL_END = re.compile(r"[\s\"'`.!?,;:]+$")       # quotes and sentence punctuation, in any order
_TAG_END = re.compile(r"[\s\"'`.]+$")              # quotes and full stops; '.net' keeps its leading dot


def normalise_tag(text: str) -> str:
    """One hashtag as a comparison key: surrounding whitespace and quotes, a
    *leading* ``#`` and *trailing* full stops removed (``node.js``, ``c#``,
    ``.net`` stay), inner whitespace collapsed, lower-cased. Applied to
    generated and true hashtags alike."""
    tag = _TAG_END.sub("", _QUOTES_START.sub("", text)).lstrip("#")
    return " ".join(tag.split()).lower()


def normalise_label(text: str) -> str:
    """Category comparison key: surrounding whitespace and quotes and trailing
    sentence punctuation removed, case folded (``' "Coffee." '`` -> ``coffee``).

    A free-running model ends its answer like a sentence; that full stop is not
    part of the label. Inner punctuation stays (``3dprinting.meta``)."""
    return _LABEL_END.sub("", _QUOTES_START.sub("", text)).casefold()


def category_metrics(predicted: Sequence[str], true: Sequence[str], known: Iterable[str]) -> dict:
    """Category generation quality, after ``norm`` = :func:`normalise_label`::

        accuracy      = |{i : norm(pred_i) == norm(true_i)}| / N
        outside_known = |{i : norm(pred_i) not in {norm(k) : k in known}}| / N

    ``outside_known`` is the share of hallucinated categories (0 by
    construction in constrained mode). For N = 0 both are None.
    Returns ``{"accuracy", "outside_known", "n"}``.
    """
    _check_parallel(predicted, true)
    n = len(predicted)
    if n == 0:
        return {"accuracy": None, "outside_known": None, "n": 0}
    known_norm = {normalise_label(k) for k in known}
    pred = [normalise_label(p) for p in predicted]
    hits = sum(p == normalise_label(t) for p, t in zip(pred, true))
    outside = sum(p not in known_norm for p in pred)
    return {"accuracy": hits / n, "outside_known": outside / n, "n": n}


_ENUMERATION = re.compile(r"^\d+[.)](\s+|$)")           # '1.' / '2) x': list numbering, not a tag
_LIST_SEPARATORS = re.compile(r"[,;\n\uff0c\u3001]")   # comma, semicolon, newline, full-width comma, ideographic comma
_TAG_START = re.compile(r"\s+(?=#)")                    # whitespace before a '#'-marked tag


def parse_hashtags(text: str) -> list[str]:
    """Split a generated hashtag string into normalised hashtags.

    Inverts :func:`notellm.prompts.output_text` for the hashtag task, which
    renders ``" " + ", ".join(hashtags)``, and tolerates the other formats a
    model drifts into (``#a #b``, ``a b c``, trailing newline):

    1. If the text contains a list separator (``,`` ``;`` newline, full-width
       comma), split on those only, so a multi-word tag ("dark comedy", as in
       MovieLens user tags) survives; inside a piece, whitespace followed by
       ``#`` still starts a new tag (``#a #b, #c``).
    2. Otherwise split on whitespace (``a b c`` / ``#a #b``); a single
       multi-word tag without any separator cannot be told apart from several
       one-word tags and is split.
    3. Each tag: strip whitespace and surrounding quotes, drop *leading* ``#``
       only (so ``c#`` and ``f#`` stay intact) and a *trailing* full stop (a
       sentence end; ``node.js`` stays), collapse inner whitespace,
       lower-case; list numbering (``1.``, ``2) x``) is removed, empty tags are dropped
       and duplicates removed keeping the first occurrence.
    """
    if not text:
        return []
    if _LIST_SEPARATORS.search(text):
        pieces = [p for chunk in _LIST_SEPARATORS.split(text) for p in _TAG_START.split(chunk)]
    else:
        pieces = text.split()
    tags: list[str] = []
    for piece in pieces:
        tag = normalise_tag(_ENUMERATION.sub("", _QUOTES_START.sub("", piece)))
        if tag and tag not in tags:
            tags.append(tag)
    return tags
