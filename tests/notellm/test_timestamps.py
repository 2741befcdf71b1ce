"""notellm.timestamps: one rule, the same answer from Arrow (ingest) and Spark SQL (the jobs)."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from notellm.timestamps import parse_iso_utc, plausible_window, spark_sql, to_micros, window_from

UTC = dt.timezone.utc
WINDOW = plausible_window(today=dt.date(2026, 12, 1))
CASES = {
    "2026-11-24T10:00:00Z": dt.datetime(2026, 11, 24, 10, tzinfo=UTC),
    "2026-11-24 10:00:00z": dt.datetime(2026, 11, 24, 10, tzinfo=UTC),
    "2026-11-24T10:00:00.5+01:00": dt.datetime(2026, 11, 24, 9, 0, 0, 500000, tzinfo=UTC),
    "2026-11-24T10:00:00.123456789-0530": dt.datetime(2026, 11, 24, 15, 30, 0, 123456, tzinfo=UTC),
    "2026-11-24T10:00:00+14:00": dt.datetime(2026, 11, 23, 20, tzinfo=UTC),
    "2026-11-24T10:00:00-14:00": dt.datetime(2026, 11, 25, 0, tzinfo=UTC),
    "2026-11-24T10:00:00+14:01": None,      # beyond the +-14:00 real zones use
    "2026-11-24T10:00:00+99:99": None,
    "2026-11-24T10:00:00+05:60": None,
    "2026-11-24T10:00:00": None,            # no offset: the writer's zone is unknown
    "2026-11-24": None,
    "2026-02-30T00:00:00Z": None,           # no such day (Arrow alone would roll it to 03-02)
    "2026-11-24T25:61:00Z": None,
    "1970-01-01T00:00:00Z": None,           # before the plausible window (an epoch-zero default)
    "1989-12-31T23:59:59Z": None,
    "1990-01-01T00:00:00Z": dt.datetime(1990, 1, 1, tzinfo=UTC),
    "2026-12-03T00:00:00Z": dt.datetime(2026, 12, 3, tzinfo=UTC),   # today + 2 days: producer clock skew
    "2026-12-03T00:00:01Z": None,
    "2999-01-01T00:00:00Z": None,
    "+2026-11-24T10:00:00Z": None,
    "2026-11-24T10:00:00Z ": None,
    "": None,
    "nonsense": None,
    None: None,
}


def test_arrow_parser_follows_the_rule():
    got = parse_iso_utc(pa.array(list(CASES), pa.string()), WINDOW).to_pylist()
    for text, want, value in zip(CASES, CASES.values(), got):
        assert value == want, text


def test_spark_sql_gives_the_same_answers(spark):
    """The jobs' SQL form of the rule agrees with ingest's on every case (was: Spark's lenient
    cast accepted a missing offset, a date without time and +99:99)."""
    df = spark.createDataFrame([(t,) for t in CASES], "t STRING")
    rows = df.selectExpr("t", f"unix_micros({spark_sql('t', WINDOW)}) AS us").collect()
    got = {r["t"]: r["us"] for r in rows}
    for text, want in CASES.items():
        assert got[text] == (to_micros(want) if want else None), text


def test_window_from_settings():
    lo, hi = window_from("2000-01-01T00:00:00+00:00", "2001-01-01T00:00:00Z")
    assert hi - lo == 366 * 86_400 * 1_000_000
    with pytest.raises(ValueError, match="empty"):
        window_from("2001-01-01", "2000-01-01")
