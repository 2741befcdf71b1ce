"""Landing validation: landing files -> contract tables + quarantine.

    python -m jobs.ingest notes  --landing <landing root> --out <root>
    python -m jobs.ingest events --landing <landing root> --out <root> [--notes <notes.parquet>] [--dt D ...]

(``--help`` on each subcommand lists its settings; the result is one JSON
line on stdout with the accounting below.)

Input: ``<landing>/notes/*.parquet`` (NOTES_LANDING) and
``<landing>/events/dt=X/*.parquet`` (EVENTS_LANDING). Every column there is
nullable text, so each row is checked here and either accepted into the
contract table or quarantined with a reason (first failing check wins):

notes:  null_note_id, too_long, bad_timestamp, empty_text, null_category, duplicate_note_id
events: null_user_id, null_note_id, too_long, bad_timestamp, unknown_event_type,
        unknown_note_id, duplicate_event

``too_long``: over a cap of :mod:`notellm.limits`; ``bad_timestamp``: breaks
the rule of :mod:`notellm.timestamps` (explicit offset within +-14:00, inside
the plausible window ``--earliest`` .. ``--latest``).

Duplicates: the first occurrence (in file order, files sorted by path) among
otherwise valid rows is kept; later ones are quarantined. Event duplicates
are exact (user, note, type, time) repeats within one run.

Output (``<root>``):
* ``notes/notes.parquet`` (NOTES) + ``_stats.json``/``_SUCCESS``;
  ``quarantine/notes/part-00000.parquet``.
* ``events/dt=Y/part-from-X.parquet`` (EVENTS): accepted rows of landing
  partition X, stored under the UTC day Y of their parsed event_time. A row
  whose time falls outside its landing day is accepted and written to its
  real day (so one landing partition may write into two days). Each touched
  day gets ``_stats.json`` (rows per file) and ``_SUCCESS``.
* ``quarantine/events/dt=X/part-00000.parquet`` + ``_stats.json``/``_SUCCESS``
  with the full accounting of landing partition X (per file and in total:
  rows_in = rows_accepted + rows_quarantined, rows per reason, accepted rows
  per output day).

Idempotent and crash-safe: a rerun for landing partition X rebuilds every day
that holds or will hold ``part-from-X.parquet`` in a staging folder (the other
partitions' files hard-linked in), then swaps each day whole
(jobs.spark_output.FolderCommit: ``_stats.json`` listing its files, then
``_SUCCESS``, then the rename). Readers of a day see its complete old or new
state, never a day half rewritten; the quarantine and accounting of X are
committed last. A SIGKILL at any step leaves complete days, and the rerun
converges (tests/jobs/test_ingest.py kills it at each step).

The row checks are :mod:`jobs.validate` (vectorised with pyarrow compute; only
the JSON of the few rejected rows is built per row); this module reads the
landing files and writes the results.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.config import IngestEventsConfig, IngestNotesConfig
from jobs.quarantine import write_quarantine
from jobs.sources import split_by_day
from jobs.spark_output import FolderCommit
from jobs.validate import validate_events, validate_notes
from notellm import cli, storage
from notellm.contracts import (
    EVENTS,
    EVENTS_LANDING,
    NOTES,
    NOTES_LANDING,
    Contract,
    ContractError,
    read_table,
    validate_schema,
    write_table,
)
from notellm.faults import fault_point
from notellm.timestamps import window_from


def read_landing_files(paths: list[Path], contract: Contract) -> tuple[pa.Table, list[str], np.ndarray, np.ndarray]:
    """Concatenate landing files; return the table, the source names, the file
    index and the 1-based row number within its file for each row."""
    tables, sources, file_idx, rows = [], [], [], []
    for f, path in enumerate(paths):
        try:
            t = pq.read_table(path, partitioning=None)
        except (pa.ArrowInvalid, OSError) as exc:
            raise ContractError(str(path), None, f"unreadable as Parquet: {exc}") from exc
        validate_schema(t.schema, contract, str(path))   # missing / wrongly typed column -> ContractError
        for name in contract.columns:
            try:   # Parquet readers do not check that strings are UTF-8; every later step assumes it
                t.column(name).validate(full=True)
            except pa.ArrowInvalid as exc:
                raise ContractError(str(path), name, f"invalid data (e.g. not UTF-8): {exc}") from None
        tables.append(t.select(contract.columns).cast(contract.schema))
        sources.append(str(path))
        file_idx.append(np.full(t.num_rows, f, dtype=np.int32))
        rows.append(np.arange(1, t.num_rows + 1, dtype=np.int64))
    table = pa.concat_tables(tables) if tables else contract.schema.empty_table()
    cat = (lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dt))
    return table, sources, cat(file_idx, np.int32), cat(rows, np.int64)


def _landing_files(folder: Path, pattern: str) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"landing folder {folder} does not exist")
    files = sorted(p for p in folder.glob(pattern) if p.is_file() and not p.name.startswith((".", "_")))
    if not files:
        raise FileNotFoundError(f"landing folder {folder} has no Parquet files ({pattern})")
    return files


def _commit_folder(final: Path, fill, stats: dict, writer: str) -> None:
    """Replace the folder ``final`` as a unit (jobs.spark_output.FolderCommit on the local
    disk): ``fill(staging)`` writes the files, then ``_stats.json`` and ``_SUCCESS`` are
    written and the folder swapped in. A reader sees the complete old or new folder
    (for an instant none); a process killed at any step leaves the old one, which the
    rerun's ``recover`` restores if the kill fell between the two renames."""
    commit = FolderCommit(storage.LOCAL, str(final))
    commit.recover()
    staging = Path(commit.staging)
    staging.mkdir(parents=True)
    try:
        fill(staging)
        fault_point(writer, "staged")
        commit.publish(stats)
    except BaseException:
        commit.abandon()
        raise
    fault_point(writer, "committed")


def ingest_notes(landing: str | Path, out: str | Path, window: tuple[int, int] | None = None) -> dict:
    landing, out = Path(landing), Path(out)
    files = _landing_files(landing / "notes", "*.parquet")
    table, sources, file_idx, rows = read_landing_files(files, NOTES_LANDING)
    notes, quarantine, stats = validate_notes(table, sources, file_idx, rows, window)
    stats = {"contract": NOTES.name, "rows": notes.num_rows, **stats}
    _commit_folder(out / "quarantine" / "notes",
                   lambda d: write_quarantine(quarantine, d / "part-00000.parquet"), stats, "ingest_notes")
    _commit_folder(out / "notes", lambda d: write_table(notes, d / "notes.parquet", NOTES), stats, "ingest_notes")
    return stats


def _landing_partition(path: Path) -> str:
    return path.parent.name[3:] if path.parent.name.startswith("dt=") else path.stem


def _partition_stats(part: str, part_files: dict, by_day: dict) -> dict:
    """The accounting of one landing partition from its files' accounting."""
    reasons: dict[str, int] = {}
    for f in part_files.values():
        for k, v in f["reasons"].items():
            reasons[k] = reasons.get(k, 0) + v
    return {
        "landing_partition": part, "files": part_files,
        "rows_in": sum(f["rows_in"] for f in part_files.values()),
        "rows_accepted": sum(f["rows_accepted"] for f in part_files.values()),
        "rows_quarantined": sum(f["rows_quarantined"] for f in part_files.values()),
        "accepted_rows_by_day": by_day,
        "reasons": dict(sorted(reasons.items())),
    }


def _commit_day(day_dir: Path, replaced: set[str], new_files: dict[str, pa.Table]) -> None:
    """The day folder with the files of the re-ingested landing partitions (``replaced``
    names) swapped for ``new_files``; the other partitions' files are kept (hard links).
    A day left without files is removed."""
    kept = [p for p in sorted(day_dir.glob("part-*.parquet")) if p.name not in replaced]
    if not kept and not new_files:
        if day_dir.exists():
            FolderCommit(storage.LOCAL, str(day_dir)).recover()
            shutil.rmtree(day_dir)
        return

    def fill(staging: Path) -> None:
        for old in kept:
            try:
                os.link(old, staging / old.name)   # same disk: no copy; the old day stays intact
            except OSError:
                shutil.copy2(old, staging / old.name)
        for name, rows_of_day in new_files.items():
            write_table(rows_of_day, staging / name, EVENTS)

    counts = {p.name: pq.ParquetFile(p).metadata.num_rows for p in kept}
    counts.update({name: t.num_rows for name, t in new_files.items()})
    _commit_folder(day_dir, fill, {"contract": EVENTS.name, "rows": sum(counts.values()),
                                   "files": dict(sorted(counts.items()))}, "ingest_events")


def ingest_events(landing: str | Path, out: str | Path, notes_path: str | Path | None = None,
                  partitions: list[str] | None = None, window: tuple[int, int] | None = None) -> dict:
    landing, out = Path(landing), Path(out)
    notes_path = Path(notes_path) if notes_path else out / "notes" / "notes.parquet"
    if not notes_path.exists():
        raise FileNotFoundError(f"notes table {notes_path} does not exist: run `python -m jobs.ingest notes` "
                                "first or pass --notes (events are checked against known note ids)")
    known = read_table(notes_path, NOTES, columns=["note_id"]).column("note_id").combine_chunks()
    files = _landing_files(landing / "events", "dt=*/*.parquet")
    if partitions:
        wanted = set(partitions)
        files = [f for f in files if _landing_partition(f) in wanted]
        missing = wanted - {_landing_partition(f) for f in files}
        if missing:
            raise FileNotFoundError(f"landing folder {landing / 'events'} has no partition(s) "
                                    f"{sorted('dt=' + m for m in missing)}")
    table, sources, file_idx, rows = read_landing_files(files, EVENTS_LANDING)
    events, quarantine, stats = validate_events(table, known, sources, file_idx, rows, window)

    file_partition = np.array([_landing_partition(f) for f in files], dtype=object)
    events_root = out / "events"
    per_partition = {}
    q_partition = file_partition[np.array([sources.index(s) for s in quarantine.column("source").to_pylist()],
                                          dtype=np.int64)] if quarantine.num_rows else np.array([], dtype=object)
    ev_partition = file_partition[events.column("__file").to_numpy()] if events.num_rows else np.array([], object)
    parts = sorted(set(file_partition))
    replaced = {f"part-from-{part}.parquet" for part in parts}
    new_by_day: dict[str, dict[str, pa.Table]] = {}
    for part in parts:
        mine = events.filter(pa.array(ev_partition == part)).drop_columns(["__file"])
        by_day = {}
        for day, rows_of_day in sorted(split_by_day(mine).items()):
            new_by_day.setdefault(f"dt={day.isoformat()}", {})[f"part-from-{part}.parquet"] = rows_of_day
            by_day[day.isoformat()] = rows_of_day.num_rows
        part_stats = _partition_stats(part, {s: stats["files"][s] for s, p in zip(sources, file_partition)
                                             if p == part}, by_day)
        per_partition[part] = part_stats
    # Every day that held or will hold a file of these partitions: each is committed whole.
    days = set(new_by_day) | {p.parent.name for name in replaced for p in events_root.glob(f"dt=*/{name}")}
    for day in sorted(days):
        _commit_day(events_root / day, replaced, new_by_day.get(day, {}))
    for part in parts:   # the accounting last: its _SUCCESS says the partition's days are in
        q_mine = quarantine.filter(pa.array(q_partition == part)) if quarantine.num_rows else quarantine
        _commit_folder(out / "quarantine" / "events" / f"dt={part}",
                       lambda d, q=q_mine: write_quarantine(q, d / "part-00000.parquet"), per_partition[part],
                       "ingest_events")
    return {"contract": EVENTS.name, "notes": str(notes_path), "partitions": per_partition, **stats}


def _notes_command(cfg: IngestNotesConfig, timer: cli.Timer) -> dict:
    with timer.phase("ingest_notes"):
        return _bad_input(ingest_notes, cfg.landing, cfg.out, window_from(cfg.earliest, cfg.latest))


def _events_command(cfg: IngestEventsConfig, timer: cli.Timer) -> dict:
    with timer.phase("ingest_events"):
        return _bad_input(ingest_events, cfg.landing, cfg.out, cfg.notes, cfg.dt or None,
                          window_from(cfg.earliest, cfg.latest))


def _bad_input(fn, *args) -> dict:
    try:
        return fn(*args)
    except FileNotFoundError as exc:   # a missing landing folder or notes table: the same input fails again
        raise cli.BadInput(str(exc)) from exc


COMMANDS = {
    "notes": cli.Subcommand(IngestNotesConfig, _notes_command, "landing notes -> notes/notes.parquet + quarantine"),
    "events": cli.Subcommand(IngestEventsConfig, _events_command,
                             "landing events -> events/dt=*/ + quarantine (checked against the notes)"),
}


def main(argv: list[str] | None = None) -> int:
    return cli.main(COMMANDS, argv=argv, prog="python -m jobs.ingest",
                    description="Validate landing files into contract tables plus quarantine.")


if __name__ == "__main__":
    sys.exit(main())
