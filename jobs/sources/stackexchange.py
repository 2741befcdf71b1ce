"""Stack Exchange data dump -> NOTES, EVENTS, RELATED_LINKS (+ quarantine).

    python -m jobs.sources.stackexchange --data ../shared/data/stackexchange --sites all --out <root>

Mapping (per site folder; file names are matched case-insensitively, line
endings do not matter to the XML parser, rows are streamed with iterparse):

* site name: the folder name with ``.stackexchange.com`` removed; a leading
  ``meta.`` (old meta sites such as ``meta.mathoverflow.net``) becomes a
  ``.meta`` suffix without the TLD. ``beer.stackexchange.com`` -> ``beer``,
  ``bicycles.meta.stackexchange.com`` -> ``bicycles.meta``,
  ``economics.stackexchange.com-2012beta`` -> ``economics-2012beta``,
  ``meta.mathoverflow.net`` -> ``mathoverflow.meta``,
  ``meta.answers.onstartups.com`` -> ``answers.onstartups.meta``.
  The site name is the category of its notes and the prefix of its ids.
* note = question (Posts ``PostTypeId=1``): ``note_id = <site>:<Id>``,
  title = Title, content = Body with HTML stripped, hashtags = Tags
  (``<a><b>`` or ``|a|b|``), category = site, created_at = CreationDate (UTC).
* events (``user_id = <site>:<UserId>``, only ids > 0):
  ``ask`` (question owner at creation), ``answer`` (``PostTypeId=2`` ->
  its ParentId question), ``comment`` (Comments on a question or on one of
  its answers -> the question), ``favourite`` (Votes ``VoteTypeId=5`` with a
  UserId; the dumps only keep the day, so the time is midnight UTC).
* related links: PostLinks between two accepted questions
  (``LinkTypeId`` 1 -> ``linked``, 3 -> ``duplicate``).

Every XML row ends in exactly one bucket per file: accepted, ignored on
purpose with a counted reason (``not_a_question``, ``not_a_favourite``,
``not_on_a_question``, ``link_not_between_known_questions``, ...), or
quarantined with a reason (``missing_id``, ``duplicate_id``,
``bad_timestamp``, ``empty_text``, ``unknown_parent``, ``unknown_post``,
``anonymous_user``). ``_stats.json`` holds the counts per site and file.
"""

from __future__ import annotations

import datetime as dt
import html
import re
import shutil
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from jobs.config import StackExchangeConfig
from jobs.quarantine import concat_quarantine, quarantine_table, write_quarantine
from jobs.sources import write_day_partitions
from notellm import cli
from notellm.contracts import EVENTS, NOTES, RELATED_LINKS, mark_success, write_table

LINK_TYPES = {"1": "linked", "3": "duplicate"}
RAW_MAX_CHARS = 2000            # quarantine keeps the raw row, long bodies truncated

_TAG_RE = re.compile(r"<[^>]*>")
_BLOCK_RE = re.compile(r"<(script|style)\b.*?</\1\s*>", re.S | re.I)
_WS_RE = re.compile(r"\s+")
_ANGLE_TAGS_RE = re.compile(r"<([^<>]+)>")


def site_name(folder: str) -> str:
    """Readable, distinct site name of a dump folder (see module docstring)."""
    name = folder.replace(".stackexchange.com", "")
    if name.startswith("meta."):
        rest = re.sub(r"\.(com|net|org)(?=$|-)", "", name[len("meta."):])
        name = f"{rest}.meta"
    return name


def strip_html(text: str | None) -> str:
    """HTML -> plain text: drop script/style blocks and tags, unescape
    entities, collapse whitespace."""
    if not text:
        return ""
    text = _BLOCK_RE.sub(" ", text)
    text = _TAG_RE.sub(" ", text)
    return _WS_RE.sub(" ", html.unescape(text)).strip()


def parse_tags(tags: str | None) -> list[str]:
    """'<a><b>' (old dumps) or '|a|b|' (new dumps) -> ['a', 'b']."""
    if not tags:
        return []
    if tags.startswith("|"):
        return [t for t in tags.split("|") if t]
    return _ANGLE_TAGS_RE.findall(tags)


def parse_time(text: str | None) -> dt.datetime | None:
    """Dump times are UTC without offset: '2014-01-21T20:34:28.740' or, for
    votes, a day '2010-12-14'. None when missing or unparsable."""
    if not text:
        return None
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return t.replace(tzinfo=dt.timezone.utc) if t.tzinfo is None else t.astimezone(dt.timezone.utc)


def positive_id(text: str | None) -> int | None:
    try:
        v = int(text) if text is not None else None
    except ValueError:
        return None
    return v if v is not None and v > 0 else None


def iter_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """Stream ``<row .../>`` attributes with a 1-based row number, clearing
    parsed elements so memory stays flat."""
    n = 0
    context = ET.iterparse(path, events=("start", "end"))
    _, root = next(context)
    for event, elem in context:
        if event == "end" and elem.tag == "row":
            n += 1
            yield n, dict(elem.attrib)
            elem.clear()
            root.clear()


def find_files(site_dir: Path) -> dict[str, Path]:
    """Lower-cased file name -> path (dumps differ in case: posts.xml / Posts.xml)."""
    return {p.name.lower(): p for p in sorted(site_dir.iterdir()) if p.is_file()}


class FileLedger:
    """Accounting for one input file: every row is accepted, ignored or quarantined."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.rows_in = 0
        self.accepted = 0
        self.ignored: Counter = Counter()
        self.q_rows: list[int] = []
        self.q_reasons: list[str] = []
        self.q_raw: list[dict] = []

    def accept(self) -> None:
        self.accepted += 1

    def ignore(self, reason: str) -> None:
        self.ignored[reason] += 1

    def quarantine(self, row_number: int, reason: str, row: dict) -> None:
        raw = {k: (v[:RAW_MAX_CHARS] + "..." if len(v) > RAW_MAX_CHARS else v) for k, v in row.items()}
        self.q_rows.append(row_number)
        self.q_reasons.append(reason)
        self.q_raw.append(raw)

    def table(self) -> pa.Table:
        return quarantine_table(self.path, self.q_rows, self.q_reasons, self.q_raw)

    def stats(self) -> dict:
        q = Counter(r.split(":", 1)[0] for r in self.q_reasons)
        out = {"rows_in": self.rows_in, "rows_accepted": self.accepted,
               "rows_ignored": sum(self.ignored.values()), "rows_quarantined": len(self.q_reasons),
               "ignored": dict(sorted(self.ignored.items())), "quarantined": dict(sorted(q.items()))}
        if out["rows_in"] != out["rows_accepted"] + out["rows_ignored"] + out["rows_quarantined"]:
            raise AssertionError(f"{self.path}: row accounting does not reconcile: {out}")
        return out


def convert_site(site_dir: Path) -> dict:
    """One site folder -> python columns for notes/events/links, quarantine tables and stats."""
    site = site_name(site_dir.name)
    files = find_files(site_dir)
    notes = {k: [] for k in NOTES.columns}
    events = {k: [] for k in EVENTS.columns}
    links = {k: [] for k in RELATED_LINKS.columns}
    ledgers: list[FileLedger] = []
    extra = Counter()
    questions: dict[int, str] = {}       # question Id -> note_id
    answer_parent: dict[int, str] = {}   # answer Id -> question note_id
    other_posts: set[int] = set()        # wikis, excerpts, ... (and answers for votes)

    def add_event(user: int, note_id: str, kind: str, when: dt.datetime) -> None:
        events["user_id"].append(f"{site}:{user}")
        events["note_id"].append(note_id)
        events["event_type"].append(kind)
        events["event_time"].append(when)

    posts_path = files.get("posts.xml")
    if posts_path is not None:
        led = FileLedger(posts_path)
        ledgers.append(led)
        seen: set[int] = set()
        answers = []
        for n, row in iter_rows(posts_path):
            led.rows_in += 1
            pid = positive_id(row.get("Id"))
            ptype = row.get("PostTypeId")
            if pid is None:
                led.quarantine(n, f"missing_id: {row.get('Id')!r}", row)
                continue
            if pid in seen:
                led.quarantine(n, f"duplicate_id: {pid}", row)
                continue
            seen.add(pid)
            if ptype not in ("1", "2"):
                other_posts.add(pid)
                led.ignore("not_a_question")
                continue
            created = parse_time(row.get("CreationDate"))
            if created is None:
                led.quarantine(n, f"bad_timestamp: {row.get('CreationDate')!r}", row)
                continue
            if ptype == "2":
                answers.append((n, pid, row, created))
                continue
            title, body = (row.get("Title") or "").strip(), strip_html(row.get("Body"))
            if not title and not body:
                led.quarantine(n, "empty_text", row)
                continue
            note_id = f"{site}:{pid}"
            questions[pid] = note_id
            notes["note_id"].append(note_id)
            notes["title"].append(_WS_RE.sub(" ", html.unescape(title)))
            notes["content"].append(body)
            notes["hashtags"].append(parse_tags(row.get("Tags")))
            notes["category"].append(site)
            notes["created_at"].append(created)
            led.accept()
            owner = positive_id(row.get("OwnerUserId"))
            if owner is not None:
                add_event(owner, note_id, "ask", created)
            else:
                extra["ask_skipped_anonymous_owner"] += 1
        for n, pid, row, created in answers:     # second pass: parents may come later in the file
            parent = positive_id(row.get("ParentId"))
            if parent not in questions:
                led.quarantine(n, f"unknown_parent: {row.get('ParentId')}", row)
                continue
            answer_parent[pid] = questions[parent]
            owner = positive_id(row.get("OwnerUserId"))
            if owner is None:
                led.quarantine(n, f"anonymous_user: {row.get('OwnerUserId')!r}", row)
                continue
            add_event(owner, questions[parent], "answer", created)
            led.accept()

    comments_path = files.get("comments.xml")
    if comments_path is not None:
        led = FileLedger(comments_path)
        ledgers.append(led)
        for n, row in iter_rows(comments_path):
            led.rows_in += 1
            post = positive_id(row.get("PostId"))
            note_id = questions.get(post) or answer_parent.get(post)
            if note_id is None:
                if post in other_posts:
                    led.ignore("not_on_a_question")
                else:
                    led.quarantine(n, f"unknown_post: {row.get('PostId')}", row)
                continue
            user = positive_id(row.get("UserId"))
            if user is None:
                led.quarantine(n, f"anonymous_user: {row.get('UserId')!r}", row)
                continue
            created = parse_time(row.get("CreationDate"))
            if created is None:
                led.quarantine(n, f"bad_timestamp: {row.get('CreationDate')!r}", row)
                continue
            add_event(user, note_id, "comment", created)
            led.accept()

    votes_path = files.get("votes.xml")
    if votes_path is not None:
        led = FileLedger(votes_path)
        ledgers.append(led)
        for n, row in iter_rows(votes_path):
            led.rows_in += 1
            if row.get("VoteTypeId") != "5":
                led.ignore("not_a_favourite")
                continue
            post = positive_id(row.get("PostId"))
            note_id = questions.get(post)
            if note_id is None:
                if post in other_posts or post in answer_parent:
                    led.ignore("not_on_a_question")
                else:
                    led.quarantine(n, f"unknown_post: {row.get('PostId')}", row)
                continue
            user = positive_id(row.get("UserId"))
            if user is None:
                led.quarantine(n, f"anonymous_user: {row.get('UserId')!r}", row)
                continue
            created = parse_time(row.get("CreationDate"))
            if created is None:
                led.quarantine(n, f"bad_timestamp: {row.get('CreationDate')!r}", row)
                continue
            add_event(user, note_id, "favourite", created.replace(hour=0, minute=0, second=0, microsecond=0))
            led.accept()

    links_path = files.get("postlinks.xml")
    if links_path is not None:
        led = FileLedger(links_path)
        ledgers.append(led)
        for n, row in iter_rows(links_path):
            led.rows_in += 1
            kind = LINK_TYPES.get(row.get("LinkTypeId") or "")
            if kind is None:
                led.quarantine(n, f"unknown_link_type: {row.get('LinkTypeId')!r}", row)
                continue
            src = questions.get(positive_id(row.get("PostId")))
            dst = questions.get(positive_id(row.get("RelatedPostId")))
            if src is None or dst is None:
                # links to deleted posts / answers / other sites: expected, not an error
                led.ignore("link_not_between_known_questions")
                continue
            links["src_note_id"].append(src)
            links["dst_note_id"].append(dst)
            links["link_type"].append(kind)
            links["created_at"].append(parse_time(row.get("CreationDate")))
            led.accept()

    used = {"posts.xml", "comments.xml", "votes.xml", "postlinks.xml"}
    if posts_path is None:
        extra["missing_posts_file"] = 1
    stats = {
        "site": site, "folder": site_dir.name,
        "files": {Path(led.path).name: led.stats() for led in ledgers},
        "files_not_used": sorted(p.name for k, p in files.items() if k not in used),
        "notes": len(notes["note_id"]), "events": len(events["note_id"]), "related_links": len(links["src_note_id"]),
        "events_by_type": dict(sorted(Counter(events["event_type"]).items())),
        **({"notes_without_ask_event": extra["ask_skipped_anonymous_owner"]} if extra else {}),
    }
    return {"notes": notes, "events": events, "links": links,
            "quarantine": [led.table() for led in ledgers], "stats": stats}


def _table(columns: dict, contract) -> pa.Table:
    return pa.table({k: pa.array(v, contract.schema.field(k).type) for k, v in columns.items()},
                    schema=contract.schema)


def convert(data: str | Path, out: str | Path, sites: list[str] | None = None) -> dict:
    data, out = Path(data), Path(out)
    if not data.is_dir():
        raise FileNotFoundError(f"Stack Exchange data folder {data} does not exist")
    folders = sorted(p for p in data.iterdir() if p.is_dir())
    if sites and sites != ["all"]:
        wanted = set(sites)
        folders = [p for p in folders if p.name in wanted or site_name(p.name) in wanted]
        found = {p.name for p in folders} | {site_name(p.name) for p in folders}
        if wanted - found:
            raise FileNotFoundError(f"no site folder(s) {sorted(wanted - found)} under {data}")
    if not folders:
        raise FileNotFoundError(f"no site folders under {data}")
    t0 = time.perf_counter()
    results = [convert_site(p) for p in folders]
    notes = pa.concat_tables([_table(r["notes"], NOTES) for r in results])
    events = pa.concat_tables([_table(r["events"], EVENTS) for r in results])
    events = events.sort_by([("event_time", "ascending"), ("user_id", "ascending"),
                             ("note_id", "ascending"), ("event_type", "ascending")])
    links = pa.concat_tables([_table(r["links"], RELATED_LINKS) for r in results])
    quarantine = concat_quarantine(q for r in results for q in r["quarantine"])

    for sub in ("notes", "events", "related_links", "quarantine"):     # the run owns its output root
        if (out / sub).exists():
            shutil.rmtree(out / sub)
    write_table(notes, out / "notes" / "notes.parquet", NOTES)
    rows_per_day = write_day_partitions(events, out / "events")
    write_table(links, out / "related_links" / "related_links.parquet", RELATED_LINKS)
    write_quarantine(quarantine, out / "quarantine" / "part-00000.parquet")

    site_stats = {r["stats"]["site"]: r["stats"] for r in results}
    totals = Counter()
    for s in site_stats.values():
        for f in s["files"].values():
            for k in ("rows_in", "rows_accepted", "rows_ignored", "rows_quarantined"):
                totals[k] += f[k]
    stats = {"source": "stackexchange", "data": str(data), "sites": site_stats, **totals,
             "notes": notes.num_rows, "events": events.num_rows, "related_links": links.num_rows,
             "event_days": len(rows_per_day), "seconds": round(time.perf_counter() - t0, 2)}
    mark_success(out / "notes", {"contract": NOTES.name, "rows": notes.num_rows})
    mark_success(out / "related_links", {"contract": RELATED_LINKS.name, "rows": links.num_rows})
    mark_success(out / "quarantine", {"rows": quarantine.num_rows})
    mark_success(out, stats)
    return stats


def command(cfg: StackExchangeConfig, timer: cli.Timer) -> dict:
    try:
        with timer.phase("convert"):
            return convert(cfg.data, cfg.out, cfg.site_list())
    except FileNotFoundError as exc:
        raise cli.BadInput(str(exc)) from exc


def main(argv: list[str] | None = None) -> int:
    return cli.main(command, StackExchangeConfig, argv, prog="python -m jobs.sources.stackexchange")


if __name__ == "__main__":
    sys.exit(main())
