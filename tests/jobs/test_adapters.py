"""Public-data adapters: a hand-made mini dump with every case, then the real data in ../shared/data."""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections import Counter
from pathlib import Path

import pyarrow.compute as pc
import pytest

from jobs.sources import movielens, stackexchange
from jobs.sources.stackexchange import parse_tags, site_name, strip_html
from notellm.contracts import EVENTS, NOTES, QUARANTINE, RELATED_LINKS, read_table, require_success

UTC = dt.timezone.utc


def _xml(path: Path, root: str, rows: list[str], crlf: bool = False) -> None:
    nl = "\r\n" if crlf else "\n"
    text = f'\ufeff<?xml version="1.0" encoding="utf-8"?>{nl}<{root}>{nl}' + nl.join(
        f"  <row {r} />" for r in rows) + f"{nl}</{root}>{nl}"
    path.write_bytes(text.encode("utf-8"))


@pytest.fixture()
def mini_dump(tmp_path):
    site = tmp_path / "data" / "tiny.meta.stackexchange.com"
    site.mkdir(parents=True)
    body = ("&lt;p&gt;How do I &lt;b&gt;brew&lt;/b&gt; a &amp;quot;stout&amp;quot;?&lt;/p&gt;&#xA;"
            "&lt;pre&gt;&lt;code&gt;x &amp;lt; 1&lt;/code&gt;&lt;/pre&gt;")
    _xml(site / "posts.xml", "posts", [                       # lower-case name, CRLF line endings
        f'Id="1" PostTypeId="1" CreationDate="2020-01-01T10:00:00.123" OwnerUserId="5" Title="Brewing a stout" '
        f'Body="{body}" Tags="&lt;brewing&gt;&lt;stout&gt;"',
        'Id="2" PostTypeId="1" CreationDate="2020-01-02T10:00:00.000" Title="Pipe tags" Body="b" Tags="|ale|ipa|"',
        'Id="3" PostTypeId="1" CreationDate="2020-01-03T10:00:00.000" OwnerUserId="5" Title="" '
        'Body="&lt;p&gt; &lt;/p&gt;"',
        'Id="4" PostTypeId="1" CreationDate="not a date" OwnerUserId="5" Title="t" Body="b"',
        'Id="10" PostTypeId="2" ParentId="1" CreationDate="2020-01-01T11:00:00.000" OwnerUserId="6" Body="a"',
        'Id="11" PostTypeId="2" ParentId="999" CreationDate="2020-01-01T11:00:00.000" OwnerUserId="6" Body="a"',
        'Id="12" PostTypeId="2" ParentId="2" CreationDate="2020-01-02T11:00:00.000" OwnerUserId="-1" Body="a"',
        'Id="20" PostTypeId="4" CreationDate="2020-01-01T11:00:00.000" Body="tag excerpt"',
        'PostTypeId="1" CreationDate="2020-01-01T11:00:00.000" Title="no id"',
        'Id="1" PostTypeId="1" CreationDate="2020-01-01T10:00:00.000" Title="dup" Body="dup"',
    ], crlf=True)
    _xml(site / "Comments.xml", "comments", [                 # capitalised name
        'Id="1" PostId="1" CreationDate="2020-01-01T12:00:00.000" UserId="7" Text="c"',
        'Id="2" PostId="10" CreationDate="2020-01-01T13:00:00.000" UserId="7" Text="on the answer"',
        'Id="3" PostId="555" CreationDate="2020-01-01T13:00:00.000" UserId="7" Text="unknown"',
        'Id="4" PostId="20" CreationDate="2020-01-01T13:00:00.000" UserId="7" Text="on a wiki"',
        'Id="5" PostId="1" CreationDate="2020-01-01T13:00:00.000" UserDisplayName="anon" Text="anon"',
    ])
    _xml(site / "VOTES.XML", "votes", [
        'Id="1" PostId="1" VoteTypeId="2" CreationDate="2020-01-02"',
        'Id="2" PostId="2" VoteTypeId="5" UserId="8" CreationDate="2020-01-03"',
        'Id="3" PostId="2" VoteTypeId="5" CreationDate="2020-01-03"',
    ])
    _xml(site / "PostLinks.xml", "postlinks", [
        'Id="1" CreationDate="2020-01-05T00:00:00.000" PostId="2" RelatedPostId="1" LinkTypeId="1"',
        'Id="2" CreationDate="2020-01-05T00:00:00.000" PostId="1" RelatedPostId="999" LinkTypeId="1"',
        'Id="3" CreationDate="2020-01-06T00:00:00.000" PostId="1" RelatedPostId="2" LinkTypeId="3"',
    ])
    return tmp_path / "data"


def test_helpers():
    assert strip_html("<p>a &amp; <b>b</b></p>\n<script>x()</script>  c") == "a & b c"
    assert parse_tags("<a><b-c>") == ["a", "b-c"] and parse_tags("|a|b-c|") == ["a", "b-c"] and parse_tags(None) == []
    assert site_name("beer.stackexchange.com") == "beer"
    assert site_name("bicycles.meta.stackexchange.com") == "bicycles.meta"
    assert site_name("economics.stackexchange.com-2012beta") == "economics-2012beta"
    assert site_name("meta.mathoverflow.net") == "mathoverflow.meta"
    assert site_name("meta.answers.onstartups.com") == "answers.onstartups.meta"


def test_stackexchange_mini_dump_every_case(mini_dump, tmp_path):
    out = tmp_path / "out"
    stats = stackexchange.convert(mini_dump, out)
    s = stats["sites"]["tiny.meta"]
    assert s["files"]["posts.xml"] == {
        "rows_in": 10, "rows_accepted": 3, "rows_ignored": 1, "rows_quarantined": 6,
        "ignored": {"not_a_question": 1},
        "quarantined": {"anonymous_user": 1, "bad_timestamp": 1, "duplicate_id": 1, "empty_text": 1,
                        "missing_id": 1, "unknown_parent": 1}}
    assert s["files"]["Comments.xml"]["ignored"] == {"not_on_a_question": 1}
    assert s["files"]["Comments.xml"]["quarantined"] == {"anonymous_user": 1, "unknown_post": 1}
    assert s["files"]["VOTES.XML"] == {"rows_in": 3, "rows_accepted": 1, "rows_ignored": 1, "rows_quarantined": 1,
                                       "ignored": {"not_a_favourite": 1}, "quarantined": {"anonymous_user": 1}}
    notes = read_table(out / "notes" / "notes.parquet", NOTES).to_pylist()
    assert [n["note_id"] for n in notes] == ["tiny.meta:1", "tiny.meta:2"]
    assert notes[0]["content"] == 'How do I brew a "stout"? x < 1'
    assert notes[0]["hashtags"] == ["brewing", "stout"] and notes[1]["hashtags"] == ["ale", "ipa"]
    assert notes[0]["category"] == "tiny.meta"
    assert notes[0]["created_at"] == dt.datetime(2020, 1, 1, 10, 0, 0, 123000, tzinfo=UTC)
    events = read_table(out / "events", EVENTS).sort_by("event_time").to_pylist()
    got = [(e["user_id"], e["note_id"], e["event_type"], e["event_time"]) for e in events]
    assert got == [
        ("tiny.meta:5", "tiny.meta:1", "ask", dt.datetime(2020, 1, 1, 10, 0, 0, 123000, tzinfo=UTC)),
        ("tiny.meta:6", "tiny.meta:1", "answer", dt.datetime(2020, 1, 1, 11, tzinfo=UTC)),
        ("tiny.meta:7", "tiny.meta:1", "comment", dt.datetime(2020, 1, 1, 12, tzinfo=UTC)),
        ("tiny.meta:7", "tiny.meta:1", "comment", dt.datetime(2020, 1, 1, 13, tzinfo=UTC)),  # on the answer
        ("tiny.meta:8", "tiny.meta:2", "favourite", dt.datetime(2020, 1, 3, tzinfo=UTC)),
    ]
    assert s["notes_without_ask_event"] == 1              # question 2 has no owner
    links = read_table(out / "related_links" / "related_links.parquet", RELATED_LINKS).to_pylist()
    assert [(link["src_note_id"], link["dst_note_id"], link["link_type"]) for link in links] == [
        ("tiny.meta:2", "tiny.meta:1", "linked"), ("tiny.meta:1", "tiny.meta:2", "duplicate")]
    q = read_table(out / "quarantine" / "part-00000.parquet", QUARANTINE)
    assert q.num_rows == stats["rows_quarantined"] == 6 + 2 + 1
    bad = [r for r in q.to_pylist() if r["reason"].startswith("unknown_parent")][0]
    assert bad["reason"] == "unknown_parent: 999" and bad["row_number"] == 6
    assert json.loads(bad["raw"])["Id"] == "11" and bad["source"].endswith("posts.xml")
    assert stats["rows_in"] == stats["rows_accepted"] + stats["rows_ignored"] + stats["rows_quarantined"]
    assert require_success(out)["notes"] == 2


# --------------------------------------------------------------------------- real data

SE_SUBSET = ["beer", "htw.meta", "datascience.meta", "startups.meta-2017", "meta.mathoverflow.net"]


@pytest.fixture(scope="module")
def se_real(tmp_path_factory, stackexchange_data):
    out = tmp_path_factory.mktemp("se")
    return out, stackexchange.convert(stackexchange_data, out, SE_SUBSET)


def test_stackexchange_real_subset(se_real):
    out, stats = se_real
    assert set(stats["sites"]) == {"beer", "htw.meta", "datascience.meta", "startups.meta-2017", "mathoverflow.meta"}
    for s in stats["sites"].values():
        for f in s["files"].values():
            assert f["rows_in"] == f["rows_accepted"] + f["rows_ignored"] + f["rows_quarantined"]
    assert stats["rows_in"] == stats["rows_accepted"] + stats["rows_ignored"] + stats["rows_quarantined"]
    # case-insensitive file names: Posts.xml (beer) and posts.xml (htw.meta) both read
    assert "Posts.xml" in stats["sites"]["beer"]["files"] and "posts.xml" in stats["sites"]["htw.meta"]["files"]
    assert stats["sites"]["beer"]["files_not_used"] == ["Tags.xml"]
    notes = read_table(out / "notes" / "notes.parquet", NOTES)
    assert pc.count_distinct(notes.column("note_id")).as_py() == notes.num_rows == stats["notes"]
    by_site = {s: stats["sites"][s]["notes"] for s in stats["sites"]}
    assert by_site["beer"] == 1029 and by_site["startups.meta-2017"] == 0
    contents = dict(zip(notes.column("note_id").to_pylist(), notes.column("content").to_pylist()))
    assert contents["beer:1"] == ("I was offered a beer the other day that was reportedly made with citra hops. "
                                  "What are citra hops? Why should I care that my beer is made with them?")
    # markup survives only where authors quoted HTML as text inside code (e.g. mathoverflow.meta:225)
    with_markup = [k for k, c in contents.items() if "<p>" in c or "</a>" in c or "&lt;" in c]
    assert len(with_markup) <= 3, with_markup
    tags = {n["note_id"].split(":")[0]: n["hashtags"] for n in notes.to_pylist() if n["hashtags"]}
    assert all("<" not in t and "|" not in t for t in tags["beer"] + tags["datascience.meta"])  # both formats
    events = read_table(out / "events", EVENTS)
    assert events.num_rows == stats["events"]
    assert pc.all(pc.is_in(events.column("note_id"), value_set=notes.column("note_id"))).as_py()
    assert set(events.column("event_type").unique().to_pylist()) == {"ask", "answer", "comment", "favourite"}
    links = read_table(out / "related_links" / "related_links.parquet", RELATED_LINKS)
    assert links.num_rows == stats["sites"]["beer"]["related_links"] > 100
    assert pc.all(pc.is_in(links.column("src_note_id"), value_set=notes.column("note_id"))).as_py()
    assert set(links.column("link_type").unique().to_pylist()) == {"linked", "duplicate"}
    # a site with comments/votes but no Posts.xml: every mappable row is quarantined, not dropped
    st = stats["sites"]["startups.meta-2017"]["files"]
    assert st["Comments.xml"]["quarantined"] == {"unknown_post": st["Comments.xml"]["rows_in"]}
    q = read_table(out / "quarantine" / "part-00000.parquet", QUARANTINE)
    assert q.num_rows == stats["rows_quarantined"]


@pytest.mark.slow
def test_stackexchange_all_sites(tmp_path, stackexchange_data):
    stats = stackexchange.convert(stackexchange_data, tmp_path, ["all"])
    assert len(stats["sites"]) == 26
    assert stats["rows_in"] == stats["rows_accepted"] + stats["rows_ignored"] + stats["rows_quarantined"]
    assert stats["notes"] > 8500 and stats["events"] > 50_000 and stats["related_links"] > 1000


@pytest.fixture(scope="module")
def ml_real(tmp_path_factory, movielens_data):
    out = tmp_path_factory.mktemp("ml")
    return out, movielens.convert(movielens_data, out)


def test_movielens_real(ml_real, movielens_data):
    out, stats = ml_real
    f = stats["files"]
    for x in f.values():
        assert x["rows_in"] == x["rows_accepted"] + x["rows_ignored"] + x["rows_quarantined"]
    assert f["movies.csv"]["rows_in"] == 9742 and f["ratings.csv"]["rows_in"] == 100_836
    assert f["ratings.csv"]["rows_accepted"] + f["ratings.csv"]["ignored"]["rating_below_threshold"] == 100_836
    notes = read_table(out / "notes" / "notes.parquet", NOTES)
    assert notes.num_rows == 9742 == pc.count_distinct(notes.column("note_id")).as_py()
    by_id = {n["note_id"]: n for n in notes.to_pylist()}
    toy = by_id["ml:1"]
    assert toy["title"] == "Toy Story (1995)" and toy["category"] == "Adventure"
    assert "Animation" in toy["content"] and "pixar" in toy["content"]
    # hashtags against an independent reference built with the csv module
    counts: dict[str, Counter] = {}
    with (movielens_data / "tags.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["tag"].strip():
                counts.setdefault(f"ml:{row['movieId']}", Counter())[row["tag"].strip().lower()] += 1
    for note_id, note in by_id.items():
        ref = sorted(counts.get(note_id, Counter()).items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        assert note["hashtags"] == [t for t, _ in ref], note_id
    assert "highly quotable" in by_id["ml:60756"]["hashtags"]          # 'Highly quotable' lower-cased
    no_genre = [n for n in by_id.values() if n["category"] == "unknown"]
    assert no_genre and all("(no genres listed)" not in n["content"] for n in no_genre)
    events = read_table(out / "events", EVENTS)
    assert events.num_rows == stats["events"] == f["ratings.csv"]["rows_accepted"]
    assert events.column("event_type").unique().to_pylist() == ["rate"]
    assert events.column("user_id")[0].as_py().startswith("ml:")
    # events never precede the note's created_at (first interaction)
    created = dict(zip(notes.column("note_id").to_pylist(), notes.column("created_at").to_pylist()))
    sample = events.slice(0, 5000).to_pylist()
    assert all(e["event_time"] >= created[e["note_id"]] for e in sample)


ML_T0 = 1_000_000_000


def _mini_movielens(d: Path) -> Path:
    d.mkdir()
    (d / "movies.csv").write_text('movieId,title,genres\n1,"Heat, The (1995)",Action|Crime\n'
                                  '2,Blank (2000),(no genres listed)\n'
                                  "x,Bad id (2001),Drama\n1,Dup (1995),Drama\n")
    t = ML_T0   # times inside the plausible window (notellm.timestamps): 2001 + seconds
    (d / "ratings.csv").write_text(f"userId,movieId,rating,timestamp\n1,1,4.0,{t + 100}\n1,2,2.0,{t + 200}\n"
                                   f"2,9,5.0,{t + 300}\n3,1,7.5,{t + 400}\n4,1,3.5,oops\n")
    (d / "tags.csv").write_text(f"userId,movieId,tag,timestamp\n1,1,Classic,{t + 50}\n2,1,classic ,{t + 60}\n"
                                f"3,1,heist,{t + 70}\n4,9,ghost,{t + 80}\n5,1,,{t + 90}\n")
    return d


def test_movielens_threshold_and_quarantine(tmp_path):
    d = _mini_movielens(tmp_path / "ml")
    stats = movielens.convert(d, tmp_path / "out", min_rating=3.5)
    assert stats["files"]["movies.csv"]["quarantined"] == {"duplicate_id": 1, "missing_id": 1}
    assert stats["files"]["ratings.csv"]["quarantined"] == {"bad_rating": 1, "bad_timestamp": 1, "unknown_movie": 1}
    assert stats["files"]["ratings.csv"]["ignored"] == {"rating_below_threshold": 1}
    assert stats["files"]["tags.csv"]["quarantined"] == {"empty_tag": 1, "unknown_movie": 1}
    notes = {n["note_id"]: n for n in read_table(tmp_path / "out" / "notes" / "notes.parquet", NOTES).to_pylist()}
    assert notes["ml:1"]["title"] == "Heat, The (1995)" and notes["ml:1"]["hashtags"] == ["classic", "heist"]
    assert notes["ml:1"]["created_at"] == dt.datetime.fromtimestamp(ML_T0 + 50, UTC)
    assert notes["ml:2"]["category"] == "unknown"
    assert notes["ml:2"]["created_at"] == dt.datetime.fromtimestamp(ML_T0 + 200, UTC)
    ev = read_table(tmp_path / "out" / "events", EVENTS).to_pylist()
    assert [(e["user_id"], e["note_id"]) for e in ev] == [("ml:1", "ml:1")]
    every = movielens.convert(d, tmp_path / "all", min_rating=0)
    assert every["events"] == 2 and every["files"]["ratings.csv"]["ignored"] == {}


def _cli(*args) -> tuple[int, dict]:
    """Run an adapter as the evaluation does (a subprocess); its stdout must be one JSON line."""
    import os
    import subprocess
    import sys

    from tests.support.paths import REPO

    res = subprocess.run([sys.executable, "-m", *map(str, args)], cwd=REPO, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)
    lines = res.stdout.splitlines()
    assert len(lines) == 1, res.stdout + res.stderr[-2000:]
    return res.returncode, json.loads(lines[0])


def test_adapter_clis_print_one_result_line(mini_dump, tmp_path):
    code, se = _cli("jobs.sources.stackexchange", "--data", mini_dump, "--sites", "all", "--out", tmp_path / "se")
    assert code == 0 and se["status"] == "ok"
    assert {k: se[k] for k in ("notes", "events", "related_links")} == {
        k: stackexchange.convert(mini_dump, tmp_path / "se2")[k] for k in ("notes", "events", "related_links")}
    code, by_name = _cli("jobs.sources.stackexchange", "--data", mini_dump, "--sites", "tiny.meta,nope",
                         "--out", tmp_path / "se3")
    assert code == 2 and by_name["status"] == "bad_input" and "nope" in by_name["error"]
    ml = _mini_movielens(tmp_path / "ml")
    code, every = _cli("jobs.sources.movielens", "--data", ml, "--out", tmp_path / "ml_out", "--min-rating", 0)
    assert code == 0 and every["status"] == "ok" and every["events"] == 2
    code, missing = _cli("jobs.sources.movielens", "--data", tmp_path / "nowhere", "--out", tmp_path / "x")
    assert code == 2 and missing["status"] == "bad_input"
