"""Shared fixtures for the co-occurrence and split tests (imported by
tests/test_cooccurrence*.py and tests/test_split.py; not a conftest)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pytest

from notellm import contracts

UTC = dt.timezone.utc
REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def spark():
    """One local[2] session for all Spark tests (JVM start-up dominates tiny jobs)."""
    from jobs.spark_session import build_spark

    # getOrCreate: test modules importing this fixture share the same JVM session.
    return build_spark("notellm-tests", "local[2]", shuffle_partitions=4, driver_memory="2g")


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


def empty_days(root: Path, days) -> None:
    """An explicit empty partition file for days without events."""
    for day in days:
        path = Path(root) / f"dt={day}" / "part-00000.parquet"
        if not path.exists():
            contracts.write_table(contracts.empty_table(contracts.EVENTS), path, contracts.EVENTS)
