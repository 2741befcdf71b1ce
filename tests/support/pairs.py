"""A small synthetic notes + pairs data set in the real contracts, for tests,
smoke runs and the CI demo (not for quality claims).

Notes belong to topics (the category); each related pair shares its topic
and one pair-specific keyword, so retrieval is learnable but not trivial.
"""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import pyarrow as pa

from notellm.contracts import NOTES, PAIRS, POOL, mark_success, partition_dir, write_table

TOPICS = {
    "coffee": ["espresso", "grinder", "roast", "beans", "crema", "pourover", "aeropress", "latte"],
    "bicycles": ["chain", "derailleur", "saddle", "tire", "brake", "frame", "spokes", "cassette"],
    "beer": ["hops", "lager", "stout", "yeast", "brewery", "ale", "malt", "keg"],
    "economics": ["inflation", "market", "tariff", "interest", "supply", "demand", "budget", "trade"],
}
KEYWORDS = ["amber", "bolt", "cedar", "delta", "ember", "fjord", "glyph", "harbor", "iris", "jade", "kelp",
            "lumen", "maple", "nectar", "onyx", "pixel", "quartz", "raven", "sable", "tundra", "umber", "violet",
            "willow", "xenon", "yarrow", "zephyr", "acorn", "birch", "comet", "dune", "eagle", "flint"]


def make_notes_and_pairs(n_pairs: int = 16, seed: int = 0, missing: int = 0):
    """Return (notes rows, pairs rows). ``missing`` extra pairs point at unknown notes."""
    rng = random.Random(seed)
    created = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
    topics = list(TOPICS)
    notes, pairs = [], []
    for p in range(n_pairs):
        topic = topics[p % len(topics)]
        key = KEYWORDS[p % len(KEYWORDS)] + (str(p // len(KEYWORDS)) if p >= len(KEYWORDS) else "")
        ids = []
        for side in "ab":
            words = rng.sample(TOPICS[topic], 4)
            nid = f"n{p:04d}{side}"
            notes.append({"note_id": nid, "title": f"{key} {words[0]} question {side}",
                          "content": f"About {key}: {' '.join(words)} and more on {words[1]} with {key}.",
                          "hashtags": [topic, words[2], key], "category": topic, "created_at": created})
            ids.append(nid)
        pairs.append((ids[0], ids[1]))
    for m in range(missing):
        pairs.append((f"n{m:04d}a", f"ghost{m}"))
    return notes, pairs


def write_dataset(root: str | Path, n_pairs: int = 16, seed: int = 0, missing: int = 0,
                  day: dt.date = dt.date(2026, 11, 25), success: bool = True) -> tuple[Path, Path]:
    """Write ``<root>/notes/notes.parquet``, ``<root>/pairs/dt=<day>/pairs.parquet`` and a pool of
    all notes ``<root>/pool/dt=<day>/pool.parquet``.
    Returns (pairs partition dir, notes root)."""
    root = Path(root)
    notes, pairs = make_notes_and_pairs(n_pairs, seed, missing)
    write_table(pa.Table.from_pylist(notes, schema=NOTES.arrow_schema), root / "notes" / "notes.parquet", NOTES)
    part = partition_dir(root / "pairs", day)
    rows = [{"src_note_id": a, "dst_note_id": b, "score": 1.0, "n_users": 2, "rank": 1,
             "window_start": dt.date(2026, 11, 1), "window_end": day} for a, b in pairs]
    write_table(pa.Table.from_pylist(rows, schema=PAIRS.arrow_schema), part / "pairs.parquet", PAIRS)
    if success:
        mark_success(part, {"pairs": len(rows)})
    pool_dir = partition_dir(root / "pool", day)
    write_table(pa.Table.from_pylist([{"note_id": n["note_id"]} for n in notes], schema=POOL.arrow_schema),
                pool_dir / "pool.parquet", POOL)
    mark_success(pool_dir, {"notes": len(notes)})
    return part, root
