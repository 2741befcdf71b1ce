"""Bad-input classes, each reconciled against counts the code did not compute.

Row classes: a landing file of GOOD valid rows plus BAD rows of one defect;
ingest must accept exactly the good ones and quarantine exactly the injected
ones with the expected reason, and the Parquet footers of the landing, the
contract and the quarantine files (not the ingest's own accounting) must say
so. File classes (truncated or empty files, invalid UTF-8, an XML bomb, an
external entity, integer overflow): the bad-input exit code, naming the file,
and no output written.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import ingest
from jobs.sources import movielens, stackexchange
from notellm.cli import EXIT_BAD_INPUT, BadInput
from notellm.contracts import EVENTS_LANDING, NOTES_LANDING, ContractError, write_table
from notellm.limits import MAX_CONTENT_CHARS, MAX_HASHTAG_CHARS, MAX_HASHTAGS, MAX_ID_CHARS, MAX_TITLE_CHARS

GOOD, BAD = 12, 3
NOW = dt.datetime.now(dt.timezone.utc)


def good_note(i: int) -> dict:
    return {"note_id": f"n{i:04d}", "title": f"title {i}", "content": f"content of note {i}",
            "hashtags": ["coffee", "beans"], "category": "coffee", "created_at": "2026-11-20T10:00:00Z"}


def good_event(i: int) -> dict:
    return {"user_id": f"u{i:03d}", "note_id": f"n{i % GOOD:04d}", "event_type": "click",
            "event_time": f"2026-11-24T10:{i % 60:02d}:00Z"}


BAD_TIMES = {
    "no_offset": "2026-11-24T10:00:00", "offset_99": "2026-11-24T10:00:00+99:99",
    "offset_14_01": "2026-11-24T10:00:00+14:01", "offset_minutes_60": "2026-11-24T10:00:00+05:60",
    "year_1970": "1970-01-01T00:00:00Z", "year_1989": "1989-12-31T23:59:59Z", "year_2999": "2999-01-01T00:00:00Z",
    "future_week": (NOW + dt.timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "feb_30": "2026-02-30T10:00:00Z", "hour_25": "2026-11-24T25:00:00Z", "minute_61": "2026-11-24T10:61:00Z",
    "date_only": "2026-11-24", "garbage": "yesterday", "trailing_space": "2026-11-24T10:00:00Z ",
    "unix_seconds": "1764000000", "empty": "", "null": None, "slashes": "2026/11/24 10:00:00Z",
    "two_digit_year": "26-11-24T10:00:00Z", "fraction_10_digits": "2026-11-24T10:00:00.1234567890Z",
}

NOTE_CLASSES = {
    "null_note_id": ({"note_id": None}, "null_note_id"),
    "empty_note_id": ({"note_id": ""}, "null_note_id"),
    "blank_note_id": ({"note_id": "  \t"}, "null_note_id"),
    "note_id_too_long": ({"note_id": "n" * (MAX_ID_CHARS + 1)}, "too_long"),
    "title_too_long": ({"title": "t" * (MAX_TITLE_CHARS + 1)}, "too_long"),
    "huge_title_1mb": ({"title": "t" * 1_000_000}, "too_long"),
    "content_too_long": ({"content": "c" * (MAX_CONTENT_CHARS + 1)}, "too_long"),
    "huge_content_5mb": ({"content": "c" * 5_000_000}, "too_long"),
    "too_many_hashtags": ({"hashtags": [f"h{i}" for i in range(MAX_HASHTAGS + 1)]}, "too_long"),
    "huge_hashtag_list": ({"hashtags": [f"h{i}" for i in range(100_000)]}, "too_long"),
    "hashtag_too_long": ({"hashtags": ["ok", "h" * (MAX_HASHTAG_CHARS + 1)]}, "too_long"),
    "empty_text": ({"title": "", "content": ""}, "empty_text"),
    "null_text": ({"title": None, "content": None}, "empty_text"),
    "blank_text": ({"title": " ", "content": "\n\t"}, "empty_text"),
    "null_category": ({"category": None}, "null_category"),
    "blank_category": ({"category": "  "}, "null_category"),
    **{f"created_at_{name}": ({"created_at": text}, "bad_timestamp") for name, text in BAD_TIMES.items()},
}

EVENT_CLASSES = {
    "null_user_id": ({"user_id": None}, "null_user_id"),
    "blank_user_id": ({"user_id": " "}, "null_user_id"),
    "user_id_too_long": ({"user_id": "u" * (MAX_ID_CHARS + 1)}, "too_long"),
    "event_null_note_id": ({"note_id": None}, "null_note_id"),
    "event_note_id_too_long": ({"note_id": "n" * (MAX_ID_CHARS + 1)}, "too_long"),
    "unknown_note_id": ({"note_id": "n9999"}, "unknown_note_id"),
    "unknown_event_type": ({"event_type": "purchase"}, "unknown_event_type"),
    "null_event_type": ({"event_type": None}, "unknown_event_type"),
    "event_type_case": ({"event_type": "CLICK"}, "unknown_event_type"),
    "event_type_too_long": ({"event_type": "x" * (MAX_ID_CHARS + 1)}, "too_long"),
    **{f"event_time_{name}": ({"event_time": text}, "bad_timestamp") for name, text in BAD_TIMES.items()},
}

# Rows that look odd but are valid: they must all be accepted (no over-eager rule).
ACCEPTED_NOTES = [
    {"created_at": "2026-11-20T10:00:00+14:00"}, {"created_at": "2026-11-20T10:00:00-14:00"},
    {"created_at": "2026-11-20 10:00:00z"}, {"created_at": "2026-11-20T10:00:00.123456789+0530"},
    {"title": "t" * MAX_TITLE_CHARS}, {"hashtags": [f"h{i}" for i in range(MAX_HASHTAGS)]},
    {"title": "咖啡 ☕ naïve", "content": "𝔘𝔫𝔦𝔠𝔬𝔡𝔢"}, {"hashtags": None}, {"title": None},
    {"created_at": "1990-01-01T00:00:00Z"},
]


def _landing_notes(tmp_path: Path, bad: dict | None, n_bad: int, extra_good: list[dict] = ()) -> Path:
    rows = [good_note(i) for i in range(GOOD)]
    for j, change in enumerate(extra_good):
        rows.append({**good_note(GOOD + j), **change})
    for j in range(n_bad):
        rows.append({**good_note(500 + j), **(bad or {})})
    landing = tmp_path / "landing"
    write_table(pa.Table.from_pylist(rows, schema=NOTES_LANDING.arrow_schema),
                landing / "notes" / "part-0.parquet", NOTES_LANDING)
    return landing


def _footer(paths) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in paths)


def _reasons(path: Path) -> list[str]:
    return [r.split(":", 1)[0] for r in pq.read_table(path).column("reason").to_pylist()]


@pytest.mark.parametrize("name", sorted(NOTE_CLASSES))
def test_note_class_is_quarantined_and_reconciles_with_the_footers(tmp_path, name):
    change, reason = NOTE_CLASSES[name]
    landing = _landing_notes(tmp_path, change, BAD)
    out = tmp_path / "out"
    ingest.ingest_notes(landing, out)
    assert _footer([landing / "notes" / "part-0.parquet"]) == GOOD + BAD
    assert _footer([out / "notes" / "notes.parquet"]) == GOOD
    q = out / "quarantine" / "notes" / "part-00000.parquet"
    assert _footer([q]) == BAD and _reasons(q) == [reason] * BAD
    assert all(len(raw) < 5_000 for raw in pq.read_table(q).column("raw").to_pylist())   # raw capped


def test_odd_but_valid_notes_are_all_accepted(tmp_path):
    landing = _landing_notes(tmp_path, None, 0, ACCEPTED_NOTES)
    out = tmp_path / "out"
    ingest.ingest_notes(landing, out)
    assert _footer([out / "notes" / "notes.parquet"]) == GOOD + len(ACCEPTED_NOTES)
    assert _footer([out / "quarantine" / "notes" / "part-00000.parquet"]) == 0


@pytest.fixture(scope="module")
def notes_root(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("notes")
    out = tmp / "out"
    ingest.ingest_notes(_landing_notes(tmp, None, 0), out)
    return out / "notes" / "notes.parquet"


@pytest.mark.parametrize("name", sorted(EVENT_CLASSES))
def test_event_class_is_quarantined_and_reconciles_with_the_footers(tmp_path, notes_root, name):
    change, reason = EVENT_CLASSES[name]
    rows = [good_event(i) for i in range(GOOD)] + [{**good_event(100 + j), **change} for j in range(BAD)]
    landing = tmp_path / "landing"
    write_table(pa.Table.from_pylist(rows, schema=EVENTS_LANDING.arrow_schema),
                landing / "events" / "dt=2026-11-24" / "part-0.parquet", EVENTS_LANDING)
    out = tmp_path / "out"
    ingest.ingest_events(landing, out, notes_root)
    assert _footer((out / "events").glob("dt=*/*.parquet")) == GOOD
    q = out / "quarantine" / "events" / "dt=2026-11-24" / "part-00000.parquet"
    assert _footer([q]) == BAD and _reasons(q) == [reason] * BAD


# ---------------------------------------------------------------- file-level classes: refused, file named


def _notes_file(tmp_path, data: bytes) -> Path:
    landing = tmp_path / "landing"
    (landing / "notes").mkdir(parents=True)
    (landing / "notes" / "part-0.parquet").write_bytes(data)
    return landing


def _valid_parquet_bytes(tmp_path, rows=None) -> bytes:
    path = tmp_path / "src.parquet"
    table = pa.Table.from_pylist(rows if rows is not None else [good_note(i) for i in range(GOOD)],
                                 schema=NOTES_LANDING.arrow_schema)
    pq.write_table(table, path)
    return path.read_bytes()


def _non_utf8_parquet(tmp_path) -> bytes:
    """A string column holding bytes that are not UTF-8 (written as binary, read back as string)."""
    rows = [good_note(i) for i in range(GOOD)]
    table = pa.Table.from_pylist(rows, schema=NOTES_LANDING.arrow_schema)
    raw = pa.array([b"caf\xe9 \xff"] * GOOD, pa.binary())        # Latin-1 bytes, not UTF-8
    bad_title = pa.Array.from_buffers(pa.string(), GOOD, raw.buffers())   # same layout, no check
    table = table.set_column(table.schema.get_field_index("title"), "title", bad_title)
    path = tmp_path / "src.parquet"
    pq.write_table(table, path)
    return path.read_bytes()


PARQUET_FILES = {
    "truncated_parquet": lambda tmp: _valid_parquet_bytes(tmp)[:-40],
    "truncated_to_header": lambda tmp: _valid_parquet_bytes(tmp)[:4],
    "zero_byte_parquet": lambda tmp: b"",
    "not_parquet_text": lambda tmp: b"note_id,title\n1,a\n",
    "parquet_footer_garbled": lambda tmp: (lambda b: b[:-12] + b"\x00" * 8 + b[-4:])(_valid_parquet_bytes(tmp)),
    "non_utf8_strings": _non_utf8_parquet,
}


@pytest.mark.parametrize("name", sorted(PARQUET_FILES))
def test_unreadable_landing_file_is_bad_input_naming_the_file(tmp_path, name):
    landing = _notes_file(tmp_path, PARQUET_FILES[name](tmp_path))
    with pytest.raises(ContractError, match=r"part-0\.parquet") as err:
        ingest.ingest_notes(landing, tmp_path / "out")
    assert not (tmp_path / "out" / "notes").exists(), err.value
    code = ingest.main(["notes", "--landing", str(landing), "--out", str(tmp_path / "out")])
    assert code == EXIT_BAD_INPUT


def test_zero_row_file_is_accepted_with_zero_rows(tmp_path):
    landing = _notes_file(tmp_path, _valid_parquet_bytes(tmp_path, rows=[]))
    stats = ingest.ingest_notes(landing, tmp_path / "out")
    assert stats["rows_in"] == 0 == _footer([tmp_path / "out" / "notes" / "notes.parquet"])


def test_wrong_schema_is_bad_input_naming_file_and_field(tmp_path):
    table = pa.table({"note_id": ["a"], "title": [1]})
    landing = tmp_path / "landing"
    (landing / "notes").mkdir(parents=True)
    pq.write_table(table, landing / "notes" / "part-0.parquet")
    with pytest.raises(ContractError, match=r"part-0\.parquet.*(title|content)"):
        ingest.ingest_notes(landing, tmp_path / "out")


# ---------------------------------------------------------------- Stack Exchange XML

POSTS_OK = ('<?xml version="1.0" encoding="utf-8"?>\n<posts>\n'
            '  <row Id="1" PostTypeId="1" CreationDate="2014-01-21T20:34:28.740" Score="1" '
            'Body="&lt;p&gt;How?&lt;/p&gt;" OwnerUserId="5" Title="Beans" Tags="&lt;coffee&gt;" />\n</posts>\n')
BOMB = ('<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
        '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
        '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>\n'
        '<posts><row Id="1" PostTypeId="1" Body="&lol3;" Title="x" CreationDate="2014-01-21T20:34:28" /></posts>\n')
EXTERNAL = ('<?xml version="1.0"?>\n<!DOCTYPE posts [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
            '<posts><row Id="1" PostTypeId="1" Body="&xxe;" Title="x" CreationDate="2014-01-21T20:34:28" /></posts>\n')
XML_FILES = {
    "truncated_xml": POSTS_OK.encode()[:-20],
    "invalid_utf8_xml": POSTS_OK.replace("Beans", "Be\udcffans").encode("utf-8", "surrogateescape"),
    "empty_xml_file": b"",
    "xml_bomb": BOMB.encode(),
    "external_entity": EXTERNAL.encode(),
    "parameter_entity": (b'<?xml version="1.0"?>\n<!DOCTYPE posts [<!ENTITY % p SYSTEM "http://example.com/x">%p;]>'
                         b'\n<posts></posts>\n'),
    "not_xml": b"Id,Title\n1,Beans\n",
}


@pytest.mark.parametrize("name", sorted(XML_FILES))
def test_bad_stack_exchange_xml_is_bad_input_naming_the_file(tmp_path, name):
    site = tmp_path / "data" / "coffee.stackexchange.com"
    site.mkdir(parents=True)
    (site / "Posts.xml").write_bytes(XML_FILES[name])
    for other in ("Comments", "Votes", "PostLinks"):
        (site / f"{other}.xml").write_text(f'<?xml version="1.0" encoding="utf-8"?>\n<{other.lower()}>'
                                           f'</{other.lower()}>\n')
    with pytest.raises(BadInput, match=r"Posts\.xml"):
        stackexchange.convert(tmp_path / "data", tmp_path / "out")
    assert not (tmp_path / "out" / "notes").exists()
    code = stackexchange.main(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "out2")])
    assert code == EXIT_BAD_INPUT


def test_a_doctype_naming_a_dtd_is_read_without_fetching_it(tmp_path):
    """Some real dumps start with <!DOCTYPE posts SYSTEM "posts.dtd">: allowed, never fetched."""
    site = tmp_path / "data" / "coffee.stackexchange.com"
    site.mkdir(parents=True)
    (site / "Posts.xml").write_text(POSTS_OK.replace("<posts>", '<!DOCTYPE posts SYSTEM "http://127.0.0.1:9/x.dtd">'
                                                     "\n<posts>", 1))
    for other in ("Comments", "Votes", "PostLinks"):
        (site / f"{other}.xml").write_text(f"<{other.lower()}></{other.lower()}>\n")
    stats = stackexchange.convert(tmp_path / "data", tmp_path / "out")
    assert stats["notes"] == 1


# ---------------------------------------------------------------- MovieLens CSV

MOVIES = "movieId,title,genres\n1,Toy Story (1995),Animation|Children\n2,Heat (1995),Action\n"
TAGS = "userId,movieId,tag,timestamp\n1,1,pixar,1139045764\n"


def _ratings(rows: list[str]) -> str:
    return "userId,movieId,rating,timestamp\n" + "".join(r + "\n" for r in rows)


GOOD_RATINGS = [f"{u},1,4.0,{964982703 + u}" for u in range(1, GOOD + 1)]
ML_ROW_CLASSES = {
    "timestamp_overflows_when_scaled": ("7,1,4.0,99999999999999", "bad_timestamp"),   # 1e14 s * 1e6 wraps int64
    "timestamp_20_digits": ("7,1,4.0,99999999999999999999", "bad_timestamp"),         # beyond int64
    "timestamp_year_2999": ("7,1,4.0,32472144000", "bad_timestamp"),
    "timestamp_1970": ("7,1,4.0,1", "bad_timestamp"),
    "user_id_20_digits": ("99999999999999999999,1,4.0,964982703", "missing_id"),
    "movie_id_negative": ("7,-1,4.0,964982703", "missing_id"),
    "rating_out_of_range": ("7,1,9.0,964982703", "bad_rating"),
    "unknown_movie": ("7,999,4.0,964982703", "unknown_movie"),
}


def _ml_folder(tmp_path, ratings: str | bytes) -> Path:
    data = tmp_path / "ml"
    data.mkdir()
    (data / "movies.csv").write_text(MOVIES)
    (data / "tags.csv").write_text(TAGS)
    (data / "ratings.csv").write_bytes(ratings if isinstance(ratings, bytes) else ratings.encode())
    return data


@pytest.mark.parametrize("name", sorted(ML_ROW_CLASSES))
def test_movielens_row_class_is_quarantined(tmp_path, name):
    row, reason = ML_ROW_CLASSES[name]
    data = _ml_folder(tmp_path, _ratings(GOOD_RATINGS + [row] * BAD))
    stats = movielens.convert(data, tmp_path / "out", 0.0)
    ratings = stats["files"]["ratings.csv"]
    assert ratings["rows_in"] == GOOD + BAD == len((data / "ratings.csv").read_text().splitlines()) - 1
    assert ratings["rows_accepted"] == GOOD and ratings["rows_quarantined"] == BAD
    assert _footer((tmp_path / "out" / "events").glob("dt=*/*.parquet")) == GOOD
    q = pq.read_table(tmp_path / "out" / "quarantine" / "part-00000.parquet")
    mine = [r.split(":", 1)[0] for r, s in zip(q.column("reason").to_pylist(), q.column("source").to_pylist())
            if s.endswith("ratings.csv")]
    assert mine == [reason] * BAD


ML_FILES = {
    "invalid_utf8_csv_row": _ratings(GOOD_RATINGS).encode() + b"7,1,4.0,96498\xff2703\n",
    "invalid_utf8_csv_header": b"user\xffId,movieId,rating,timestamp\n1,1,4.0,964982703\n",
    "empty_csv": b"",
    "ragged_csv_row": _ratings(GOOD_RATINGS + ["7,1"]).encode(),
}


@pytest.mark.parametrize("name", sorted(ML_FILES))
def test_bad_movielens_file_is_bad_input_naming_the_file(tmp_path, name):
    data = _ml_folder(tmp_path, ML_FILES[name])
    with pytest.raises(BadInput, match=r"ratings\.csv"):
        movielens.convert(data, tmp_path / "out", 0.0)
    assert not (tmp_path / "out" / "events").exists()


def test_at_least_80_bad_input_classes():
    classes = (len(NOTE_CLASSES) + len(EVENT_CLASSES) + len(PARQUET_FILES) + len(XML_FILES) + len(ML_ROW_CLASSES)
               + len(ML_FILES) + 2)   # + zero-row file, wrong schema
    assert classes >= 80, classes
