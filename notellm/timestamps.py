"""One timestamp rule for ingest, the public-data adapters and the Spark jobs.

Accepted: ISO-8601 with an explicit UTC offset,

    YYYY-MM-DD[T ]HH:MM:SS[.f{1,9}](Z | +HH:MM | -HH:MM | +HHMM | -HHMM)

where the date and time exist (2026-02-30 and 25:61 do not), the offset is
within +-14:00 (the range real zones use) with minutes < 60, and the instant
lies in the plausible window ``[earliest, latest]`` (defaults below:
1990-01-01 to the reading day + ``LATEST_SKEW_DAYS``). Fractions beyond
microseconds are truncated. Anything else is ``bad_timestamp``.

:func:`parse_iso_utc` applies the rule to an Arrow array (ingest, adapters);
:func:`spark_sql` writes the same rule as a Spark SQL expression (the jobs'
landing files), so a string one engine quarantines the other does too
(tests/notellm/test_timestamps.py checks them against each other).

Standard library at import (the job configs and DAGs import the defaults).
"""

from __future__ import annotations

import datetime as dt

ISO_PATTERN = r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(\.\d{1,9})?(Z|z|[+-]\d{2}:?\d{2})$"
MAX_OFFSET_MINUTES = 14 * 60
EARLIEST = dt.datetime(1990, 1, 1, tzinfo=dt.timezone.utc)
LATEST_SKEW_DAYS = 2
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def to_micros(t: dt.datetime) -> int:
    return (t - _EPOCH) // dt.timedelta(microseconds=1)


def plausible_window(earliest: dt.datetime | None = None, latest: dt.datetime | None = None,
                     today: dt.date | None = None) -> tuple[int, int]:
    """(earliest, latest) in microseconds since the epoch; latest defaults to
    ``today`` (UTC) + LATEST_SKEW_DAYS (clock skew of the producers)."""
    earliest = earliest or EARLIEST
    if latest is None:
        today = today or dt.datetime.now(dt.timezone.utc).date()
        latest = dt.datetime.combine(today + dt.timedelta(days=LATEST_SKEW_DAYS), dt.time(), dt.timezone.utc)
    return to_micros(earliest), to_micros(latest)


def _named(pattern: str) -> str:
    names = iter(("date", "time", "frac", "tz"))
    out, i = [], 0
    while i < len(pattern):
        if pattern[i] == "(" and pattern[i + 1] != "?":
            out.append(f"(?P<{next(names)}>")
        else:
            out.append(pattern[i])
        i += 1
    return "".join(out)


def parse_iso_utc(text, window: tuple[int, int] | None = None):
    """timestamp[us, UTC] per the rule above; null where the text is null or breaks it.

    Arrow's strptime is lenient (it rolls 02-30 over to 03-02), so the local
    date-time is parsed and printed back; only exact round trips count."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    lo, hi = window or plausible_window()
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    parts = pc.extract_regex(text, _named(ISO_PATTERN))          # null where no match
    date, clock = parts.field("date"), parts.field("time")
    frac, tz = parts.field("frac"), parts.field("tz")
    local = pc.binary_join_element_wise(date, clock, "T")
    naive = pc.strptime(local, format="%Y-%m-%dT%H:%M:%S", unit="s", error_is_null=True)
    round_trip = pc.equal(pc.strftime(naive, format="%Y-%m-%dT%H:%M:%S"), local)
    valid = pc.fill_null(pc.and_(pc.is_valid(parts), round_trip), False)

    seconds = pc.cast(naive, pa.int64()).to_numpy(zero_copy_only=False)
    frac_digits = pc.utf8_slice_codeunits(pc.utf8_rpad(pc.utf8_slice_codeunits(frac, 1, 7), 6, "0"), 0, 6)
    frac_us = pc.cast(pc.if_else(pc.equal(pc.fill_null(frac, ""), ""), "000000", frac_digits),
                      pa.int64(), safe=False)
    # StructArray.field() does not carry the struct's nulls: mask invalid rows explicitly.
    tz_plain = pc.replace_substring(pc.if_else(valid, tz, "Z"), ":", "")     # "+0530" / "Z"
    is_z = pc.equal(pc.utf8_upper(tz_plain), "Z")
    hours = pc.cast(pc.if_else(is_z, "00", pc.utf8_slice_codeunits(tz_plain, 1, 3)), pa.int64())
    minutes = pc.cast(pc.if_else(is_z, "00", pc.utf8_slice_codeunits(tz_plain, 3, 5)), pa.int64())
    sign = pc.if_else(pc.equal(pc.utf8_slice_codeunits(tz_plain, 0, 1), "-"), -1, 1)
    offset_min = pc.add(pc.multiply(hours, 60), minutes)
    offset_ok = pc.and_(pc.less_equal(offset_min, MAX_OFFSET_MINUTES), pc.less(minutes, 60))
    offset_s = pc.multiply(sign, pc.multiply(offset_min, 60))

    valid_np = valid.to_numpy(zero_copy_only=False) & pc.fill_null(offset_ok, False).to_numpy(zero_copy_only=False)
    seconds = np.where(valid_np, np.nan_to_num(seconds.astype(np.float64), nan=0).astype(np.int64), 0)
    micros = ((seconds - pc.fill_null(offset_s, 0).to_numpy(zero_copy_only=False)) * 1_000_000
              + pc.fill_null(frac_us, 0).to_numpy(zero_copy_only=False))
    valid_np &= (micros >= lo) & (micros <= hi)
    return pa.array(np.where(valid_np, micros, 0), pa.timestamp("us", tz="UTC"), mask=~valid_np)


def in_window(micros, window: tuple[int, int] | None = None):
    """Mask of epoch-microsecond values inside the plausible window (typed inputs)."""
    lo, hi = window or plausible_window()
    return (micros >= lo) & (micros <= hi)


def spark_sql(column: str, window: tuple[int, int]) -> str:
    """The rule as a Spark SQL expression over the string column ``column``: TIMESTAMP or NULL.

    Needs ``spark.sql.session.timeZone=UTC`` (jobs.spark_session sets it): the
    local part is parsed as UTC, then the offset is subtracted."""
    lo, hi = window
    p = ISO_PATTERN.replace("\\", "\\\\")
    def m(group: int) -> str:
        return f"regexp_extract({column}, '{p}', {group})"
    local = f"concat({m(1)}, ' ', {m(2)})"
    naive = f"try_to_timestamp({local}, 'yyyy-MM-dd HH:mm:ss')"
    frac = f"try_cast(rpad(substr({m(3)}, 2, 6), 6, '0') AS BIGINT)"
    tz = f"replace({m(4)}, ':', '')"
    hours, mins = f"try_cast(substr({tz}, 2, 2) AS INT)", f"try_cast(substr({tz}, 4, 2) AS INT)"
    offset_min = f"(CASE WHEN upper({tz}) = 'Z' THEN 0 ELSE {hours} * 60 + {mins} END)"
    offset_ok = f"(upper({tz}) = 'Z' OR ({hours} * 60 + {mins} <= {MAX_OFFSET_MINUTES} AND {mins} < 60))"
    sign = f"(CASE WHEN substr({tz}, 1, 1) = '-' THEN -1 ELSE 1 END)"
    micros = (f"(unix_micros({naive}) - CAST({sign} * {offset_min} AS BIGINT) * 60000000 "
              f"+ COALESCE({frac}, 0))")
    return (f"(CASE WHEN {column} RLIKE '{p}' AND {naive} IS NOT NULL "
            f"AND date_format({naive}, 'yyyy-MM-dd HH:mm:ss') = {local} AND {offset_ok} "
            f"AND {micros} BETWEEN {lo} AND {hi} THEN timestamp_micros({micros}) END)")


def spark_sql_typed(column: str, window: tuple[int, int]) -> str:
    """The plausible window for an already typed TIMESTAMP column: the value or NULL."""
    lo, hi = window
    return f"(CASE WHEN unix_micros({column}) BETWEEN {lo} AND {hi} THEN {column} END)"


def window_from(earliest: str | None, latest: str | None) -> tuple[int, int]:
    """The plausible window from two ISO instants (None: the defaults); ValueError when unparseable."""
    def one(text):
        t = dt.datetime.fromisoformat(text)
        return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)
    lo, hi = plausible_window(one(earliest) if earliest else None, one(latest) if latest else None)
    if lo >= hi:
        raise ValueError(f"plausible window is empty: earliest {earliest} is not before latest {latest}")
    return lo, hi
