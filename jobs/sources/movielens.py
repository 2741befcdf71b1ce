"""MovieLens (ml-latest-small) -> NOTES, EVENTS (+ quarantine).

    python -m jobs.sources.movielens --data ../shared/data/movielens-latest-small --out <root> [--min-rating 3.5]

Mapping:
* note = movie: ``note_id = ml:<movieId>``, title = the title with year,
  hashtags = the movie's user tags (tags.csv, trimmed, lower-cased, most
  frequent first, ties alphabetical, at most 10), category = first genre
  (``(no genres listed)`` -> ``unknown``), content = a short text built from
  the genres and the top tags, created_at = the movie's first interaction
  (earliest rating or tag; MovieLens has no creation time), falling back to
  1 January of the title's year for movies nobody rated or tagged.
* event = rating: ``user_id = ml:<userId>``, ``event_type = rate``,
  ``event_time`` from unix seconds. The EVENTS contract has no value column,
  so a ``rate`` event means "this user liked the movie": only ratings
  >= ``--min-rating`` (default 3.5, i.e. 3.5/4/4.5/5 stars) become events,
  lower ratings are ignored with the counted reason ``rating_below_threshold``.
  Co-occurrence mining then pairs movies liked by the same users, the
  analogue of co-clicked notes; a disliked movie is not evidence of
  relatedness. ``--min-rating 0`` keeps every rating.

Every CSV row is accepted, ignored with a counted reason or quarantined
(``missing_id``, ``duplicate_id``, ``empty_text``, ``unknown_movie``,
``bad_rating``, ``bad_timestamp``, ``empty_tag``, ``no_created_at``).
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from jobs.config import MovieLensConfig
from jobs.quarantine import concat_quarantine, quarantine_table, raw_json, write_quarantine
from jobs.sources import write_day_partitions
from notellm import cli
from notellm.config import defaults
from notellm.contracts import NOTES, mark_success, write_table
from notellm.timestamps import plausible_window

MAX_HASHTAGS = 10
CONTENT_TAGS = 5
DEFAULT_MIN_RATING = defaults(MovieLensConfig)["min_rating"]
NO_GENRES = "(no genres listed)"
_YEAR_RE = re.compile(r"\((\d{4})\)\s*$")


def _read_csv(path: Path) -> pa.Table:
    """Every column as (nullable) text so malformed values reach validation."""
    if not path.exists():
        raise FileNotFoundError(f"MovieLens file {path} does not exist")
    try:
        header = path.open(encoding="utf-8").readline().strip().split(",")
        if header == [""]:
            raise cli.BadInput(f"{path}: empty file (no header row)")
        return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in header}, strings_can_be_null=True))
    except UnicodeDecodeError as exc:
        raise cli.BadInput(f"{path}: not UTF-8 at byte {exc.start} of the header") from None
    except pa.ArrowInvalid as exc:   # invalid UTF-8 in a row, a ragged row, ...
        raise cli.BadInput(f"{path}: unreadable as CSV: {exc}") from None


def _positive_int(col: pa.ChunkedArray) -> np.ndarray:
    """Parse integer ids; -1 where missing/unparsable/not positive or beyond int64 (at most 18
    digits: a 20-digit "id" was a crash in the cast, a huge time an overflow when scaled)."""
    text = pc.fill_null(col, "")
    ok = pc.match_substring_regex(text, r"^\s*\d{1,18}\s*$").to_numpy(zero_copy_only=False)
    vals = np.full(len(text), -1, dtype=np.int64)
    if ok.any():
        vals[ok] = pc.cast(pc.utf8_trim_whitespace(text.filter(pa.array(ok))), pa.int64()).to_numpy()
    vals[vals <= 0] = -1
    return vals


def _plausible_seconds(ts: np.ndarray) -> np.ndarray:
    lo, hi = plausible_window()
    return (ts >= 0) & (ts <= hi // 1_000_000) & (ts >= -(-lo // 1_000_000))


def _float(col: pa.ChunkedArray) -> np.ndarray:
    text = pc.fill_null(col, "")
    ok = pc.match_substring_regex(text, r"^\s*-?\d+(\.\d+)?\s*$").to_numpy(zero_copy_only=False)
    vals = np.full(len(text), np.nan)
    if ok.any():
        vals[ok] = pc.cast(pc.utf8_trim_whitespace(text.filter(pa.array(ok))), pa.float64()).to_numpy()
    return vals


class Ledger:
    """Vectorised accounting of one CSV file: a status per row."""

    def __init__(self, path: Path, table: pa.Table):
        self.path, self.table = str(path), table
        self.reason = np.full(table.num_rows, "", dtype=object)   # quarantine reason
        self.ignored = np.full(table.num_rows, "", dtype=object)  # ignore reason

    def quarantine(self, mask: np.ndarray, code: str, column: str | None = None) -> None:
        mask = mask & (self.reason == "") & (self.ignored == "")
        if column is None:
            self.reason[mask] = code
        else:
            vals = self.table.column(column).to_numpy(zero_copy_only=False)
            for i in np.flatnonzero(mask):
                self.reason[i] = f"{code}: {vals[i]!r}"

    def ignore(self, mask: np.ndarray, code: str) -> None:
        self.ignored[mask & (self.reason == "") & (self.ignored == "")] = code

    @property
    def ok(self) -> np.ndarray:
        return (self.reason == "") & (self.ignored == "")

    def quarantine_table(self) -> pa.Table:
        bad = np.flatnonzero(self.reason != "")
        raws = self.table.take(pa.array(bad, pa.int64())).to_pylist() if len(bad) else []
        return quarantine_table(self.path, [int(i) + 1 for i in bad], [self.reason[i] for i in bad],
                                [raw_json(r) for r in raws])

    def stats(self) -> dict:
        q = Counter(r.split(":", 1)[0] for r in self.reason if r)
        ig = Counter(r for r in self.ignored if r)
        out = {"rows_in": self.table.num_rows, "rows_accepted": int(self.ok.sum()),
               "rows_ignored": sum(ig.values()), "rows_quarantined": sum(q.values()),
               "ignored": dict(sorted(ig.items())), "quarantined": dict(sorted(q.items()))}
        assert out["rows_in"] == out["rows_accepted"] + out["rows_ignored"] + out["rows_quarantined"]
        return out


def movie_content(title: str, genres: list[str], tags: list[str]) -> str:
    """Short descriptive text for a movie: '<title>. Genres: a, b. Tagged: x, y.'"""
    text = f"{title}. Genres: {', '.join(genres) if genres else 'unknown'}."
    if tags:
        text += f" Tagged: {', '.join(tags[:CONTENT_TAGS])}."
    return text


class Ratings(NamedTuple):
    """ratings.csv validated: its ledger and the parsed id/time columns."""
    ledger: Ledger
    user: np.ndarray
    movie: np.ndarray
    ts: np.ndarray


class Tags(NamedTuple):
    """tags.csv validated: its ledger, the parsed columns and the normalised tag text."""
    ledger: Ledger
    movie: np.ndarray
    ts: np.ndarray
    text: pa.ChunkedArray


def check_movies(path: Path, movies: pa.Table) -> tuple[Ledger, np.ndarray, list[str]]:
    """movies.csv -> (ledger, movie ids, trimmed titles): quarantine missing and
    repeated ids (the first row of an id wins) and empty titles."""
    mled = Ledger(path, movies)
    movie_id = _positive_int(movies.column("movieId"))
    mled.quarantine(movie_id < 0, "missing_id", "movieId")
    first = np.zeros(len(movie_id), dtype=bool)
    _, first_idx = np.unique(np.where(movie_id < 0, -np.arange(len(movie_id)) - 2, movie_id), return_index=True)
    first[first_idx] = True
    mled.quarantine(~first, "duplicate_id", "movieId")
    titles = pc.utf8_trim_whitespace(pc.fill_null(movies.column("title"), "")).to_pylist()
    mled.quarantine(np.array([not t for t in titles], dtype=bool), "empty_text")
    return mled, movie_id, titles


def check_ratings(path: Path, ratings: pa.Table, known: pa.Array, min_rating: float) -> Ratings:
    """ratings.csv: quarantine bad ids, unknown movies, bad ratings and times;
    ignore ratings below ``min_rating``."""
    rled = Ledger(path, ratings)
    r_user = _positive_int(ratings.column("userId"))
    r_movie = _positive_int(ratings.column("movieId"))
    r_value = _float(ratings.column("rating"))
    r_ts = _positive_int(ratings.column("timestamp"))
    rled.quarantine(r_user < 0, "missing_id", "userId")
    rled.quarantine(r_movie < 0, "missing_id", "movieId")
    in_catalogue = pc.is_in(pa.array(r_movie), value_set=known).to_numpy(zero_copy_only=False)
    rled.quarantine(~in_catalogue, "unknown_movie", "movieId")
    rled.quarantine(~((r_value >= 0.5) & (r_value <= 5.0)), "bad_rating", "rating")
    # Seconds within the shared plausible window (notellm.timestamps); checked before the
    # scaling to microseconds, which could otherwise wrap around silently.
    r_ts[~_plausible_seconds(r_ts)] = -1
    rled.quarantine(r_ts < 0, "bad_timestamp", "timestamp")
    rled.ignore(r_value < min_rating, "rating_below_threshold")
    return Ratings(rled, r_user, r_movie, r_ts)


def check_tags(path: Path, tags: pa.Table, known: pa.Array) -> Tags:
    """tags.csv: trim and lower-case the tags; quarantine bad ids, unknown movies, empty tags."""
    tled = Ledger(path, tags)
    t_movie = _positive_int(tags.column("movieId"))
    t_ts = _positive_int(tags.column("timestamp"))
    t_ts[~_plausible_seconds(t_ts)] = -1
    tag_text = pc.utf8_lower(pc.utf8_trim_whitespace(pc.fill_null(tags.column("tag"), "")))
    tled.quarantine(t_movie < 0, "missing_id", "movieId")
    tled.quarantine(~pc.is_in(pa.array(t_movie), value_set=known).to_numpy(zero_copy_only=False),
                    "unknown_movie", "movieId")
    tled.quarantine(pc.equal(tag_text, "").to_numpy(zero_copy_only=False), "empty_tag")
    return Tags(tled, t_movie, t_ts, tag_text)


def top_tags(tags: Tags) -> dict[int, list[str]]:
    """movie id -> its accepted tags, most frequent first, ties alphabetical, at most MAX_HASHTAGS."""
    tag_counts = (pa.table({"movie": pa.array(tags.movie), "tag": tags.text}).filter(pa.array(tags.ledger.ok))
                  .group_by(["movie", "tag"]).aggregate([("tag", "count")])
                  .sort_by([("movie", "ascending"), ("tag_count", "descending"), ("tag", "ascending")]))
    top: dict[int, list[str]] = {}
    for m, t in zip(tag_counts.column("movie").to_pylist(), tag_counts.column("tag").to_pylist()):
        lst = top.setdefault(m, [])
        if len(lst) < MAX_HASHTAGS:
            lst.append(t)
    return top


def first_interaction(ratings: Ratings, tags: Tags) -> dict[int, int]:
    """movie id -> unix seconds of its first interaction (any valid rating,
    liked or not, or tag)."""
    r_valid = (ratings.ledger.reason == "")
    t_ok = tags.ledger.ok & (tags.ts > 0)   # a tag without a plausible time says nothing about when
    stamps = pa.table({"movie": pa.array(np.concatenate([ratings.movie[r_valid], tags.movie[t_ok]])),
                       "ts": pa.array(np.concatenate([ratings.ts[r_valid], tags.ts[t_ok]]))})
    first_seen = stamps.group_by("movie").aggregate([("ts", "min")])
    return dict(zip(first_seen.column("movie").to_pylist(), first_seen.column("ts_min").to_pylist()))


def build_notes(movies: pa.Table, mled: Ledger, movie_id: np.ndarray, titles: list[str],
                tags_of: dict[int, list[str]], first_ts: dict[int, int]) -> pa.Table:
    """One NOTES row per accepted movie. A movie with neither an interaction nor
    a year in its title is quarantined here (``no_created_at``, on ``mled``)."""
    genres_col = pc.fill_null(movies.column("genres"), "").to_pylist()
    note_rows = {k: [] for k in NOTES.columns}
    for i in np.flatnonzero(mled.ok):
        mid = int(movie_id[i])
        genres = [g for g in genres_col[i].split("|") if g and g != NO_GENRES]
        if mid in first_ts:
            created = dt.datetime.fromtimestamp(first_ts[mid], dt.timezone.utc)
        else:
            year = _YEAR_RE.search(titles[i])
            if not year:
                mled.reason[i] = "no_created_at"
                continue
            created = dt.datetime(int(year.group(1)), 1, 1, tzinfo=dt.timezone.utc)
        tags_i = tags_of.get(mid, [])
        note_rows["note_id"].append(f"ml:{mid}")
        note_rows["title"].append(titles[i])
        note_rows["content"].append(movie_content(titles[i], genres, tags_i))
        note_rows["hashtags"].append(tags_i)
        note_rows["category"].append(genres[0] if genres else "unknown")
        note_rows["created_at"].append(created)
    return pa.table({k: pa.array(v, NOTES.schema.field(k).type) for k, v in note_rows.items()}, schema=NOTES.schema)


def build_events(ratings: Ratings) -> pa.Table:
    """Accepted ratings -> ``rate`` events, sorted by time, user, note."""
    keep = ratings.ledger.ok
    return pa.table({
        "user_id": pc.binary_join_element_wise("ml:", pa.array(ratings.user[keep]).cast(pa.string()), ""),
        "note_id": pc.binary_join_element_wise("ml:", pa.array(ratings.movie[keep]).cast(pa.string()), ""),
        "event_type": pa.array(np.full(int(keep.sum()), "rate", dtype=object), pa.string()),
        "event_time": pa.array(ratings.ts[keep] * 1_000_000, pa.timestamp("us", tz="UTC")),
    }).sort_by([("event_time", "ascending"), ("user_id", "ascending"), ("note_id", "ascending")])


def write_outputs(out: Path, notes: pa.Table, events: pa.Table, quarantine: pa.Table) -> dict[str, int]:
    """Replace notes/, events/ and quarantine/ under ``out``; the rows per event day."""
    for sub in ("notes", "events", "quarantine"):       # the run owns its output root
        if (out / sub).exists():
            shutil.rmtree(out / sub)
    write_table(notes, out / "notes" / "notes.parquet", NOTES)
    rows_per_day = write_day_partitions(events, out / "events")
    write_quarantine(quarantine, out / "quarantine" / "part-00000.parquet")
    return rows_per_day


def convert(data: str | Path, out: str | Path, min_rating: float = DEFAULT_MIN_RATING) -> dict:
    """ml-latest-small folder -> NOTES, EVENTS and quarantine under ``out``; the run's stats."""
    data, out = Path(data), Path(out)
    if not data.is_dir():
        raise FileNotFoundError(f"MovieLens folder {data} does not exist")
    t0 = time.perf_counter()
    movies_path, ratings_path, tags_path = data / "movies.csv", data / "ratings.csv", data / "tags.csv"
    movies, ratings_t, tags_t = _read_csv(movies_path), _read_csv(ratings_path), _read_csv(tags_path)

    mled, movie_id, titles = check_movies(movies_path, movies)
    known = pa.array(sorted(set(movie_id[mled.ok].tolist())), pa.int64())
    ratings = check_ratings(ratings_path, ratings_t, known, min_rating)
    tags = check_tags(tags_path, tags_t, known)
    notes = build_notes(movies, mled, movie_id, titles, top_tags(tags), first_interaction(ratings, tags))
    events = build_events(ratings)
    quarantine = concat_quarantine([mled.quarantine_table(), ratings.ledger.quarantine_table(),
                                    tags.ledger.quarantine_table()])
    rows_per_day = write_outputs(out, notes, events, quarantine)

    files = {"movies.csv": mled.stats(), "ratings.csv": ratings.ledger.stats(), "tags.csv": tags.ledger.stats()}
    stats = {"source": "movielens", "data": str(data), "min_rating": min_rating, "files": files,
             **{k: sum(f[k] for f in files.values())
                for k in ("rows_in", "rows_accepted", "rows_ignored", "rows_quarantined")},
             "notes": notes.num_rows, "events": events.num_rows, "event_days": len(rows_per_day),
             "notes_with_hashtags": sum(1 for h in notes.column("hashtags").to_pylist() if h),
             "seconds": round(time.perf_counter() - t0, 2)}
    mark_success(out / "notes", {"contract": NOTES.name, "rows": notes.num_rows})
    mark_success(out / "quarantine", {"rows": quarantine.num_rows})
    mark_success(out, stats)
    return stats


def command(cfg: MovieLensConfig, timer: cli.Timer) -> dict:
    try:
        with timer.phase("convert"):
            return convert(cfg.data, cfg.out, cfg.min_rating)
    except FileNotFoundError as exc:
        raise cli.BadInput(str(exc)) from exc


def main(argv: list[str] | None = None) -> int:
    return cli.main(command, MovieLensConfig, argv, prog="python -m jobs.sources.movielens")


if __name__ == "__main__":
    sys.exit(main())
