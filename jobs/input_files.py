"""Input files of the Spark jobs, found from listings and Parquet footers before any
JVM starts (bad input fails fast): the window's committed event days (``_SUCCESS``
required, the files ``_stats.json`` lists), told apart as contract or landing
files by their footers, the notes files, and the ``_SUCCESS`` check of inputs.
Re-exported by :mod:`jobs.spark_input`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging

from notellm import contracts, storage
from notellm.cli import BadInput
from notellm.contracts import ContractError
from notellm.storage import FileEntry, Storage, parquet_metadata

log = logging.getLogger(__name__)


class InputError(BadInput):
    """Bad input that stops the job before any output is touched (exit 2, bad_input)."""


# --------------------------------------------------------------------------
# input discovery (footers only: bad input fails before any data is read)

@dataclasses.dataclass
class EventFiles:
    contract: list[str]
    landing: list[str]
    missing_days: list[str]
    input_bytes: int = 0
    footer_rows: int = 0   # rows the input files' Parquet footers declare: what the job must account for

    @property
    def all(self) -> list[str]:
        return self.contract + self.landing


def parquet_files(store: Storage, directory: str) -> list[FileEntry]:
    """The committed Parquet files below ``directory`` (nothing under ``_temporary/`` or hidden)."""
    return store.list_files(directory, ".parquet")


def committed_day_files(store: Storage, day_dir: str) -> list[FileEntry]:
    """The files of a committed day partition: none when the folder does not exist; else
    the folder must have ``_SUCCESS`` (a day being written or half ingested is refused,
    never mined), and when its ``_stats.json`` lists ``files`` exactly those are read
    (a listed file missing is an error; an unlisted one, e.g. a late straggler, is left out
    and logged)."""
    if not store.exists(day_dir):
        return []
    present = parquet_files(store, day_dir)
    if not store.exists(storage.join(day_dir, contracts.SUCCESS_MARKER)):
        raise InputError(f"events: {day_dir}: no {contracts.SUCCESS_MARKER} marker ({len(present)} Parquet "
                         "file(s)): the day is still being written or was half ingested; it is not mined. "
                         "Rerun its ingest (or the producer's commit)")
    stats_uri = storage.join(day_dir, contracts.STATS_FILE)
    listed = store.read_json(stats_uri).get("files") if store.exists(stats_uri) else None
    if not isinstance(listed, dict):
        return present
    by_name = {storage.name_of(e.uri): e for e in present}
    missing = sorted(set(listed) - set(by_name))
    if missing:
        raise InputError(f"events: {day_dir}: {contracts.STATS_FILE} lists {missing[:5]} but they are not there; "
                         "the day is damaged")
    extra = sorted(set(by_name) - set(listed))
    if extra:
        log.warning("%s: %d Parquet file(s) not listed in %s are not read: %s", day_dir, len(extra),
                    contracts.STATS_FILE, extra[:5])
    return [by_name[name] for name in sorted(listed)]


def read_metadata(store: Storage, uri: str, what: str):
    try:
        return parquet_metadata(store, uri)
    except Exception as exc:  # noqa: BLE001 - any unreadable footer is the same input error
        raise InputError(f"{what}: {uri}: unreadable as Parquet: {exc}") from exc


def read_schema(store: Storage, uri: str, what: str):
    return read_metadata(store, uri, what).schema.to_arrow_schema()


def discover_event_files(store: Storage, events_root: str, days: list[dt.date],
                         allow_missing_days: bool) -> EventFiles:
    """List the window's event files and tell contract files (typed
    event_time) from landing files (all strings) by their Parquet footer."""
    if not store.is_dir(events_root):
        raise InputError(f"events: {events_root} is not a directory (expected {events_root}/dt=YYYY-MM-DD/*.parquet)")
    found = EventFiles([], [], [])
    for day in days:
        files = committed_day_files(store, storage.join(events_root, f"dt={day.isoformat()}"))
        if not files:
            found.missing_days.append(day.isoformat())
        for entry in files:
            meta = read_metadata(store, entry.uri, "events")
            schema = meta.schema.to_arrow_schema()
            found.footer_rows += meta.num_rows
            idx = schema.get_field_index("event_time")
            form = contracts.EVENTS_LANDING if idx >= 0 and str(schema.field(idx).type) in ("string", "large_string") \
                else contracts.EVENTS
            try:
                contracts.validate_schema(schema, form, entry.uri)
            except ContractError as exc:
                raise InputError(f"events: {exc}") from exc
            (found.landing if form is contracts.EVENTS_LANDING else found.contract).append(entry.uri)
            found.input_bytes += entry.size
    if found.missing_days and (not allow_missing_days or not found.all):
        shown = ", ".join(found.missing_days[:10]) + (f" (+{len(found.missing_days) - 10} more)"
                                                       if len(found.missing_days) > 10 else "")
        raise InputError(f"events: no Parquet files for day(s) {shown} of the window "
                         f"{days[0]}..{days[-1]} under {events_root} (expected dt=YYYY-MM-DD/*.parquet; "
                         f"--allow-missing-days accepts gaps)")
    return found


def notes_files(store: Storage, notes: str) -> list[str]:
    kind = store.info(notes)
    files = ([FileEntry(notes, 0)] if kind == "file" else parquet_files(store, notes) if kind == "dir" else [])
    if not files:
        raise InputError(f"notes: no Parquet file at {notes}")
    for entry in files:
        try:
            contracts.validate_schema(read_schema(store, entry.uri, "notes"), contracts.NOTES, entry.uri)
        except ContractError as exc:
            raise InputError(f"notes: {exc}") from exc
    return [e.uri for e in files]


def qualify_all(store: Storage, *uris: str) -> list[str]:
    """Every URI fully qualified by the job's filesystem (scheme-less = its default FS),
    so the driver lists exactly what the executors will read."""
    return [store.qualify(u) for u in uris]


# --------------------------------------------------------------------------
# Spark stages


def require_success(store: Storage, folder: str, what: str) -> dict:
    """Refuse a folder without ``_SUCCESS``; return its stats."""
    if not store.exists(storage.join(folder, contracts.SUCCESS_MARKER)):
        raise InputError(f"{what}: {folder}: no {contracts.SUCCESS_MARKER} marker: the partition is incomplete "
                         f"or still being written")
    stats_uri = storage.join(folder, contracts.STATS_FILE)
    return store.read_json(stats_uri) if store.exists(stats_uri) else {}
