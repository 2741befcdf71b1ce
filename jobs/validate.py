"""Landing validation rules: which rows of a landing table are accepted and
why the others are quarantined (jobs.ingest reads the files and writes the results).

Each check is vectorised with pyarrow compute; the first failing check of a row
wins, and only the JSON of the (few) rejected rows is built per row.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs.quarantine import concat_quarantine, quarantine_table, raw_json
from notellm import limits
from notellm.contracts import EVENT_TYPES, EVENTS_LANDING, NOTES_LANDING, Contract
from notellm.timestamps import parse_iso_utc

# --------------------------------------------------------------------------
# pure transforms


def _blank(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """True where the text is null, empty or whitespace only."""
    stripped = pc.utf8_trim_whitespace(col)
    return pc.fill_null(pc.equal(stripped, ""), True).to_numpy(zero_copy_only=False)


def _first_occurrence(keys: pa.Table, candidate: np.ndarray) -> np.ndarray:
    """Mask of candidate rows that are the first candidate row with their key."""
    idx = np.flatnonzero(candidate)
    if len(idx) == 0:
        return candidate.copy()
    sub = keys.take(pa.array(idx)).append_column("__i", pa.array(idx, pa.int64()))
    firsts = sub.group_by(keys.column_names, use_threads=False).aggregate([("__i", "min")])
    first = np.zeros(len(candidate), dtype=bool)
    first[firsts.column("__i_min").to_numpy()] = True
    return first


class _Reasons:
    """Assigns at most one reason per row, first failing check wins."""

    def __init__(self, n: int):
        self.code = np.full(n, "", dtype=object)

    def flag(self, failed: np.ndarray, code: str) -> None:
        self.code[failed & (self.code == "")] = code

    @property
    def ok(self) -> np.ndarray:
        return self.code == ""


def _detail(code: str, row: dict, column: str | None) -> str:
    if column is None:
        return code
    if code == "too_long":
        return code
    return f"{code}: {row.get(column)!r}" if code != "unknown_note_id" else f"{code}: {row.get(column)}"


def _quarantine(table: pa.Table, reasons: _Reasons, sources: list[str], file_idx: np.ndarray,
                row_in_file: np.ndarray, detail_column: dict[str, str | None], contract: Contract) -> pa.Table:
    bad = np.flatnonzero(~reasons.ok)
    if len(bad) == 0:
        return concat_quarantine([])
    raw_rows = table.select(contract.columns).take(pa.array(bad)).to_pylist()
    parts = []
    for f in np.unique(file_idx[bad]):
        sel = np.flatnonzero(file_idx[bad] == f)
        parts.append(quarantine_table(
            sources[f], [int(row_in_file[bad[i]]) for i in sel],
            [_detail(reasons.code[bad[i]], raw_rows[i], detail_column.get(reasons.code[bad[i]])) for i in sel],
            [raw_json(raw_rows[i]) for i in sel]))
    return concat_quarantine(parts)


def _accounting(sources: list[str], file_idx: np.ndarray, reasons: _Reasons) -> dict:
    files = {}
    for f, src in enumerate(sources):
        in_file = file_idx == f
        codes = reasons.code[in_file & ~reasons.ok]
        uniq, counts = np.unique(codes.astype(str), return_counts=True) if len(codes) else ([], [])
        files[src] = {"rows_in": int(in_file.sum()), "rows_accepted": int((in_file & reasons.ok).sum()),
                      "rows_quarantined": int(len(codes)),
                      "reasons": {str(u): int(c) for u, c in zip(uniq, counts)}}
    total = {"rows_in": int(len(file_idx)), "rows_accepted": int(reasons.ok.sum()),
             "rows_quarantined": int((~reasons.ok).sum()), "reasons": {}}
    for f in files.values():
        for k, v in f["reasons"].items():
            total["reasons"][k] = total["reasons"].get(k, 0) + v
    total["reasons"] = dict(sorted(total["reasons"].items()))
    assert total["rows_in"] == total["rows_accepted"] + total["rows_quarantined"]
    return {"files": files, **total}


def _longer(col: pa.Array | pa.ChunkedArray, limit: int) -> np.ndarray:
    """True where the text has more than ``limit`` characters (null: False)."""
    return pc.fill_null(pc.greater(pc.utf8_length(col), limit), False).to_numpy(zero_copy_only=False)


def too_long_notes(table: pa.Table) -> np.ndarray:
    """Rows over any cap of :mod:`notellm.limits` (title, content, id, hashtag count or length)."""
    tags = table.column("hashtags")
    n_tags = pc.fill_null(pc.list_value_length(tags), 0).to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(tags)
    long_tag = np.zeros(table.num_rows, bool)
    if len(flat):
        parents = pc.list_parent_indices(tags).to_numpy(zero_copy_only=False)
        over = _longer(flat, limits.MAX_HASHTAG_CHARS)
        long_tag[parents[over]] = True
    return (_longer(table.column("title"), limits.MAX_TITLE_CHARS)
            | _longer(table.column("content"), limits.MAX_CONTENT_CHARS)
            | _longer(table.column("note_id"), limits.MAX_ID_CHARS)
            | (n_tags > limits.MAX_HASHTAGS) | long_tag)


def validate_notes(table: pa.Table, sources: list[str], file_idx: np.ndarray, row_in_file: np.ndarray,
                   window: tuple[int, int] | None = None) -> tuple[pa.Table, pa.Table, dict]:
    """Landing notes -> (NOTES table, QUARANTINE table, accounting)."""
    r = _Reasons(table.num_rows)
    created = parse_iso_utc(table.column("created_at"), window)
    r.flag(_blank(table.column("note_id")), "null_note_id")
    r.flag(too_long_notes(table), "too_long")
    r.flag(~created.is_valid().to_numpy(zero_copy_only=False), "bad_timestamp")
    r.flag(_blank(table.column("title")) & _blank(table.column("content")), "empty_text")
    r.flag(_blank(table.column("category")), "null_category")
    r.flag(r.ok & ~_first_occurrence(table.select(["note_id"]), r.ok), "duplicate_note_id")

    quarantine = _quarantine(table, r, sources, file_idx, row_in_file,
                             {"bad_timestamp": "created_at", "duplicate_note_id": "note_id"}, NOTES_LANDING)
    keep = pa.array(r.ok)
    hashtags = table.column("hashtags")
    empty_tags = pa.array([[]] * table.num_rows, hashtags.type) if table.num_rows else hashtags
    notes = pa.table({
        "note_id": table.column("note_id"),
        "title": pc.fill_null(table.column("title"), ""),
        "content": pc.fill_null(table.column("content"), ""),
        "hashtags": pc.if_else(pc.is_null(hashtags), empty_tags, hashtags),
        "category": table.column("category"),
        "created_at": created,
    }).filter(keep)
    return notes, quarantine, _accounting(sources, file_idx, r)


def validate_events(table: pa.Table, known_note_ids: pa.Array, sources: list[str], file_idx: np.ndarray,
                    row_in_file: np.ndarray, window: tuple[int, int] | None = None,
                    ) -> tuple[pa.Table, pa.Table, dict]:
    """Landing events -> (EVENTS table with extra ``__file`` column, QUARANTINE table, accounting)."""
    r = _Reasons(table.num_rows)
    event_time = parse_iso_utc(table.column("event_time"), window)
    r.flag(_blank(table.column("user_id")), "null_user_id")
    r.flag(_blank(table.column("note_id")), "null_note_id")
    r.flag(_longer(table.column("user_id"), limits.MAX_ID_CHARS) | _longer(table.column("note_id"), limits.MAX_ID_CHARS)
           | _longer(table.column("event_type"), limits.MAX_ID_CHARS), "too_long")
    r.flag(~event_time.is_valid().to_numpy(zero_copy_only=False), "bad_timestamp")
    known_type = pc.is_in(table.column("event_type"), value_set=pa.array(EVENT_TYPES, pa.string()))
    r.flag(~pc.fill_null(known_type, False).to_numpy(zero_copy_only=False), "unknown_event_type")
    known_note = pc.is_in(table.column("note_id"), value_set=known_note_ids)
    r.flag(~pc.fill_null(known_note, False).to_numpy(zero_copy_only=False), "unknown_note_id")
    keys = pa.table({"u": table.column("user_id"), "n": table.column("note_id"),
                     "e": table.column("event_type"), "t": event_time})
    r.flag(r.ok & ~_first_occurrence(keys, r.ok), "duplicate_event")

    quarantine = _quarantine(table, r, sources, file_idx, row_in_file,
                             {"bad_timestamp": "event_time", "unknown_event_type": "event_type",
                              "unknown_note_id": "note_id"}, EVENTS_LANDING)
    events = pa.table({
        "user_id": table.column("user_id"), "note_id": table.column("note_id"),
        "event_type": table.column("event_type"), "event_time": event_time,
        "__file": pa.array(file_idx, pa.int32()),
    }).filter(pa.array(r.ok))
    return events, quarantine, _accounting(sources, file_idx, r)


# --------------------------------------------------------------------------
# I/O
