"""The output side of the Spark jobs: written folders checked from their
Parquet footers, folder commits (stage, check, mark, swap) and the markers.

Every function takes the job's :class:`notellm.storage.Storage`, so the same
code commits to HDFS, S3 or a local disk.
"""

from __future__ import annotations

import datetime as dt
import logging
import math

from notellm import contracts, storage
from notellm.contracts import ContractError
from notellm.faults import fault_point
from notellm.storage import Storage, parquet_metadata

log = logging.getLogger(__name__)


def check_written(store: Storage, part: str, contract, rows: int) -> None:
    """Check a written folder from its Parquet footers only: every file
    has the contract's columns and types, the non-nullable columns have no
    nulls (row-group statistics) and the row counts add up to ``rows``.
    Reading footers costs the same for 10 rows or 10^9; reading the data
    back, as an earlier version did, cost a Spark job per output."""
    files = store.list_files(part, ".parquet")
    found = 0
    for entry in files:
        meta = parquet_metadata(store, entry.uri)
        schema = meta.schema.to_arrow_schema()
        contracts.validate_schema(schema, contract, entry.uri)
        found += meta.num_rows
        for field in contract.schema:
            if field.nullable:
                continue
            idx = meta.schema.names.index(field.name)
            for g in range(meta.num_row_groups):
                st = meta.row_group(g).column(idx).statistics
                if st is not None and st.has_null_count and st.null_count:
                    raise ContractError(entry.uri, field.name,
                                        f"{st.null_count} null value(s) in a non-nullable column")
    if found != rows:
        raise RuntimeError(f"{part}: expected {rows} rows but the Parquet footers of {len(files)} file(s) "
                           f"count {found}")


def output_files(rows: int, rows_per_file: int) -> int:
    """How many files ``rows`` rows are written as (at least one)."""
    return max(1, math.ceil(rows / max(1, rows_per_file)))


def _write_empty(store: Storage, target: str, contract) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(contracts.empty_table(contract), sink)
    store.mkdirs(target)
    store.write_bytes(storage.join(target, "part-00000.parquet"), sink.getvalue().to_pybytes())


def write_folder(store: Storage, df, target: str, contract, rows: int | None = None) -> int:
    """Write ``df`` (already laid out: partitions = files) as Parquet into the
    new folder ``target`` and check that the footers count ``rows``; with
    ``rows=None`` the rows are counted while they are written (an observation:
    no second pass) and the footers must agree. An empty frame gets one empty
    file with the contract's schema. Returns the rows."""
    if rows == 0:
        _write_empty(store, target, contract)
    else:
        frame, observed = (df, None) if rows is not None else observed_rows(df, "written_rows")
        frame.write.mode("errorifexists").parquet(target)
        if rows is None:
            rows = observed()
            if rows == 0 and not store.list_files(target, ".parquet"):
                _write_empty(store, target, contract)
    check_written(store, target, contract, rows)
    return rows


class FolderCommit:
    """Replace the folder ``final`` as a unit: write a staging folder, check it,
    mark it (``_stats.json``, then ``_SUCCESS``), then swap it in.

    The old folder is untouched until the new one is complete and marked: a
    failed check or a crash before the swap leaves it as it was (the staging
    folder is hidden under ``<parent>/_staging/`` and removed by the next run
    of the same folder). The swap is two renames (old -> ``<parent>/_trash/``,
    staging -> final); a reader meanwhile finds no folder (never a partial
    one), and a run killed between them leaves the old folder in ``_trash/``,
    which :meth:`recover` moves back before anything else. Hidden folders
    (``_staging``, ``_trash``) are invisible to Spark's and the jobs' listings."""

    def __init__(self, store: Storage, final: str):
        self.store, self.final = store, final.rstrip("/")
        self.parent, self.name = self.final.rsplit("/", 1)
        self.staging = storage.join(self.parent, "_staging", storage.temp_name(self.name).lstrip("."))
        self.trash = storage.join(self.parent, "_trash", storage.temp_name(self.name).lstrip("."))

    def _leftovers(self, folder: str) -> list[str]:
        """This folder's copies under ``<parent>/<folder>/`` (left by killed or earlier runs)."""
        base = storage.join(self.parent, folder)
        return [storage.join(base, name) for name in self.store.children(base) if name.startswith(f"{self.name}.tmp-")]

    def recover(self) -> None:
        """Undo a swap that was killed halfway; drop earlier runs' staging folders."""
        if not self.store.exists(self.final):
            marked = [t for t in self._leftovers("_trash")
                      if self.store.exists(storage.join(t, contracts.SUCCESS_MARKER))]
            if marked:
                log.warning("restoring %s from %s (a run was killed during its swap)", self.final, marked[0])
                self.store.rename(marked[0], self.final)
        for leftover in self._leftovers("_trash") + self._leftovers("_staging"):
            self.store.delete(leftover)

    def write(self, df, contract, rows: int | None = None, sub: str = "") -> int:
        """Write ``df`` into the staging folder (or its sub-folder ``sub``); see :func:`write_folder`."""
        return write_folder(self.store, df, storage.join(self.staging, sub) if sub else self.staging, contract, rows)

    def publish(self, stats: dict) -> str:
        """Mark the checked staging folder and swap it in (fault points ``folder_commit:<step>``)."""
        mark_success(self.store, self.staging, stats)
        fault_point("folder_commit", "marked")
        if self.store.exists(self.final):
            self.store.mkdirs(storage.join(self.parent, "_trash"))
            self.store.rename(self.final, self.trash)
            fault_point("folder_commit", "old_moved_aside")
        self.store.rename(self.staging, self.final)
        fault_point("folder_commit", "renamed")
        self.store.delete(self.trash)
        fault_point("folder_commit", "trash_deleted")
        return self.final

    def abandon(self) -> None:
        self.store.delete(self.staging)


def partition_commit(store: Storage, root: str, day: dt.date) -> FolderCommit:
    """The commit of the day partition ``<root>/dt=<day>``."""
    return FolderCommit(store, storage.join(root, f"dt={day.isoformat()}"))


def observed_rows(df, name: str):
    """``(df with a row-count observation, getter)``: the count of the rows an
    action on the frame wrote, observed while they streamed (no second pass)."""
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    observation = Observation(name)
    return df.observe(observation, F.count(F.lit(1)).alias("rows")), lambda: int(observation.get["rows"])


def mark_success(store: Storage, folder: str, stats: dict) -> None:
    """``_stats.json``, then ``_SUCCESS`` (last: its presence means all before it was written)."""
    store.write_json(storage.join(folder, contracts.STATS_FILE), stats)
    store.write_bytes(storage.join(folder, contracts.SUCCESS_MARKER), b"")


__all__ = ["FolderCommit", "check_written", "mark_success", "observed_rows", "output_files", "partition_commit",
           "write_folder"]
