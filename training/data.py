"""Training data: related pairs joined to notes, and the CSFT task mix.

I/O (:func:`load_pairs`, :func:`load_notes`) is separate from the pure
transforms (:func:`clean_pairs`, :func:`assign_tasks`, :func:`batch_examples`).
Nothing is dropped silently: :class:`PairReport` counts every pair read, every
pair refused and why, and the driver writes it next to the model.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import random
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from notellm.contracts import NOTES, PAIRS, ContractError, read_table, require_success
from notellm.prompts import sample_hashtags

NOTE_FIELDS = ("title", "content", "hashtags", "category")


@dataclasses.dataclass
class PairReport:
    pairs_read: int = 0
    self_pairs: int = 0                 # src == dst
    duplicate_pairs: int = 0            # same unordered pair seen before (either direction)
    missing_note_pairs: int = 0         # a note of the pair is not in the notes table
    missing_note_ids: int = 0           # distinct missing ids
    missing_note_examples: list = dataclasses.field(default_factory=list)
    pairs_used: int = 0
    window_start: str | None = None
    window_end: str | None = None
    partition_stats: dict = dataclasses.field(default_factory=dict)

    def check(self) -> None:
        assert self.pairs_read == self.self_pairs + self.duplicate_pairs + self.missing_note_pairs + self.pairs_used

    def summary(self) -> str:
        return (f"pairs read {self.pairs_read}: used {self.pairs_used}, dropped {self.self_pairs} self-pairs, "
                f"{self.duplicate_pairs} duplicates, {self.missing_note_pairs} with a note missing from the notes "
                f"table ({self.missing_note_ids} distinct ids, e.g. {self.missing_note_examples[:5]})")


def load_pairs(pairs_dir: str | os.PathLike) -> tuple[list[tuple[str, str]], dict]:
    """Read one completed PAIRS partition (refused without ``_SUCCESS``)."""
    pairs_dir = Path(pairs_dir)
    stats = require_success(pairs_dir)
    table = read_table(pairs_dir, PAIRS)
    src = table.column("src_note_id").to_pylist()
    dst = table.column("dst_note_id").to_pylist()
    meta = {"stats": stats}
    if table.num_rows:
        meta["window_start"] = min(table.column("window_start").to_pylist()).isoformat()
        meta["window_end"] = max(table.column("window_end").to_pylist()).isoformat()
    return list(zip(src, dst)), meta


def notes_path(path: str | os.PathLike) -> Path:
    """Accept the NOTES file itself or its root (``<root>/notes/notes.parquet``)."""
    path = Path(path)
    for candidate in (path, path / "notes.parquet", path / "notes" / "notes.parquet"):
        if candidate.is_file():
            return candidate
    return path if path.suffix == ".parquet" or (path.is_dir() and any(path.glob("*.parquet"))) else \
        path / "notes" / "notes.parquet"


def load_notes(path: str | os.PathLike, note_ids: set[str] | None = None) -> dict[str, dict]:
    """note_id -> {title, content, hashtags, category}; only ``note_ids`` when given."""
    path = notes_path(path)
    table = read_table(path, NOTES, columns=["note_id", *NOTE_FIELDS])
    ids = table.column("note_id").to_pylist()
    cols = {f: table.column(f).to_pylist() for f in NOTE_FIELDS}
    notes = {}
    for i, nid in enumerate(ids):
        if note_ids is not None and nid not in note_ids:
            continue
        if nid in notes:
            raise ContractError(str(path), "note_id", f"duplicate note_id {nid!r} (the contract says unique)")
        notes[nid] = {"note_id": nid, **{f: cols[f][i] for f in NOTE_FIELDS}}
    return notes


def clean_pairs(pairs: Sequence[tuple[str, str]], notes: Mapping[str, Mapping]
                ) -> tuple[list[tuple[str, str]], PairReport]:
    """Drop self-pairs, repeated unordered pairs and pairs with an unknown note; count each."""
    report = PairReport(pairs_read=len(pairs))
    seen: set[tuple[str, str]] = set()
    missing: set[str] = set()
    kept = []
    for a, b in pairs:
        if a == b:
            report.self_pairs += 1
            continue
        key = (a, b) if a < b else (b, a)
        if key in seen:
            report.duplicate_pairs += 1
            continue
        seen.add(key)
        absent = [n for n in (a, b) if n not in notes]
        if absent:
            report.missing_note_pairs += 1
            missing.update(absent)
            continue
        kept.append((a, b))
    report.pairs_used = len(kept)
    report.missing_note_ids = len(missing)
    report.missing_note_examples = sorted(missing)[:20]
    report.check()
    return kept, report


def refuse_missing(report: PairReport, max_missing_fraction: float, pairs_dir, notes_file) -> None:
    """ContractError when more than ``max_missing_fraction`` of the pairs reference notes absent
    from the notes table (a sign the two inputs do not belong together)."""
    if report.pairs_read and report.missing_note_pairs / report.pairs_read > max_missing_fraction:
        raise ContractError(str(pairs_dir), "src_note_id/dst_note_id",
                            f"{report.missing_note_pairs} of {report.pairs_read} pairs reference notes missing from "
                            f"{notes_path(notes_file)} (more than {max_missing_fraction:.0%}); e.g. "
                            f"{report.missing_note_examples[:5]}")


def load_training_pairs(pairs_dir, notes_file, max_missing_fraction: float = 0.05
                        ) -> tuple[list[tuple[str, str]], dict[str, dict], PairReport]:
    """Pairs + the notes they use, with the reconciliation report.

    Fails when more than ``max_missing_fraction`` of the pairs reference notes
    absent from the notes table (a sign the two inputs do not belong together).
    """
    raw, meta = load_pairs(pairs_dir)
    wanted = {n for pair in raw for n in pair}
    notes = load_notes(notes_file, wanted)
    pairs, report = clean_pairs(raw, notes)
    report.window_start, report.window_end = meta.get("window_start"), meta.get("window_end")
    report.partition_stats = meta["stats"]
    refuse_missing(report, max_missing_fraction, pairs_dir, notes_file)
    used = {n for pair in pairs for n in pair}
    return pairs, {k: v for k, v in notes.items() if k in used}, report


# ---------------------------------------------------------------- CSFT task mix


@dataclasses.dataclass(frozen=True)
class Example:
    note: Mapping
    task: str                          # "category" or "hashtag"
    hashtags_out: tuple[str, ...] | None


def assign_tasks(batch_notes: Sequence[Mapping], r: float, seed: int, step: int) -> list[Example]:
    """CSFT (paper Sec. 3.4): round(r * n) of the batch's n notes get the
    hashtag-generation prompt, the rest the category prompt. Only notes with
    at least one hashtag can take the hashtag task. The hashtag output is j of
    the note's hashtags (1 <= j <= 5, sampled). Deterministic in (seed, step,
    position), so every rank and every resumed run agrees."""
    n = len(batch_notes)
    eligible = [i for i, note in enumerate(batch_notes) if note.get("hashtags")]
    k = min(len(eligible), int(round(r * n)))
    rng = np.random.default_rng([int(seed), int(step), 7])
    hashtag_rows = set(rng.choice(eligible, size=k, replace=False).tolist()) if k else set()
    out = []
    for i, note in enumerate(batch_notes):
        if i in hashtag_rows:
            picked = sample_hashtags(list(note["hashtags"]), random.Random(f"{seed}/{step}/{i}"))
            out.append(Example(note, "hashtag", tuple(picked)))
        else:
            out.append(Example(note, "category", None))
    return out


def batch_examples(pair_indices: Sequence[int], pairs: Sequence[tuple[str, str]], notes: Mapping[str, Mapping],
                   r: float, seed: int, step: int) -> list[Example]:
    """The global batch in the [a_1..a_B, b_1..b_B] layout with tasks assigned."""
    a = [notes[pairs[i][0]] for i in pair_indices]
    b = [notes[pairs[i][1]] for i in pair_indices]
    return assign_tasks(a + b, r, seed, step)


def local_examples(global_examples: Sequence[Example], rank: int, world_size: int) -> list[Example]:
    """This rank's [a; b] rows: its contiguous slice of the a's and of the b's."""
    n_pairs = len(global_examples) // 2
    per = n_pairs // world_size
    a = global_examples[rank * per:(rank + 1) * per]
    b = global_examples[n_pairs + rank * per:n_pairs + (rank + 1) * per]
    return list(a) + list(b)


def iso_date(value) -> str | None:
    return value.isoformat() if isinstance(value, (dt.date, dt.datetime)) else value
