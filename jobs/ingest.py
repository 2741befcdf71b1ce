"""Landing validation: landing files -> contract tables + quarantine.

    python -m jobs.ingest notes  --landing <landing root> --out <root>
    python -m jobs.ingest events --landing <landing root> --out <root> [--notes <notes.parquet>] [--dt D ...]

(``--help`` on each subcommand lists its settings; the result is one JSON
line on stdout with the accounting below.)

Input: ``<landing>/notes/*.parquet`` (NOTES_LANDING) and
``<landing>/events/dt=X/*.parquet`` (EVENTS_LANDING). Every column there is
nullable text, so each row is checked here and either accepted into the
contract table or quarantined with a reason (first failing check wins):

notes:  null_note_id, bad_timestamp, empty_text, null_category, duplicate_note_id
events: null_user_id, null_note_id, bad_timestamp, unknown_event_type,
        unknown_note_id, duplicate_event

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

Idempotent: a rerun for landing partition X first deletes every
``events/dt=*/part-from-X.parquet`` and the quarantine of X, then writes.

Validation is vectorised with pyarrow compute; only the JSON of the (few)
rejected rows is built per row.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.config import IngestEventsConfig, IngestNotesConfig
from jobs.quarantine import concat_quarantine, quarantine_table, raw_json, write_quarantine
from jobs.sources import split_by_day
from notellm import cli
from notellm.contracts import (
    EVENT_TYPES,
    EVENTS,
    EVENTS_LANDING,
    NOTES,
    NOTES_LANDING,
    STATS_FILE,
    SUCCESS_MARKER,
    Contract,
    ContractError,
    mark_success,
    read_table,
    validate_schema,
    write_table,
)

ISO_PATTERN = (r"^(?P<date>\d{4}-\d{2}-\d{2})[T ](?P<time>\d{2}:\d{2}:\d{2})"
               r"(?P<frac>\.\d{1,9})?(?P<tz>Z|z|[+-]\d{2}:?\d{2})$")


# --------------------------------------------------------------------------
# pure transforms


def parse_iso_utc(text: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Parse ISO-8601 timestamps *with a UTC offset* into timestamp[us, UTC];
    null where the text is null, malformed, has no offset or names an
    impossible date/time (2026-02-30, 25:61). Fractions beyond microseconds
    are truncated.

    Arrow's strptime is lenient (it rolls 02-30 over to 03-02), so the local
    date-time is parsed and printed back; only exact round trips count.
    """
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    parts = pc.extract_regex(text, ISO_PATTERN)          # null where no match
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
    frac = pc.if_else(valid, frac, "")
    tz_plain = pc.replace_substring(pc.if_else(valid, tz, "Z"), ":", "")     # "+0530" / "Z"
    is_z = pc.equal(pc.utf8_upper(tz_plain), "Z")
    hours = pc.cast(pc.if_else(is_z, "00", pc.utf8_slice_codeunits(tz_plain, 1, 3)), pa.int64())
    minutes = pc.cast(pc.if_else(is_z, "00", pc.utf8_slice_codeunits(tz_plain, 3, 5)), pa.int64())
    sign = pc.if_else(pc.equal(pc.utf8_slice_codeunits(tz_plain, 0, 1), "-"), -1, 1)
    offset_s = pc.multiply(sign, pc.add(pc.multiply(hours, 3600), pc.multiply(minutes, 60)))

    valid_np = valid.to_numpy(zero_copy_only=False)
    seconds = np.where(valid_np, np.nan_to_num(seconds.astype(np.float64), nan=0).astype(np.int64), 0)
    micros = ((seconds - pc.fill_null(offset_s, 0).to_numpy(zero_copy_only=False)) * 1_000_000
              + pc.fill_null(frac_us, 0).to_numpy(zero_copy_only=False))
    return pa.array(micros, pa.timestamp("us", tz="UTC"), mask=~valid_np)


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


def validate_notes(table: pa.Table, sources: list[str], file_idx: np.ndarray, row_in_file: np.ndarray,
                   ) -> tuple[pa.Table, pa.Table, dict]:
    """Landing notes -> (NOTES table, QUARANTINE table, accounting)."""
    r = _Reasons(table.num_rows)
    created = parse_iso_utc(table.column("created_at"))
    r.flag(_blank(table.column("note_id")), "null_note_id")
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
                    row_in_file: np.ndarray) -> tuple[pa.Table, pa.Table, dict]:
    """Landing events -> (EVENTS table with extra ``__file`` column, QUARANTINE table, accounting)."""
    r = _Reasons(table.num_rows)
    event_time = parse_iso_utc(table.column("event_time"))
    r.flag(_blank(table.column("user_id")), "null_user_id")
    r.flag(_blank(table.column("note_id")), "null_note_id")
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


def ingest_notes(landing: str | Path, out: str | Path) -> dict:
    landing, out = Path(landing), Path(out)
    files = _landing_files(landing / "notes", "*.parquet")
    table, sources, file_idx, rows = read_landing_files(files, NOTES_LANDING)
    notes, quarantine, stats = validate_notes(table, sources, file_idx, rows)
    write_table(notes, out / "notes" / "notes.parquet", NOTES)
    write_quarantine(quarantine, out / "quarantine" / "notes" / "part-00000.parquet")
    stats = {"contract": NOTES.name, "rows": notes.num_rows, **stats}
    mark_success(out / "quarantine" / "notes", stats)
    mark_success(out / "notes", stats)
    return stats


def _landing_partition(path: Path) -> str:
    return path.parent.name[3:] if path.parent.name.startswith("dt=") else path.stem


def _refresh_day_stats(day_dir: Path) -> None:
    files = {p.name: pq.ParquetFile(p).metadata.num_rows for p in sorted(day_dir.glob("part-*.parquet"))}
    if not files:
        for name in (SUCCESS_MARKER, STATS_FILE):
            (day_dir / name).unlink(missing_ok=True)
        if not any(day_dir.iterdir()):
            day_dir.rmdir()
        return
    (day_dir / SUCCESS_MARKER).unlink(missing_ok=True)
    mark_success(day_dir, {"contract": EVENTS.name, "rows": sum(files.values()), "files": files})


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


def ingest_events(landing: str | Path, out: str | Path, notes_path: str | Path | None = None,
                  partitions: list[str] | None = None) -> dict:
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
    events, quarantine, stats = validate_events(table, known, sources, file_idx, rows)

    file_partition = np.array([_landing_partition(f) for f in files], dtype=object)
    events_root = out / "events"
    touched: set[Path] = set()
    per_partition = {}
    q_partition = file_partition[np.array([sources.index(s) for s in quarantine.column("source").to_pylist()],
                                          dtype=np.int64)] if quarantine.num_rows else np.array([], dtype=object)
    ev_partition = file_partition[events.column("__file").to_numpy()] if events.num_rows else np.array([], object)
    for part in sorted(set(file_partition)):
        out_name = f"part-from-{part}.parquet"
        for old in events_root.glob(f"dt=*/{out_name}"):     # idempotent: drop this partition's old output
            (old.parent / SUCCESS_MARKER).unlink(missing_ok=True)
            old.unlink()
            touched.add(old.parent)
        mine = events.filter(pa.array(ev_partition == part)).drop_columns(["__file"])
        by_day = {}
        for day, rows_of_day in sorted(split_by_day(mine).items()):
            day_dir = events_root / f"dt={day.isoformat()}"
            write_table(rows_of_day, day_dir / out_name, EVENTS)
            touched.add(day_dir)
            by_day[day.isoformat()] = rows_of_day.num_rows
        q_dir = out / "quarantine" / "events" / f"dt={part}"
        q_mine = quarantine.filter(pa.array(q_partition == part)) if quarantine.num_rows else quarantine
        write_quarantine(q_mine, q_dir / "part-00000.parquet")
        part_stats = _partition_stats(part, {s: stats["files"][s] for s, p in zip(sources, file_partition)
                                             if p == part}, by_day)
        (q_dir / SUCCESS_MARKER).unlink(missing_ok=True)
        mark_success(q_dir, part_stats)
        per_partition[part] = part_stats
    for day_dir in sorted(touched):
        _refresh_day_stats(day_dir)
    return {"contract": EVENTS.name, "notes": str(notes_path), "partitions": per_partition, **stats}


def _notes_command(cfg: IngestNotesConfig, timer: cli.Timer) -> dict:
    with timer.phase("ingest_notes"):
        return _bad_input(ingest_notes, cfg.landing, cfg.out)


def _events_command(cfg: IngestEventsConfig, timer: cli.Timer) -> dict:
    with timer.phase("ingest_events"):
        return _bad_input(ingest_events, cfg.landing, cfg.out, cfg.notes, cfg.dt or None)


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
