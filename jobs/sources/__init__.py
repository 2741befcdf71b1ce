"""Data sources: the deterministic sample generator (``sample``) and the
adapters that map public data sets onto the pipeline's contracts
(``stackexchange``, ``movielens``).

Helpers shared by every source writer live here so the generator, the
adapters and ``jobs.ingest`` lay out day partitions the same way.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from notellm.contracts import EVENTS, Contract, mark_success, partition_dir, write_table

MICROS_PER_DAY = 86_400 * 1_000_000


def utc_day_numbers(event_time: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Days since 1970-01-01 (UTC) of a timestamp[us, UTC] column, as int64."""
    micros = pc.cast(event_time, pa.int64()).to_numpy(zero_copy_only=False)
    return np.floor_divide(micros, MICROS_PER_DAY)


def day_from_number(day_number: int) -> dt.date:
    return dt.date(1970, 1, 1) + dt.timedelta(days=int(day_number))


def split_by_day(table: pa.Table, time_column: str = "event_time") -> dict[dt.date, pa.Table]:
    """Split a table into one table per UTC day of ``time_column``, keeping the
    row order within each day (stable sort by day number)."""
    if table.num_rows == 0:
        return {}
    days = utc_day_numbers(table.column(time_column))
    order = np.argsort(days, kind="stable")
    sorted_days = days[order]
    bounds = np.flatnonzero(np.diff(sorted_days)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(sorted_days)]])
    taken = table.take(pa.array(order))
    return {day_from_number(sorted_days[s]): taken.slice(s, e - s) for s, e in zip(starts, ends)}


def write_day_partitions(table: pa.Table, root: str | Path, contract: Contract = EVENTS,
                         file_name: str = "part-00000.parquet", time_column: str = "event_time",
                         replace: bool = True) -> dict[str, int]:
    """Write ``table`` hive-partitioned by UTC day: ``<root>/dt=YYYY-MM-DD/<file_name>``.

    Each written partition gets ``_stats.json`` (rows per file) and a
    ``_SUCCESS`` marker. With ``replace`` an existing partition folder is
    removed first so reruns never mix old and new files. Returns rows per day.
    """
    rows_per_day: dict[str, int] = {}
    for day, part in sorted(split_by_day(table, time_column).items()):
        pdir = partition_dir(root, day)
        if replace and pdir.exists():
            shutil.rmtree(pdir)
        write_table(part, pdir / file_name, contract)
        mark_success(pdir, {"contract": contract.name, "version": contract.version,
                            "rows": part.num_rows, "files": {file_name: part.num_rows}})
        rows_per_day[day.isoformat()] = part.num_rows
    return rows_per_day
