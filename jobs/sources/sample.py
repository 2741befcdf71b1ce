"""Deterministic sample generator: notes and a click log with real structure.

Used by tests (a few hundred notes), the demo and benchmarks (up to 10M
events). The world (topics, formats, notes, users) is made by
``jobs.sources.sample_world``, the click log by ``jobs.sources.sample_events``;
this module writes them, as contract tables or as landing files (all text,
optionally with malformed rows of every kind ``jobs.ingest`` quarantines), and
is the command line:

    python -m jobs.sources.sample --out <root> [--format landing --malformed-rate 0.01] ...

``--help`` lists every setting (:class:`jobs.config.SampleConfig`); the result
is one JSON line on stdout (the generator stats, also written to
``<out>/_generator_stats.json``).

Same seed and arguments give byte-identical Parquet files.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs.config import SampleConfig
from jobs.sources import split_by_day
from jobs.sources.sample_events import generate_events
from jobs.sources.sample_world import DEFAULT_END_DATE, FORMATS, TOPICS, World, generate_world, note_ids, user_ids
from notellm import cli
from notellm.contracts import EVENTS, EVENTS_LANDING, NOTES, NOTES_LANDING, mark_success, write_table
from notellm.files import atomic_write_json

__all__ = ["DEFAULT_END_DATE", "EVENT_DEFECTS", "FORMATS", "NOTE_DEFECTS", "SampleConfig", "TOPICS", "World",
           "generate", "generate_events", "generate_world", "main", "note_ids", "user_ids"]

# --------------------------------------------------------------------------
# landing form and malformed rows


def iso_utc(ts: pa.Array | pa.ChunkedArray) -> pa.Array:
    """timestamp[us, UTC] -> '2026-11-20T08:15:02.123000+00:00'."""
    text = pc.strftime(ts, format="%Y-%m-%dT%H:%M:%S")
    return pc.binary_join_element_wise(text, pa.scalar("+00:00"), "")


def notes_to_landing(notes: pa.Table) -> pa.Table:
    return pa.table({
        "note_id": notes.column("note_id"), "title": notes.column("title"),
        "content": notes.column("content"), "hashtags": notes.column("hashtags"),
        "category": notes.column("category"), "created_at": iso_utc(notes.column("created_at")),
    }, schema=NOTES_LANDING.schema)


def events_to_landing(events: pa.Table) -> pa.Table:
    return pa.table({
        "user_id": events.column("user_id").cast(pa.string()),
        "note_id": events.column("note_id").cast(pa.string()),
        "event_type": events.column("event_type").cast(pa.string()),
        "event_time": iso_utc(events.column("event_time")),
    }, schema=EVENTS_LANDING.schema)


NOTE_DEFECTS = ("null_note_id", "bad_timestamp", "empty_text", "null_category", "duplicate_note_id")
EVENT_DEFECTS = ("null_user_id", "null_note_id", "bad_timestamp", "unknown_event_type",
                 "unknown_note_id", "duplicate_event")
BAD_TIMESTAMPS = ("2026-13-01T00:00:00+00:00", "2026-02-30T10:00:00+00:00", "yesterday", "",
                  "2026-11-20 25:61:00", "2026-11-20T08:15:02")  # the last one lacks an offset
BAD_EVENT_TYPES = ("tap", "CLICK", "purchase", "")


def _defect_counts(n_clean: int, rate: float, kinds: tuple[str, ...]) -> dict[str, int]:
    """``rate`` is the malformed fraction of the clean rows, split evenly over
    the kinds; every kind appears at least once when rate > 0."""
    if rate <= 0 or n_clean == 0:
        return {k: 0 for k in kinds}
    per_kind = max(1, int(round(rate * n_clean / len(kinds))))
    return {k: per_kind for k in kinds}


def _interleave(clean: pa.Table, bad: pa.Table, after: np.ndarray) -> pa.Table:
    """Insert bad row j right after clean row ``after[j]`` (-1 = at the top),
    keeping the relative order of clean rows."""
    keys = np.concatenate([np.arange(clean.num_rows, dtype=np.float64), after.astype(np.float64) + 0.5])
    order = np.argsort(keys, kind="stable")
    return pa.concat_tables([clean, bad]).take(pa.array(order))


def inject_note_defects(notes: pa.Table, rate: float, seed: int) -> tuple[pa.Table, dict[str, int]]:
    rng = np.random.default_rng([seed, 3])
    counts = _defect_counts(notes.num_rows, rate, NOTE_DEFECTS)
    rows: list[dict] = []
    after: list[int] = []
    n = notes.num_rows
    for kind, k in counts.items():
        picks = rng.integers(n, size=k)
        src = notes.take(pa.array(picks, pa.int64())).to_pylist()
        for j, i in enumerate(picks):
            row = dict(src[j])
            if kind == "null_note_id":
                row["note_id"] = None
            elif kind == "bad_timestamp":
                row["note_id"] = f"{row['note_id']}-badts{j}"
                row["created_at"] = BAD_TIMESTAMPS[j % len(BAD_TIMESTAMPS)]
            elif kind == "empty_text":
                row["note_id"] = f"{row['note_id']}-empty{j}"
                row["title"], row["content"] = ("", "  ") if j % 2 else (None, "")
            elif kind == "null_category":
                row["note_id"] = f"{row['note_id']}-nocat{j}"
                row["category"] = None
            elif kind == "duplicate_note_id":
                row["title"] = row["title"] + " (edited copy)"   # same id, different row: later one refused
            rows.append(row)
            after.append(int(i) if kind == "duplicate_note_id" else int(rng.integers(-1, n)))
    if not rows:
        return notes, counts
    bad = pa.Table.from_pylist(rows, schema=NOTES_LANDING.schema)
    return _interleave(notes, bad, np.array(after)), counts


def inject_event_defects(events: pa.Table, rate: float, seed: int,
                         ) -> tuple[pa.Table, dict[str, int]]:
    """Append malformed rows of every kind to a landing events table (all
    strings). Injected rows are extra rows; the clean rows are unchanged."""
    rng = np.random.default_rng([seed, 4])
    counts = _defect_counts(events.num_rows, rate, EVENT_DEFECTS)
    total = sum(counts.values())
    if total == 0:
        return events, counts
    n = events.num_rows
    picks = rng.integers(n, size=total)
    base = events.take(pa.array(picks)).to_pylist()
    rows, after = [], []
    j = 0
    for kind, k in counts.items():
        for m in range(k):
            i, row = int(picks[j]), dict(base[j])
            j += 1
            if kind == "null_user_id":
                row["user_id"] = None if m % 2 == 0 else ""
            elif kind == "null_note_id":
                row["note_id"] = None
            elif kind == "bad_timestamp":
                row["event_time"] = BAD_TIMESTAMPS[m % len(BAD_TIMESTAMPS)]
            elif kind == "unknown_event_type":
                row["event_type"] = BAD_EVENT_TYPES[m % len(BAD_EVENT_TYPES)]
            elif kind == "unknown_note_id":
                row["note_id"] = f"ghost{m:05d}"
            rows.append(row)
            after.append(i if kind == "duplicate_event" else int(rng.integers(-1, n)))
    bad = pa.Table.from_pylist(rows, schema=EVENTS_LANDING.schema)
    return _interleave(events, bad, np.array(after)), counts


# --------------------------------------------------------------------------
# I/O driver


def write_contract(out: Path, world: World, events: pa.Table) -> dict:
    notes_dir = out / "notes"
    write_table(world.notes, notes_dir / "notes.parquet", NOTES)
    mark_success(notes_dir, {"contract": NOTES.name, "rows": world.notes.num_rows})
    days = {}
    for day, part in sorted(split_by_day(events).items()):
        pdir = out / "events" / f"dt={day.isoformat()}"
        write_table(part, pdir / "part-00000.parquet", EVENTS)
        mark_success(pdir, {"contract": EVENTS.name, "rows": part.num_rows,
                            "files": {"part-00000.parquet": part.num_rows}})
        days[day.isoformat()] = part.num_rows
    return days


def write_landing(out: Path, world: World, events: pa.Table, malformed_rate: float, seed: int,
                  ) -> tuple[dict, dict]:
    landing = out / "landing"
    notes_landing, note_defects = inject_note_defects(notes_to_landing(world.notes), malformed_rate, seed)
    write_table(notes_landing, landing / "notes" / "notes.parquet", NOTES_LANDING)
    event_defects = {k: 0 for k in EVENT_DEFECTS}
    days = {}
    for d, (day, part) in enumerate(sorted(split_by_day(events).items())):
        part_landing, counts = inject_event_defects(events_to_landing(part), malformed_rate, seed * 1000 + d)
        for k, v in counts.items():
            event_defects[k] += v
        pdir = landing / "events" / f"dt={day.isoformat()}"
        write_table(part_landing, pdir / "part-00000.parquet", EVENTS_LANDING)
        # The producer's commit (as a Spark or Flume writer leaves it): jobs mine only committed days.
        mark_success(pdir, {"contract": EVENTS_LANDING.name, "rows": part_landing.num_rows,
                            "files": {"part-00000.parquet": part_landing.num_rows}})
        days[day.isoformat()] = part_landing.num_rows
    return days, {"notes": note_defects, "events": event_defects}


def generate(cfg: SampleConfig, out: str | Path | None = None, fmt: str | None = None,
             malformed_rate: float | None = None) -> dict:
    """Generate and write; return the stats also written to ``_generator_stats.json``.
    ``out``, ``fmt`` and ``malformed_rate`` default to the config's ``out``,
    ``format`` and ``malformed_rate``."""
    cfg = dataclasses.replace(cfg, **{k: v for k, v in (("out", out), ("format", fmt),
                                                         ("malformed_rate", malformed_rate)) if v is not None})
    cfg.validate()
    if cfg.out is None:
        raise ValueError("the sample needs an output root (--out)")
    out, fmt, malformed_rate = Path(cfg.out), cfg.format, cfg.malformed_rate
    t0 = time.perf_counter()
    world = generate_world(cfg)
    events = generate_events(cfg, world)
    t_gen = time.perf_counter() - t0
    # Replace earlier output of the same format so reruns are idempotent.
    for sub in (["notes", "events"] if fmt == "contract" else ["landing"]):
        if (out / sub).exists():
            shutil.rmtree(out / sub)
    if fmt == "contract":
        days, injected = write_contract(out, world, events), None
    else:
        days, injected = write_landing(out, world, events, malformed_rate, cfg.seed)
    counts = pc.value_counts(events.column("event_type").cast(pa.string())).to_pylist()
    stats = {
        "config": cfg.world(),
        "format": fmt,
        "malformed_rate": malformed_rate,
        "notes": world.notes.num_rows,
        "users": cfg.users,
        "bots": [f"u{b:07d}" for b in world.bots],
        "events": events.num_rows,
        "events_by_type": {c["values"]: c["counts"] for c in counts},
        "rows_per_partition": days,
        "window": [cfg.window_start.isoformat(), cfg.window_end.isoformat()],
        "injected": injected,
        "seconds_generate": round(t_gen, 3),
        "seconds_total": round(time.perf_counter() - t0, 3),
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "_generator_stats.json", stats)
    return stats



def command(cfg: SampleConfig, timer: cli.Timer) -> dict:
    if cfg.out is None:
        raise cli.BadInput("out: the sample needs an output root (--out)")
    with timer.phase("generate"):
        return generate(cfg)


def main(argv: list[str] | None = None) -> int:
    return cli.main(command, SampleConfig, argv, prog="python -m jobs.sources.sample")


if __name__ == "__main__":
    sys.exit(main())
