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

The field parsers and the per-file row readers live in
:mod:`jobs.sources.stackexchange_rows`; this module picks the site folders,
drives the readers per site and writes the contracts.
"""

from __future__ import annotations

import re
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa

from jobs.config import StackExchangeConfig
from jobs.quarantine import concat_quarantine, write_quarantine
from jobs.sources import write_day_partitions
from jobs.sources.stackexchange_rows import SiteRows
from jobs.sources.stackexchange_rows import parse_tags as parse_tags  # re-exported: callers import them from here
from jobs.sources.stackexchange_rows import strip_html as strip_html
from notellm import cli
from notellm.contracts import EVENTS, NOTES, RELATED_LINKS, mark_success, write_table


def site_name(folder: str) -> str:
    """Readable, distinct site name of a dump folder (see module docstring)."""
    name = folder.replace(".stackexchange.com", "")
    if name.startswith("meta."):
        rest = re.sub(r"\.(com|net|org)(?=$|-)", "", name[len("meta."):])
        name = f"{rest}.meta"
    return name


def find_files(site_dir: Path) -> dict[str, Path]:
    """Lower-cased file name -> path (dumps differ in case: posts.xml / Posts.xml)."""
    return {p.name.lower(): p for p in sorted(site_dir.iterdir()) if p.is_file()}


def convert_site(site_dir: Path) -> dict:
    """One site folder -> python columns for notes/events/links, quarantine tables and stats."""
    files = find_files(site_dir)
    rows = SiteRows(site_name(site_dir.name))
    readers = {"posts.xml": rows.read_posts, "comments.xml": rows.read_comments,    # in this order: the
               "votes.xml": rows.read_votes, "postlinks.xml": rows.read_links}      # others point at posts
    for name, read in readers.items():
        if name in files:
            read(files[name])
    if "posts.xml" not in files:
        rows.extra["missing_posts_file"] = 1
    stats = site_stats(site_dir, sorted(p.name for k, p in files.items() if k not in readers), rows)
    return {"notes": rows.notes, "events": rows.events, "links": rows.links,
            "quarantine": [led.table() for led in rows.ledgers], "stats": stats}


def site_stats(site_dir: Path, files_not_used: list[str], rows: SiteRows) -> dict:
    """Per-site ``_stats.json`` entry: the ledger of every file read, the files
    left unread and the column counts."""
    extra = rows.extra
    return {
        "site": rows.site, "folder": site_dir.name,
        "files": {Path(led.path).name: led.stats() for led in rows.ledgers},
        "files_not_used": files_not_used,
        "notes": len(rows.notes["note_id"]), "events": len(rows.events["note_id"]),
        "related_links": len(rows.links["src_note_id"]),
        "events_by_type": dict(sorted(Counter(rows.events["event_type"]).items())),
        **({"notes_without_ask_event": extra["ask_skipped_anonymous_owner"]} if extra else {}),
    }


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
