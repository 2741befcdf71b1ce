"""Landing validation: accounting, quarantine reasons, duplicates, partitioning, idempotency."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from jobs import ingest
from jobs.sources.sample import EVENT_DEFECTS, NOTE_DEFECTS, SampleConfig, generate
from notellm.cli import result_line
from notellm.contracts import (
    EVENTS,
    EVENTS_LANDING,
    NOTES,
    NOTES_LANDING,
    QUARANTINE,
    ContractError,
    read_table,
    require_success,
    write_table,
)

CFG = SampleConfig(notes=300, users=200, events=12_000, days=4, seed=3)


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    root = tmp_path_factory.mktemp("ingest")
    gen = generate(CFG, root / "gen", "landing", 0.02)
    generate(CFG, root / "clean", "contract")
    out = root / "out"
    notes_stats = ingest.ingest_notes(root / "gen" / "landing", out)
    events_stats = ingest.ingest_events(root / "gen" / "landing", out)
    return root, out, gen, notes_stats, events_stats


def _sorted(t: pa.Table, keys: list[str]) -> pa.Table:
    return t.select(keys + [c for c in t.column_names if c not in keys]).sort_by([(k, "ascending") for k in keys])


def _footer_rows(paths) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in paths)


def test_counts_reconcile_per_file_and_in_total(ingested):
    """Against counts the ingest did not compute: the landing files' Parquet footers (in),
    the written contract and quarantine files' footers (out), the generator's injected defects."""
    _, out, gen, notes_stats, events_stats = ingested
    landing = out.parent / "gen" / "landing"
    for kind, stats in (("notes", notes_stats), ("events", events_stats)):
        for src, f in stats["files"].items():
            assert f["rows_in"] == pq.ParquetFile(src).metadata.num_rows, src
            assert sum(f["reasons"].values()) == f["rows_quarantined"]
        in_files = sorted((landing / kind).rglob("*.parquet"))
        assert stats["rows_in"] == _footer_rows(in_files) == sum(f["rows_in"] for f in stats["files"].values())
    assert notes_stats["rows_accepted"] == _footer_rows([out / "notes" / "notes.parquet"])
    assert notes_stats["rows_quarantined"] == _footer_rows((out / "quarantine" / "notes").glob("*.parquet"))
    assert events_stats["rows_accepted"] == _footer_rows((out / "events").glob("dt=*/*.parquet"))
    assert events_stats["rows_quarantined"] == _footer_rows((out / "quarantine" / "events").glob("dt=*/*.parquet"))
    for stats in (notes_stats, events_stats):
        assert stats["rows_in"] == stats["rows_accepted"] + stats["rows_quarantined"]
    # every injected defect is quarantined with its own reason, nothing else is
    assert notes_stats["reasons"] == gen["injected"]["notes"]
    assert events_stats["reasons"] == gen["injected"]["events"]
    assert set(events_stats["reasons"]) == set(EVENT_DEFECTS) and set(notes_stats["reasons"]) == set(NOTE_DEFECTS)
    # the stats on disk say the same
    assert require_success(out / "notes")["rows_in"] == notes_stats["rows_in"]
    for part, pstats in events_stats["partitions"].items():
        on_disk = require_success(out / "quarantine" / "events" / f"dt={part}")
        assert on_disk["rows_in"] == on_disk["rows_accepted"] + on_disk["rows_quarantined"]
        assert on_disk == json.loads(json.dumps(pstats))


def test_accepted_rows_equal_the_clean_generator_output(ingested):
    root, out, *_ = ingested
    notes = read_table(out / "notes" / "notes.parquet", NOTES)
    clean_notes = read_table(root / "clean" / "notes" / "notes.parquet", NOTES)
    assert _sorted(notes, ["note_id"]).equals(_sorted(clean_notes, ["note_id"]))
    cols = EVENTS.columns
    events = read_table(out / "events", EVENTS).select(cols)
    clean = read_table(root / "clean" / "events", EVENTS).select(cols)
    assert events.num_rows == clean.num_rows
    assert _sorted(events, cols).equals(_sorted(clean, cols))


def test_quarantine_rows_point_back_to_their_source_row(ingested):
    _, out, *_ = ingested
    q = read_table(out / "quarantine" / "events", QUARANTINE)
    qn = read_table(out / "quarantine" / "notes" / "part-00000.parquet", QUARANTINE)
    assert q.num_rows and qn.num_rows
    for table in (q, qn):
        for row in table.to_pylist()[:: max(1, table.num_rows // 25)]:
            source = pq.read_table(row["source"], partitioning=None)
            original = source.slice(row["row_number"] - 1, 1).to_pylist()[0]
            assert json.loads(row["raw"]) == json.loads(json.dumps(original, default=str))
    reasons = q.column("reason").to_pylist()
    assert any(r.startswith("bad_timestamp: '") for r in reasons)
    assert any(r.startswith("unknown_note_id: ghost") for r in reasons)
    assert any(r.startswith("unknown_event_type: '") for r in reasons)
    assert "duplicate_event" in reasons and "null_user_id" in reasons


def test_events_are_partitioned_by_utc_day_with_success_markers(ingested):
    _, out, _, _, events_stats = ingested
    days = sorted(p for p in (out / "events").glob("dt=*"))
    assert len(days) == CFG.days
    for d in days:
        stats = require_success(d)
        t = read_table(d, EVENTS)
        assert t.num_rows == stats["rows"]
        assert pc.strftime(t.column("event_time"), format="%Y-%m-%d").unique().to_pylist() == [d.name[3:]]


def _write_events(landing: Path, day: str, rows: list[dict]) -> Path:
    return write_table(pa.Table.from_pylist(rows, schema=EVENTS_LANDING.schema),
                       landing / "events" / f"dt={day}" / "part-00000.parquet", EVENTS_LANDING)


def _write_notes(landing: Path, rows: list[dict]) -> Path:
    return write_table(pa.Table.from_pylist(rows, schema=NOTES_LANDING.schema),
                       landing / "notes" / "notes.parquet", NOTES_LANDING)


def _note(nid, title="t", category="c", created="2026-11-01T00:00:00+00:00"):
    return {"note_id": nid, "title": title, "content": "body", "hashtags": None, "category": category,
            "created_at": created}


def test_duplicates_keep_the_first_and_late_rows_go_to_their_real_day(tmp_path):
    landing, out = tmp_path / "landing", tmp_path / "out"
    _write_notes(landing, [_note(None), _note("n1", "first"), _note("n2"), _note("n1", "second")])
    ns = ingest.ingest_notes(landing, out)
    notes = read_table(out / "notes" / "notes.parquet", NOTES)
    assert notes.column("note_id").to_pylist() == ["n1", "n2"]
    assert notes.column("title").to_pylist() == ["first", "t"]
    assert notes.column("hashtags").to_pylist() == [[], []]        # null hashtags -> empty list
    assert ns["reasons"] == {"duplicate_note_id": 1, "null_note_id": 1}

    ev = {"user_id": "u1", "note_id": "n1", "event_type": "click", "event_time": "2026-11-20T10:00:00+00:00"}
    late = dict(ev, event_time="2026-11-19T23:59:59.5+00:00")
    offset = dict(ev, user_id="u2", event_time="2026-11-20T01:00:00+02:00")   # = 2026-11-19T23:00Z
    _write_events(landing, "2026-11-20", [ev, late, ev, offset, dict(ev, event_type="tap")])
    st = ingest.ingest_events(landing, out)
    assert st["rows_in"] == 5 and st["rows_accepted"] == 3 and st["rows_quarantined"] == 2
    q = read_table(out / "quarantine" / "events", QUARANTINE)
    assert sorted(zip(q.column("row_number").to_pylist(), q.column("reason").to_pylist())) == [
        (3, "duplicate_event"), (5, "unknown_event_type: 'tap'")]
    spilled = read_table(out / "events" / "dt=2026-11-19" / "part-from-2026-11-20.parquet", EVENTS)
    assert spilled.num_rows == 2
    assert require_success(out / "events" / "dt=2026-11-19")["rows"] == 2
    assert st["partitions"]["2026-11-20"]["accepted_rows_by_day"] == {"2026-11-19": 2, "2026-11-20": 1}


def test_rerun_replaces_outputs_of_the_same_partition(tmp_path):
    landing, out = tmp_path / "landing", tmp_path / "out"
    _write_notes(landing, [_note("n1")])
    ingest.ingest_notes(landing, out)
    ev = {"user_id": "u1", "note_id": "n1", "event_type": "view", "event_time": "2026-11-20T10:00:00Z"}
    _write_events(landing, "2026-11-20", [ev, dict(ev, event_time="2026-11-19T10:00:00Z")])
    _write_events(landing, "2026-11-19", [dict(ev, event_type="click", event_time="2026-11-19T11:00:00Z")])
    ingest.ingest_events(landing, out)
    first = {p: p.read_bytes() for p in sorted(out.rglob("*.parquet"))}
    ingest.ingest_events(landing, out)
    assert {p: p.read_bytes() for p in sorted(out.rglob("*.parquet"))} == first
    assert read_table(out / "events", EVENTS).num_rows == 3
    # the producer re-drops dt=2026-11-20 without the late row: its spill into 11-19 disappears,
    # while the rows that landing partition 11-19 wrote there stay.
    _write_events(landing, "2026-11-20", [ev])
    ingest.ingest_events(landing, out, partitions=["2026-11-20"])
    assert not (out / "events" / "dt=2026-11-19" / "part-from-2026-11-20.parquet").exists()
    assert require_success(out / "events" / "dt=2026-11-19") == {
        "contract": "events", "rows": 1, "files": {"part-from-2026-11-19.parquet": 1}}
    assert read_table(out / "events", EVENTS).num_rows == 2


def test_missing_landing_folder_and_bad_schema_are_clear_errors(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere" / "notes")):
        ingest.ingest_notes(tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "empty" / "events").mkdir(parents=True)
    _write_notes(tmp_path / "empty", [_note("n1")])
    ingest.ingest_notes(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="no Parquet files"):
        ingest.ingest_events(tmp_path / "empty", tmp_path / "out")
    assert ingest.main(["notes", "--landing", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    result = result_line(capsys.readouterr().out)
    assert result["status"] == "bad_input" and "nowhere" in result["error"] and result["command"] == "notes"

    bad = tmp_path / "bad" / "events" / "dt=2026-11-20" / "part-00000.parquet"
    bad.parent.mkdir(parents=True)
    pq.write_table(pa.table({"user_id": ["u"], "note_id": ["n1"], "event_type": ["click"],
                             "event_time": pa.array([0], pa.timestamp("us", tz="UTC"))}), bad)
    with pytest.raises(ContractError) as err:
        ingest.ingest_events(tmp_path / "bad", tmp_path / "out")
    assert str(bad) in str(err.value) and "'event_time'" in str(err.value) and "expected type string" in str(err.value)
    pq.write_table(pa.table({"user_id": ["u"], "note_id": ["n1"], "event_time": ["2026-11-20T00:00:00Z"]}), bad)
    with pytest.raises(ContractError, match="'event_type': missing"):
        ingest.ingest_events(tmp_path / "bad", tmp_path / "out")


def test_events_need_a_notes_table(tmp_path):
    _write_events(tmp_path / "l", "2026-11-20", [{"user_id": "u", "note_id": "n", "event_type": "click",
                                                  "event_time": "2026-11-20T00:00:00Z"}])
    with pytest.raises(FileNotFoundError, match="notes.parquet does not exist"):
        ingest.ingest_events(tmp_path / "l", tmp_path / "out")


INGEST_POINTS = ["folder_commit:marked", "folder_commit:old_moved_aside", "folder_commit:renamed",
                 "folder_commit:trash_deleted", "ingest_events:staged", "ingest_events:committed"]


@pytest.mark.parametrize("point", INGEST_POINTS)
def test_sigkill_at_each_ingest_step_leaves_complete_days_and_the_rerun_converges(ingested, tmp_path, point):
    """A re-ingest of every landing partition over an ingested output is SIGKILLed at ``point``
    (its 1st, 3rd and 5th occurrence: different days); every day folder a reader can see is then
    complete (``_SUCCESS``, its listed files, their footers adding up to its stats), and rerunning
    the ingest yields exactly the events of an uninterrupted run."""
    import functools
    import shutil

    from jobs.spark_input import committed_day_files
    from notellm.storage import LOCAL
    from tests.support.kill import kill_at_fault_point

    root, out, *_ = ingested
    reference = read_table(out / "events", EVENTS)
    for nth in (1, 3, 5):
        work = tmp_path / f"out{nth}"
        shutil.copytree(out, work)
        kill_at_fault_point(functools.partial(ingest.ingest_events, root / "gen" / "landing", work),
                            f"{point}@{nth}", tmp_path / "ready")
        for day in sorted((work / "events").glob("dt=*")):
            stats = require_success(day)
            files = committed_day_files(LOCAL, str(day))
            assert sum(pq.ParquetFile(f.uri).metadata.num_rows for f in files) == stats["rows"], day
        ingest.ingest_events(root / "gen" / "landing", work)
        cols = EVENTS.columns
        again = read_table(work / "events", EVENTS)
        assert _sorted(again.select(cols), cols).equals(_sorted(reference.select(cols), cols))
        assert not list((work / "events").glob("_staging/*")) and not list((work / "events").glob("_trash/*"))
