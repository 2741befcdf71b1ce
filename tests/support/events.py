"""Small hand-written click logs and notes files in the real contracts, for the
co-occurrence and split tests."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from pathlib import Path

import pyarrow as pa

from notellm import contracts

UTC = dt.timezone.utc


def ts(day: str, hh: int = 0, mm: int = 0, ss: int = 0) -> dt.datetime:
    return dt.datetime.fromisoformat(day).replace(hour=hh, minute=mm, second=ss, tzinfo=UTC)


def write_notes(path: Path, note_ids, category=lambda n: "cat", created=None) -> Path:
    created = created or (lambda n: ts("2026-01-01"))
    ids = list(note_ids)
    table = pa.table({
        "note_id": ids,
        "title": [f"title {n}" for n in ids],
        "content": [f"content {n}" for n in ids],
        "hashtags": [["tag"] for _ in ids],
        "category": [category(n) for n in ids],
        "created_at": [created(n) for n in ids],
    })
    return contracts.write_table(table, path, contracts.NOTES)


def write_events(root: Path, rows, day_of=None, landing: bool = False, name: str = "part-00000.parquet") -> None:
    """rows: (user_id, note_id, event_type, event_time). Contract form: event_time
    a datetime; landing form: any string (or None). Files go to dt=<day>/ by
    ``day_of(row)`` (default: the event's UTC day)."""
    by_day = defaultdict(list)
    for row in rows:
        day = day_of(row) if day_of else row[3].astimezone(UTC).date().isoformat()
        by_day[day].append(row)
    contract = contracts.EVENTS_LANDING if landing else contracts.EVENTS
    for day, day_rows in by_day.items():
        cols = list(zip(*day_rows))
        table = pa.table({name_: list(col) for name_, col in zip(contract.columns, cols)},
                         schema=contract.arrow_schema)
        contracts.write_table(table, Path(root) / f"dt={day}" / name, contract)
        contracts.mark_success(Path(root) / f"dt={day}", {"rows": len(day_rows)})   # a committed day


def empty_days(root: Path, days) -> None:
    """An explicit empty partition file for days without events."""
    for day in days:
        path = Path(root) / f"dt={day}" / "part-00000.parquet"
        if not path.exists():
            contracts.write_table(contracts.empty_table(contracts.EVENTS), path, contracts.EVENTS)
            contracts.mark_success(path.parent, {"rows": 0})
