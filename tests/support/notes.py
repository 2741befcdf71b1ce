"""Synthetic notes and clustered vectors in the real contracts, for the indexing
tests and the index benchmark."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import numpy as np
import pyarrow as pa

from notellm.contracts import NOTES, write_table

_WORDS = ("coffee espresso grinder beans roast bicycle chain gear brake tyre beer hops malt yeast lager "
          "database index query join schema history empire war treaty startup funding pitch market "
          "music chord guitar piano scale printer nozzle filament bed layer").split()
_CATEGORIES = ("coffee", "bicycles", "beer", "dba", "history", "startups", "music", "3dprinting")


def synthetic_note(i: int, rng: random.Random, version: int = 0) -> dict:
    cat = _CATEGORIES[i % len(_CATEGORIES)]
    n_title = rng.randint(2, 8)
    n_content = rng.randint(3, 40)  # very different lengths, so length sorting matters
    return {
        "note_id": f"n{i:05d}",
        "title": " ".join(rng.choice(_WORDS) for _ in range(n_title)) + (f" v{version}" if version else ""),
        "content": " ".join(rng.choice(_WORDS) for _ in range(n_content)),
        "hashtags": rng.sample(_WORDS, rng.randint(0, 3)),
        "category": cat,
        "created_at": dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc) + dt.timedelta(hours=i),
    }


def notes_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=NOTES.arrow_schema)


def make_notes(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [synthetic_note(i, rng) for i in range(n)]


def write_notes(rows: list[dict], path: str | Path) -> Path:
    return write_table(notes_table(rows), path, NOTES)


def clustered_vectors(n: int, d: int, clusters: int = 64, noise: float = 0.35, seed: int = 0) -> np.ndarray:
    """L2-normalised float32 vectors around random centres (like real embeddings: clustered, not uniform)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + noise * rng.standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)
