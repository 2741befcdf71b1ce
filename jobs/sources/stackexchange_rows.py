"""Stack Exchange dump rows -> note, event and link columns of one site.

The field parsers (HTML, tags, times, ids), the streaming XML reader, the
per-file ledger that puts every row in exactly one bucket, and
:class:`SiteRows`, which reads a site's Posts, Comments, Votes and PostLinks
files in that order (each later file resolves ids against the questions and
answers the earlier ones accepted). The mapping and the reasons are described
in :mod:`jobs.sources.stackexchange`, which drives these readers per site.
"""

from __future__ import annotations

import datetime as dt
import html
import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import iterparse

from jobs.quarantine import quarantine_table
from notellm.cli import BadInput
from notellm.contracts import EVENTS, NOTES, RELATED_LINKS
from notellm.timestamps import in_window, plausible_window, to_micros

LINK_TYPES = {"1": "linked", "3": "duplicate"}
RAW_MAX_CHARS = 2000            # quarantine keeps the raw row, long bodies truncated

_WINDOW = plausible_window()
_TAG_RE = re.compile(r"<[^>]*>")
_BLOCK_RE = re.compile(r"<(script|style)\b.*?</\1\s*>", re.S | re.I)
_WS_RE = re.compile(r"\s+")
_ANGLE_TAGS_RE = re.compile(r"<([^<>]+)>")


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
    t = t.replace(tzinfo=dt.timezone.utc) if t.tzinfo is None else t.astimezone(dt.timezone.utc)
    # The shared plausible window (notellm.timestamps), as for every other source.
    return t if in_window(np.array([to_micros(t)]), _WINDOW)[0] else None


def positive_id(text: str | None) -> int | None:
    try:
        v = int(text) if text is not None else None
    except ValueError:
        return None
    return v if v is not None and v > 0 else None


def iter_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """Stream ``<row .../>`` attributes with a 1-based row number, clearing
    parsed elements so memory stays flat.

    Parsed with defusedxml: entity definitions (the "billion laughs" bomb) and
    external entities are refused rather than expanded or fetched. A
    truncated file, invalid UTF-8, an empty file or a forbidden construct is
    :class:`notellm.cli.BadInput` (exit 2) naming the file and the position."""
    n = 0
    try:
        # A bare DOCTYPE naming a DTD is allowed (some real dumps carry one; expat never fetches it).
        context = iterparse(str(path), events=("start", "end"), forbid_dtd=False, forbid_entities=True,
                            forbid_external=True)
        _, root = next(context)
        for event, elem in context:
            if event == "end" and elem.tag == "row":
                n += 1
                yield n, dict(elem.attrib)
                elem.clear()
                root.clear()
    except ET.ParseError as exc:
        raise BadInput(f"{path}: not well-formed XML after row {n} ({exc}): truncated, not UTF-8 or empty") \
            from None
    except DefusedXmlException as exc:
        raise BadInput(f"{path}: refused XML construct after row {n} ({type(exc).__name__}: {exc}); "
                       "dumps define no entities") from None
    except StopIteration:
        raise BadInput(f"{path}: empty XML file") from None


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


class SiteRows:
    """Python columns of one site's notes, events and links, filled file by
    file, with one :class:`FileLedger` per file read. Read Posts first: the
    other files only point at the questions and answers it accepted."""

    def __init__(self, site: str):
        self.site = site
        self.notes: dict[str, list] = {k: [] for k in NOTES.columns}
        self.events: dict[str, list] = {k: [] for k in EVENTS.columns}
        self.links: dict[str, list] = {k: [] for k in RELATED_LINKS.columns}
        self.ledgers: list[FileLedger] = []
        self.extra: Counter = Counter()           # site-level counts for the stats
        self.questions: dict[int, str] = {}       # question Id -> note_id
        self.answer_parent: dict[int, str] = {}   # answer Id -> question note_id
        self.other_posts: set[int] = set()        # wikis, excerpts, ... (and answers for votes)

    def _ledger(self, path: Path) -> FileLedger:
        led = FileLedger(path)
        self.ledgers.append(led)
        return led

    def _add_event(self, user: int, note_id: str, kind: str, when: dt.datetime) -> None:
        self.events["user_id"].append(f"{self.site}:{user}")
        self.events["note_id"].append(note_id)
        self.events["event_type"].append(kind)
        self.events["event_time"].append(when)

    def read_posts(self, path: Path) -> None:
        """Questions become notes (+ ``ask``); answers, kept for a second pass
        because their question may come later in the file, become ``answer``."""
        led = self._ledger(path)
        seen: set[int] = set()
        answers = []
        for n, row in iter_rows(path):
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
                self.other_posts.add(pid)
                led.ignore("not_a_question")
                continue
            created = parse_time(row.get("CreationDate"))
            if created is None:
                led.quarantine(n, f"bad_timestamp: {row.get('CreationDate')!r}", row)
                continue
            if ptype == "2":
                answers.append((n, pid, row, created))
                continue
            self._add_question(led, n, pid, row, created)
        for n, pid, row, created in answers:     # second pass: parents may come later in the file
            self._add_answer(led, n, pid, row, created)

    def _add_question(self, led: FileLedger, n: int, pid: int, row: dict, created: dt.datetime) -> None:
        title, body = (row.get("Title") or "").strip(), strip_html(row.get("Body"))
        if not title and not body:
            led.quarantine(n, "empty_text", row)
            return
        note_id = f"{self.site}:{pid}"
        self.questions[pid] = note_id
        self.notes["note_id"].append(note_id)
        self.notes["title"].append(_WS_RE.sub(" ", html.unescape(title)))
        self.notes["content"].append(body)
        self.notes["hashtags"].append(parse_tags(row.get("Tags")))
        self.notes["category"].append(self.site)
        self.notes["created_at"].append(created)
        led.accept()
        owner = positive_id(row.get("OwnerUserId"))
        if owner is not None:
            self._add_event(owner, note_id, "ask", created)
        else:
            self.extra["ask_skipped_anonymous_owner"] += 1

    def _add_answer(self, led: FileLedger, n: int, pid: int, row: dict, created: dt.datetime) -> None:
        parent = positive_id(row.get("ParentId"))
        if parent not in self.questions:
            led.quarantine(n, f"unknown_parent: {row.get('ParentId')}", row)
            return
        self.answer_parent[pid] = self.questions[parent]
        owner = positive_id(row.get("OwnerUserId"))
        if owner is None:
            led.quarantine(n, f"anonymous_user: {row.get('OwnerUserId')!r}", row)
            return
        self._add_event(owner, self.questions[parent], "answer", created)
        led.accept()

    def _add_user_event(self, led: FileLedger, n: int, row: dict, note_id: str, kind: str,
                        day_only: bool = False) -> None:
        """The UserId/CreationDate checks comments and votes share, then the
        event (``day_only``: the time truncated to midnight UTC)."""
        user = positive_id(row.get("UserId"))
        if user is None:
            led.quarantine(n, f"anonymous_user: {row.get('UserId')!r}", row)
            return
        created = parse_time(row.get("CreationDate"))
        if created is None:
            led.quarantine(n, f"bad_timestamp: {row.get('CreationDate')!r}", row)
            return
        if day_only:
            created = created.replace(hour=0, minute=0, second=0, microsecond=0)
        self._add_event(user, note_id, kind, created)
        led.accept()

    def read_comments(self, path: Path) -> None:
        """A comment on a question or on one of its answers -> ``comment`` on the question."""
        led = self._ledger(path)
        for n, row in iter_rows(path):
            led.rows_in += 1
            post = positive_id(row.get("PostId"))
            note_id = self.questions.get(post) or self.answer_parent.get(post)
            if note_id is None:
                if post in self.other_posts:
                    led.ignore("not_on_a_question")
                else:
                    led.quarantine(n, f"unknown_post: {row.get('PostId')}", row)
                continue
            self._add_user_event(led, n, row, note_id, "comment")

    def read_votes(self, path: Path) -> None:
        """A favourite vote (``VoteTypeId=5``) on a question -> ``favourite`` at midnight UTC."""
        led = self._ledger(path)
        for n, row in iter_rows(path):
            led.rows_in += 1
            if row.get("VoteTypeId") != "5":
                led.ignore("not_a_favourite")
                continue
            post = positive_id(row.get("PostId"))
            note_id = self.questions.get(post)
            if note_id is None:
                if post in self.other_posts or post in self.answer_parent:
                    led.ignore("not_on_a_question")
                else:
                    led.quarantine(n, f"unknown_post: {row.get('PostId')}", row)
                continue
            self._add_user_event(led, n, row, note_id, "favourite", day_only=True)

    def read_links(self, path: Path) -> None:
        """A PostLink between two accepted questions -> a related link."""
        led = self._ledger(path)
        for n, row in iter_rows(path):
            led.rows_in += 1
            kind = LINK_TYPES.get(row.get("LinkTypeId") or "")
            if kind is None:
                led.quarantine(n, f"unknown_link_type: {row.get('LinkTypeId')!r}", row)
                continue
            src = self.questions.get(positive_id(row.get("PostId")))
            dst = self.questions.get(positive_id(row.get("RelatedPostId")))
            if src is None or dst is None:
                # links to deleted posts / answers / other sites: expected, not an error
                led.ignore("link_not_between_known_questions")
                continue
            self.links["src_note_id"].append(src)
            self.links["dst_note_id"].append(dst)
            self.links["link_type"].append(kind)
            self.links["created_at"].append(parse_time(row.get("CreationDate")))
            led.accept()
