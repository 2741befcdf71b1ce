"""Category and hashtag generation of the NoteLLM variants on held-out notes, and
the report's generation metrics computed from the raw generations."""

from __future__ import annotations

from typing import Sequence

from evaluation import text_metrics


def generate_for(encoder, gen_notes: Sequence[dict], categories: Sequence[str]) -> dict:
    """Free and constrained category generation and hashtag generation on held-out notes."""
    rows = []
    for note in gen_notes:
        j = min(5, len(note["hashtags"]))
        text = encoder.generate(note, task="hashtag", j=j, max_new_tokens=24)
        rows.append({"note_id": note["note_id"],
                     "category_free": encoder.generate(note, task="category", max_new_tokens=16),
                     "category_constrained": encoder.generate(note, task="category", allowed_outputs=categories),
                     "hashtags_text": text, "hashtags": text_metrics.parse_hashtags(text)})
    return {"rows": rows, **generation_metrics(rows, gen_notes, categories)}


def generation_metrics(rows: Sequence[dict], gen_notes: Sequence[dict], categories: Sequence[str]) -> dict:
    """Category accuracy / outside-known share and hashtag BLEU-4 / ROUGE from the
    raw generations, so a change of the parsing or the metrics applies to cached
    generations too (rows cached before the raw hashtag text was kept are
    re-parsed from their stored list). Hashtags are compared as word tokens
    (:func:`evaluation.text_metrics.hashtag_words`), true ones normalised like
    generated ones."""
    true_cat = [n["category"] for n in gen_notes]
    known = set(categories)
    cands = [text_metrics.hashtag_words(row_hashtags(r)) for r in rows]
    refs = [text_metrics.hashtag_words([text_metrics.normalise_tag(t) for t in n["hashtags"]]) for n in gen_notes]
    return {"category_free": text_metrics.category_metrics([r["category_free"] for r in rows], true_cat, known),
            "category_constrained": text_metrics.category_metrics([r["category_constrained"] for r in rows],
                                                                  true_cat, known),
            "hashtags": text_metrics.hashtag_metrics(cands, refs)}


def row_hashtags(row: dict) -> list[str]:
    """A cached row's hashtags, parsed from its raw text when it has one."""
    return text_metrics.parse_hashtags(row["hashtags_text"] if "hashtags_text" in row else ", ".join(row["hashtags"]))
