"""Sample generator: determinism, structure and output layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from jobs.sources import sample
from jobs.sources.sample import SampleConfig, generate, generate_events, generate_world
from notellm.contracts import EVENTS, EVENTS_LANDING, NOTES, NOTES_LANDING, read_table, require_success

CFG = SampleConfig(notes=400, users=300, events=40_000, days=7, seed=7)


@pytest.fixture(scope="module")
def world_events():
    world = generate_world(CFG)
    return world, generate_events(CFG, world)


def _parquet_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


@pytest.mark.parametrize("fmt,rate", [("contract", 0.0), ("landing", 0.01)])
def test_same_seed_gives_byte_identical_parquet(tmp_path, fmt, rate):
    cfg = SampleConfig(notes=200, users=100, events=5000, days=3, seed=11)
    generate(cfg, tmp_path / "a", fmt, rate)
    generate(cfg, tmp_path / "b", fmt, rate)
    a, b = _parquet_bytes(tmp_path / "a"), _parquet_bytes(tmp_path / "b")
    assert a and a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a)


def test_different_seed_gives_different_data(tmp_path):
    base = dict(notes=200, users=100, events=5000, days=3)
    generate(SampleConfig(**base, seed=1), tmp_path / "a")
    generate(SampleConfig(**base, seed=2), tmp_path / "b")
    ea = read_table(tmp_path / "a" / "events", EVENTS)
    eb = read_table(tmp_path / "b" / "events", EVENTS)
    assert not ea.select(EVENTS.columns).equals(eb.select(EVENTS.columns))
    na = read_table(tmp_path / "a" / "notes" / "notes.parquet", NOTES)
    nb = read_table(tmp_path / "b" / "notes" / "notes.parquet", NOTES)
    assert na.column("title").to_pylist() != nb.column("title").to_pylist()


def test_contract_layout_and_success_markers(tmp_path):
    stats = generate(CFG, tmp_path)
    notes = read_table(tmp_path / "notes" / "notes.parquet", NOTES)
    assert notes.num_rows == CFG.notes
    assert pc.count_distinct(notes.column("note_id")).as_py() == CFG.notes
    parts = sorted((tmp_path / "events").glob("dt=*"))
    assert [p.name for p in parts] == [f"dt={d}" for d in sorted(stats["rows_per_partition"])]
    assert len(parts) == CFG.days
    total = 0
    for p in parts:
        rows = require_success(p)["rows"]
        t = read_table(p / "part-00000.parquet", EVENTS)
        assert t.num_rows == rows
        days = pc.strftime(t.column("event_time"), format="%Y-%m-%d").unique().to_pylist()
        assert days == [p.name[3:]]             # partition = UTC day of event_time
        total += rows
    assert total == stats["events"]
    assert json.loads((tmp_path / "_generator_stats.json").read_text())["events"] == total
    assert abs(total - CFG.events) / CFG.events < 0.05


def test_notes_are_readable_topic_text(world_events):
    world, _ = world_events
    notes = world.notes
    for i in range(0, notes.num_rows, 37):
        topic = sample.TOPICS[world.topic[i]]
        row = {k: notes.column(k)[i].as_py() for k in notes.column_names}
        assert row["category"] == topic.category
        assert 1 <= len(row["hashtags"]) <= 5 and set(row["hashtags"]) <= set(topic.hashtags)
        text = (row["title"] + " " + row["content"]).lower()
        assert any(w in text for w in topic.words), text
        assert row["content"].endswith((".", "?"))
    assert len(sample.TOPICS) >= 12 and len({t.category for t in sample.TOPICS}) < len(sample.TOPICS)


def test_time_window_and_no_event_before_note_creation(world_events):
    world, events = world_events
    t = events.column("event_time").cast(pa.int64()).to_numpy()
    start = int(CFG.window_start.timestamp() * 1e6)
    end = int(CFG.window_end.timestamp() * 1e6)
    assert t.min() >= start and t.max() < end
    note_idx = events.column("note_id").combine_chunks().indices.to_numpy()
    assert (t >= world.created_us[note_idx]).all()
    # no exact duplicate events in the clean log (ingest would quarantine them)
    keys = events.select(["user_id", "note_id", "event_type", "event_time"])
    keys = pa.table({k: keys.column(k).cast(pa.string()) if k != "event_time" else keys.column(k)
                     for k in keys.column_names})
    assert keys.group_by(keys.column_names).aggregate([]).num_rows == events.num_rows
    # half the notes are created inside the window: a later test period has new notes
    assert 0.3 < np.mean(world.created_us >= start) < 0.7


def _organic_clicks(world, events):
    users = events.column("user_id").combine_chunks().indices.to_numpy()
    notes = events.column("note_id").combine_chunks().indices.to_numpy()
    kinds = events.column("event_type").combine_chunks().indices.to_numpy()
    return users, notes, kinds


def _co_clicked(world, events):
    """Human clicks (user, note) sorted by user, and the note pairs of consecutive clicks
    of one user."""
    users, notes, kinds = _organic_clicks(world, events)
    keep = (kinds == 2) & ~np.isin(users, world.bots)
    u, n = users[keep], notes[keep]
    order = np.lexsort((n, u))
    u, n = u[order], n[order]
    same_user = u[1:] == u[:-1]
    return u, n, n[:-1][same_user], n[1:][same_user]


def test_co_clicked_notes_share_topics_far_more_than_random(world_events):
    world, events = world_events
    _, _, a, b = _co_clicked(world, events)
    co_same = np.mean(world.topic[a] == world.topic[b])
    rng = np.random.default_rng(0)
    r = rng.integers(CFG.notes, size=(20_000, 2))
    random_same = np.mean(world.topic[r[:, 0]] == world.topic[r[:, 1]])
    assert co_same > 3 * random_same, (co_same, random_same)


def test_popularity_skew_bots_and_funnel(world_events):
    world, events = world_events
    users, notes, kinds = _organic_clicks(world, events)
    imp = np.bincount(notes[kinds == 0], minlength=CFG.notes)
    top = np.sort(imp)[::-1]
    assert top[: CFG.notes // 10].sum() > 0.35 * top.sum()       # top 10% notes get >35% of impressions
    clicks_per_user = np.bincount(users[kinds == 2], minlength=CFG.users)
    humans = np.setdiff1d(np.arange(CFG.users), world.bots)
    assert clicks_per_user[world.bots].min() > 10 * np.median(clicks_per_user[humans])
    n_imp, n_view, n_click = (np.sum(kinds == k) for k in range(3))
    assert n_imp > n_view > n_click > 0
    assert 0.2 < n_view / n_imp < 0.4


def test_landing_format_reports_injected_rows(tmp_path):
    cfg = SampleConfig(notes=300, users=200, events=8000, days=3, seed=5)
    clean = generate(cfg, tmp_path / "clean", "landing", 0.0)
    dirty = generate(cfg, tmp_path / "dirty", "landing", 0.02)
    assert clean["injected"]["events"] == {k: 0 for k in sample.EVENT_DEFECTS}
    inj = dirty["injected"]
    assert all(v > 0 for v in inj["events"].values()) and all(v > 0 for v in inj["notes"].values())
    ev_clean = read_table(tmp_path / "clean" / "landing" / "events", EVENTS_LANDING)
    ev_dirty = read_table(tmp_path / "dirty" / "landing" / "events", EVENTS_LANDING)
    assert ev_dirty.num_rows == ev_clean.num_rows + sum(inj["events"].values())
    n_dirty = read_table(tmp_path / "dirty" / "landing" / "notes" / "notes.parquet", NOTES_LANDING)
    assert n_dirty.num_rows == cfg.notes + sum(inj["notes"].values())
    t = ev_clean.column("event_time")[0].as_py()
    assert t.endswith("+00:00") and "T" in t and len(t) == len("2026-11-20T08:15:02.123000+00:00")
    on_disk = json.loads((tmp_path / "dirty" / "_generator_stats.json").read_text())
    assert on_disk["injected"] == inj


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="--notes"):
        generate(SampleConfig(notes=3), tmp_path)
    with pytest.raises(ValueError, match="malformed-rate"):
        generate(CFG, tmp_path, "contract", 0.1)


def test_co_clicks_follow_reader_communities_across_topics(world_events):
    """The signal text similarity does not show: consecutive clicks of one user share the
    note format (the user's community) far more often than chance, also across topics."""
    world, events = world_events
    u, n, a, b = _co_clicked(world, events)
    same_format = world.fmt[a] == world.fmt[b]
    cross_topic = world.topic[a] != world.topic[b]
    chance = 1 / len(sample.FORMATS)
    assert same_format.mean() > 3 * chance, same_format.mean()
    assert cross_topic.sum() > 0.2 * len(a)                       # readers' interests span topics
    assert same_format[cross_topic].mean() > 3 * chance, same_format[cross_topic].mean()
    assert np.mean(world.fmt[n] == world.user_community[u]) > 0.7


def test_formats_use_no_topic_words():
    """A format's templates are generic: only the filled-in words name the topic."""
    topic_words = {w for t in sample.TOPICS for w in t.words} | {h for t in sample.TOPICS for h in t.hashtags}
    for f in sample.FORMATS:
        text = " ".join(f.titles + f.sentences).lower()
        assert not [w for w in topic_words if f" {w} " in f" {text} "], f.name
    assert len({f.name for f in sample.FORMATS}) == len(sample.FORMATS) >= 4
