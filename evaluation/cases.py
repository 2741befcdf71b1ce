"""The report's cases (the paper's Figure 3 style): random queries with each
system's top-3 neighbours, and the generations next to the truth."""

from __future__ import annotations

import random
from typing import Mapping, Sequence

import numpy as np

from evaluation import scoring
from evaluation.generation import row_hashtags


def note_view(note: Mapping) -> dict:
    return {"note_id": note["note_id"], "title": note["title"], "category": note["category"],
            "hashtags": list(note["hashtags"])}


def query_cases(cooccurrence: Sequence[tuple[str, str]], scores_of: Mapping[str, np.ndarray],
                pool_notes: Sequence[Mapping], row: Mapping[str, int], n_cases: int, seed: int) -> list[dict]:
    """``n_cases`` random test pairs (seeded): the query, its truth and each system's top 3."""
    picks = random.Random(seed + 1).sample(list(cooccurrence), min(n_cases, len(cooccurrence)))
    queries = []
    for q, t in picks:
        truths = {b for a, b in cooccurrence if a == q}
        neigh = {name: [{**note_view(pool_notes[i]), "is_truth": pool_notes[i]["note_id"] in truths}
                        for i in scoring.top_neighbours(scores, row[q], 3)]
                 for name, scores in scores_of.items()}
        queries.append({"query": note_view(pool_notes[row[q]]), "truth": note_view(pool_notes[row[t]]),
                        "neighbours": neigh})
    return queries


def generation_cases(generation_of: Mapping[str, dict | None], gen_notes: Sequence[Mapping], n_cases: int
                     ) -> list[dict]:
    """The first ``n_cases`` held-out notes with every generating system's outputs."""
    out = []
    for i, note in enumerate(gen_notes[:n_cases]):
        gen = {}
        for name, g in generation_of.items():
            if g:
                r = g["rows"][i]
                gen[name] = {"category_free": r["category_free"], "category_constrained": r["category_constrained"],
                             "hashtags": row_hashtags(r)}
        out.append({"note_id": note["note_id"], "title": note["title"], "true_category": note["category"],
                    "true_hashtags": list(note["hashtags"]), "generated": gen})
    return out
