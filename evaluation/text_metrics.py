"""Text-generation metrics for the quality report (NoteLLM, Zhang et al., WWW 2024, Sec. 5.5).

The paper scores category generation by exact-match accuracy (plus the share of
generated categories outside the known set) and hashtag generation by BLEU-4 and
ROUGE-1/2/L against the note's held-out hashtags. BLEU comes from ``nltk``
(``corpus_bleu``), ROUGE from Google's ``rouge-score``; this module only keeps
what is specific to the report: the tokenisation of hashtags (one generated
string -> normalised hashtags -> word tokens, :func:`parse_hashtags`,
:func:`hashtag_words`), the corpus conventions below, and category accuracy.

Conventions (unchanged from the earlier hand-written implementation, whose
values on fixed corpora the tests pin):

* ``Count_s(g)`` is the number of times n-gram ``g`` occurs in token list ``s``;
  ``G_n(s)`` is the multiset of n-grams of ``s`` (``max(len(s) - n + 1, 0)`` of them).
* One reference per candidate; tokens are given, the libraries' own
  tokenisers are bypassed (a hashtag word such as ``c#`` or ``node.js`` stays one token).
* Scores are fractions in [0, 1]; the report multiplies by 100.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Iterable, Sequence

import numpy as np

BLEU_MAX_N = 4
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def _check_parallel(candidates: Sequence, references: Sequence) -> None:
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} references; "
                         "one reference per candidate is required")


class _NoMatch(Exception):
    """Some order n has no clipped match in the whole corpus: unsmoothed BLEU is 0."""


def bleu4(candidates: Sequence[Sequence[str]], references: Sequence[Sequence[str]]) -> float:
    """Corpus-level BLEU-4 (Papineni et al., 2002) by ``nltk.translate.bleu_score.corpus_bleu``,
    one reference per candidate, no smoothing.

    Modified n-gram precision pooled over the corpus (clipped counts summed over
    all sentences before dividing, not averaged per sentence)::

        p_n  = sum_i sum_{g in G_n(c_i)} min(Count_{c_i}(g), Count_{r_i}(g))
               / sum_i |G_n(c_i)|                                     n = 1..4
        BP   = 1 if c > r else exp(1 - r / c),   c = sum_i |c_i|,  r = sum_i |r_i|
        BLEU = BP * exp( sum_{n=1..4} (1/4) * log p_n )

    Two nltk conventions are undone through its smoothing hook, which receives
    the pooled p_n as unreduced fractions: nltk counts a candidate shorter than
    n as one n-gram in the denominator (``max(1, |G_n(c_i)|)``), here it counts
    zero, as above (and as sacrebleu does); and where some p_n is 0 nltk warns
    and returns about 1e-77, here BLEU is exactly 0.0 (no 4-gram match anywhere,
    or no candidate with 4 tokens). Also 0.0 for an empty corpus or when every
    candidate is empty (c = 0).
    """
    from nltk.translate.bleu_score import corpus_bleu

    _check_parallel(candidates, references)
    cands = [list(c) for c in candidates]
    if not any(cands):
        return 0.0
    short = [sum(1 for c in cands if len(c) < n) for n in range(1, BLEU_MAX_N + 1)]

    def unsmoothed(p_n, **_):
        if any(p.numerator == 0 for p in p_n):
            raise _NoMatch
        return [Fraction(p.numerator, p.denominator - s) for p, s in zip(p_n, short)]

    try:
        return float(corpus_bleu([[list(r)] for r in references], cands, smoothing_function=unsmoothed))
    except _NoMatch:
        return 0.0


class _GivenTokens:
    """rouge-score tokenizer for text that is already tokens joined by single spaces."""

    @staticmethod
    def tokenize(text: str) -> list[str]:
        return text.split(" ") if text else []


_SCORER = None


def _scorer():
    global _SCORER
    if _SCORER is None:
        from rouge_score.rouge_scorer import RougeScorer
        _SCORER = RougeScorer(list(ROUGE_TYPES), use_stemmer=False, tokenizer=_GivenTokens())
    return _SCORER


def _join(tokens: Sequence[str]) -> str:
    for t in tokens:
        if not t or any(ch.isspace() for ch in t):
            raise ValueError(f"token {t!r}: ROUGE tokens must be non-empty and contain no whitespace")
    return " ".join(tokens)


def rouge(cand: Sequence[str], ref: Sequence[str]) -> dict:
    """ROUGE-1, ROUGE-2 and ROUGE-L (Lin 2004) of one candidate against one reference, by
    ``rouge_score.rouge_scorer.RougeScorer`` on the given tokens (no stemming)::

        ROUGE-N:  overlap = sum_{g in G_n(ref)} min(Count_cand(g), Count_ref(g))
                  P = overlap / |G_n(cand)|,   R = overlap / |G_n(ref)|
        ROUGE-L:  P = LCS(cand, ref) / |cand|, R = LCS(cand, ref) / |ref|   (sentence level)
        F1 = 2 P R / (P + R)

    A side with no n-grams (empty, or shorter than n) scores P = R = F1 = 0, so an
    empty candidate or reference gets no credit. Returns
    ``{"rouge1" | "rouge2" | "rougeL": {"precision", "recall", "f1"}}``.
    """
    scores = _scorer().score(_join(ref), _join(cand))      # rouge-score takes (target, prediction)
    return {k: {"precision": scores[k].precision, "recall": scores[k].recall, "f1": scores[k].fmeasure}
            for k in ROUGE_TYPES}


def corpus_rouge(cands: Sequence[Sequence[str]], refs: Sequence[Sequence[str]]) -> dict:
    """Macro-averaged ROUGE F1 over examples::

        rouge1 = (1/N) sum_i F1(ROUGE-1(c_i, r_i)), rouge2 likewise, rougeL with ROUGE-L

    Every example counts, including those with an empty candidate or reference
    (they score 0, see :func:`rouge`), so N is always the number of examples;
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
    per_example = [rouge(c, r) for c, r in zip(cands, refs)]
    for key in ROUGE_TYPES:
        out[key] = float(np.mean([s[key]["f1"] for s in per_example]))
    return out


def hashtag_metrics(generated: Sequence[Sequence[str]], true: Sequence[Sequence[str]]) -> dict:
    """The report's hashtag row: corpus BLEU-4 and macro ROUGE-1/2/L F1.

    Returns ``{"bleu4", "rouge1", "rouge2", "rougeL", "n", "empty_references"}``
    (the ``generation.hashtags`` block of the results schema); the tokens are
    the word tokens of :func:`hashtag_words`.
    """
    rouge_block = corpus_rouge(generated, true)
    return {"bleu4": bleu4(generated, true) if generated else None, **rouge_block}


def hashtag_words(tags: Sequence[str]) -> list[str]:
    """Hashtags as word tokens for BLEU/ROUGE: ``'3d-printing'`` -> ``['3d', 'printing']``.

    Lower-cased, a leading ``#`` dropped, split on hyphens, underscores and
    whitespace; every other character stays (``c#``, ``node.js``, ``c++``)."""
    return [w for t in tags for w in re.split(r"[-_\s]+", t.lower().lstrip("#")) if w]


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
