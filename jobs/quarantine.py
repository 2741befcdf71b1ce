"""Quarantine: rows a validating step refuses, kept with a reason.

Every validating step (``jobs.ingest``, the public-data adapters) turns each
input row into exactly one of: accepted into a contract table, quarantined
here (QUARANTINE contract: source file, 1-based row number within it, reason
``code`` or ``code: detail``, the raw row as JSON, cut to
``notellm.limits.MAX_QUARANTINE_RAW_CHARS``) or, for the adapters only,
ignored on purpose with a counted reason. Counts reconcile:
``rows_in = rows_accepted + rows_quarantined (+ rows_ignored)``.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import pyarrow as pa

from notellm.contracts import QUARANTINE, empty_table, write_table
from notellm.limits import cap_raw


def reason_code(reason: str) -> str:
    """'bad_timestamp: '2026-13-01'' -> 'bad_timestamp'."""
    return reason.split(":", 1)[0]


def raw_json(row: dict) -> str:
    return json.dumps(row, ensure_ascii=False, sort_keys=True, default=str)


def quarantine_table(source: str, row_numbers: Sequence[int | None], reasons: Sequence[str],
                     raw_rows: Sequence[dict | str | None]) -> pa.Table:
    """Build a QUARANTINE table for rows of one source."""
    if not (len(row_numbers) == len(reasons) == len(raw_rows)):
        raise ValueError("row_numbers, reasons and raw_rows must have the same length")
    # Capped: a huge rejected row must not make the quarantine as large as the input.
    raws = [cap_raw(r if (r is None or isinstance(r, str)) else raw_json(r)) for r in raw_rows]
    return pa.table({
        "source": pa.array([str(source)] * len(reasons), pa.string()),
        "row_number": pa.array(list(row_numbers), pa.int64()),
        "reason": pa.array(list(reasons), pa.string()),
        "raw": pa.array(raws, pa.string()),
    }, schema=QUARANTINE.schema)


def concat_quarantine(tables: Iterable[pa.Table]) -> pa.Table:
    tables = [t.select(QUARANTINE.columns).cast(QUARANTINE.schema) for t in tables if t.num_rows]
    return pa.concat_tables(tables) if tables else empty_table(QUARANTINE).cast(QUARANTINE.schema)


def reason_counts(table: pa.Table) -> dict[str, int]:
    """Rows per reason code (detail stripped)."""
    return dict(sorted(Counter(reason_code(r) for r in table.column("reason").to_pylist()).items()))


def write_quarantine(table: pa.Table, path: str | Path) -> Path:
    """Write (or replace) a quarantine file; an empty table is written too so a
    rerun that quarantines nothing replaces stale rows."""
    return write_table(table, path, QUARANTINE)
