"""Evaluation protocol for the quality report: real data -> mined pairs -> time split -> test set.

Every data stage is the project's own CLI run as a subprocess (the Stack Exchange
adapter, the Spark co-occurrence job twice, the split job), exactly as an
operator would run them; a stage whose output carries ``_SUCCESS`` is reused, so
a rerun only redoes what is missing.

Protocol (NoteLLM Sec. 5.1, on Stack Exchange instead of Xiaohongshu):

* notes = questions (title, body text, tags as hashtags, site as category);
  behaviour = asking, answering, commenting, favouriting (``--engagement``).
* training pairs: co-occurrence pairs mined from the earlier window
  (2009-10-01 .. 2015-12-31); test pairs: pairs mined from the later window
  (2016-01-01 .. 2024-03-21) whose notes are not training notes; the test pool
  is every note of the later period that is not a training note
  (``jobs.split``). The first note of a test pair is the query, the second the
  ground truth; the query itself is excluded from its candidates.
* second relevance signal: human-made ``PostLinks`` (linked / duplicate) whose
  two questions are both in the test pool, query = the linking question.
* test sample: embedding with a 135M-parameter LLM runs at a few notes per
  second on this CPU, so the evaluation uses a seeded sample of the test pairs
  and a pool made of the endpoints of the sampled pairs, the endpoints of all
  PostLinks in the pool, and random other pool notes up to ``pool_size``.
  Every system is evaluated on exactly the same queries and pool.
* exposure: the number of test-window behaviour events of the query note;
  'low' below the median over the sampled queries, 'high' otherwise.
* new notes: queries created inside the test window (the rest are older notes
  that only received engagement there).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from notellm import cli
from notellm.contracts import EVENTS, NOTES, PAIRS, POOL, RELATED_LINKS, read_table, require_success
from notellm.files import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "stackexchange"

# The 26 dumps span 2009-10 .. 2024-03 with 75% of the events before 2016.
TRAIN_RUN_DATE, TRAIN_WINDOW_DAYS = "2015-12-31", 2283     # 2009-10-01 .. 2015-12-31
TEST_RUN_DATE, TEST_WINDOW_DAYS = "2024-03-21", 3003       # 2016-01-01 .. 2024-03-21
TEST_WINDOW_START = date(2016, 1, 1)


def _display_arg(arg) -> str:
    """A command argument as a reader can rerun it: the interpreter as ``python``,
    paths inside the repository relative to its root (no machine-local prefix)."""
    text = str(arg)
    if text == sys.executable:
        return "python"
    if isinstance(arg, Path) and arg.is_absolute():
        try:
            return str(arg.resolve().relative_to(REPO))
        except ValueError:
            return os.path.relpath(arg, REPO)
    return text


def display_command(command: str) -> str:
    """A recorded command line as a reader reruns it: each argument through
    :func:`_display_arg` (``--set key=/abs/path`` values included)."""
    out = []
    for arg in command.split(" "):
        key, eq, value = arg.partition("=")
        if eq and value.startswith(os.sep):
            out.append(key + "=" + _display_arg(Path(value)))
        elif arg.startswith(os.sep):
            out.append(_display_arg(Path(arg)) if arg != sys.executable else "python")
        else:
            out.append(arg)
    return " ".join(out)


def run_subprocess(name: str, cmd: list) -> None:
    """Run one stage CLI from the repository root: its stdout is its result line
    (:func:`notellm.cli.result_line`, logged), its stderr passes through; a
    non-zero exit raises :class:`subprocess.CalledProcessError`."""
    log.info("[%s] %s", name, " ".join(map(str, cmd)))
    proc = subprocess.run([str(c) for c in cmd], cwd=REPO, stdout=subprocess.PIPE, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        log.info("[%s] result: %s", name, json.dumps(cli.result_line(proc.stdout), sort_keys=True))
    except ValueError:                       # no JSON object on a line of its own
        if proc.stdout.strip():
            log.info("[%s] output:\n%s", name, proc.stdout.rstrip())
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd, output=proc.stdout)


def run_stage(name: str, cmd: list[str], done: Path, log: dict, times: dict | None = None,
              times_file: Path | None = None) -> None:
    """Run one CLI stage unless ``done`` exists; record the command and its wall time.

    ``times`` (name -> wall s, persisted by the caller) keeps the wall time of
    the run that computed a stage, so a report rendered from cached stages
    still states what each one cost; ``times_file`` is rewritten after each
    computed stage."""
    entry: dict = {"command": " ".join(_display_arg(c) for c in cmd)}
    if done.exists():
        entry["reused"] = True
        if times and times.get(name) is not None:
            entry["wall_s"] = times[name]
    else:
        t = time.perf_counter()
        run_subprocess(name, cmd)
        entry["wall_s"] = round(time.perf_counter() - t, 1)
        if times is not None:
            times[name] = entry["wall_s"]
            if times_file is not None:       # after every stage: a later failure keeps the earlier times
                atomic_write_json(times_file, times, indent=1)
    log[name] = entry


@dataclasses.dataclass
class PreparedData:
    notes: Path           # NOTES file
    events: Path          # EVENTS root
    links: Path           # RELATED_LINKS file
    split: Path           # jobs.split output (train_pairs/, test_pairs/, pool/)
    stats: dict

    @property
    def train_pairs(self) -> Path:
        return self.split / "train_pairs"


def prepare_data(work: Path, data: Path = DEFAULT_DATA, stages: dict | None = None) -> PreparedData:
    """Adapter -> Spark co-occurrence (train and test windows) -> time split, cached under ``work``."""
    stages = {} if stages is None else stages
    py = sys.executable
    se = work / "se"
    if not (se / "_SUCCESS").exists() and not data.exists():
        raise FileNotFoundError(f"{data}: Stack Exchange dumps absent (see ../shared/data/README.md)")
    notes = se / "notes" / "notes.parquet"
    times_file = work / "stage_times.json"
    times = json.loads(times_file.read_text()) if times_file.exists() else {}
    run_stage("adapter", [py, "-m", "jobs.sources.stackexchange", "--data", data, "--sites", "all", "--out", se],
              se / "_SUCCESS", stages, times, times_file)
    for name, day, days in (("mine_train", TRAIN_RUN_DATE, TRAIN_WINDOW_DAYS),
                            ("mine_test", TEST_RUN_DATE, TEST_WINDOW_DAYS)):
        # --max-gap-hours 0: engagement on Q&A sites is sparse, any co-engagement in the window counts.
        run_stage(name, [py, "-m", "jobs.cooccurrence", "--events", se / "events", "--notes", notes,
                         "--out", work / "pairs", "--quarantine-out", work / "quarantine", "--run-date", day,
                         "--window-days", days, "--engagement", "--allow-missing-days", "--max-gap-hours", "0"],
                  work / "pairs" / f"dt={day}" / "_SUCCESS", stages, times, times_file)
    run_stage("split", [py, "-m", "jobs.split", "--pairs", work / "pairs", "--train-date", TRAIN_RUN_DATE,
                        "--test-date", TEST_RUN_DATE, "--notes", notes, "--events", se / "events",
                        "--out", work / "split", "--allow-missing-days"], work / "split" / "_SUCCESS", stages, times,
              times_file)
    stats = {
        "adapter": {k: v for k, v in json.loads((se / "_stats.json").read_text()).items() if k != "sites"},
        "mine_train": json.loads((work / "pairs" / f"dt={TRAIN_RUN_DATE}" / "_stats.json").read_text()),
        "mine_test": json.loads((work / "pairs" / f"dt={TEST_RUN_DATE}" / "_stats.json").read_text()),
        "split": json.loads((work / "split" / "_stats.json").read_text()),
    }
    return PreparedData(notes, se / "events", se / "related_links" / "related_links.parquet", work / "split", stats)


@dataclasses.dataclass
class EvalSet:
    """The one test set every system is scored on."""
    pool: list[str]                                   # candidate note ids (sorted)
    cooccurrence: list[tuple[str, str]]               # (query, truth) sampled test pairs
    postlinks: list[tuple[str, str]]                  # (query, truth) PostLinks inside the pool
    exposure: dict[str, int]                          # query -> test-window behaviour events
    exposure_threshold: int                           # 'low' < threshold <= 'high'
    new_queries: set[str]                             # queries created in the test window
    meta: dict

    def bucket(self, query: str) -> str:
        return "low" if self.exposure.get(query, 0) < self.exposure_threshold else "high"

    def to_json(self) -> dict:
        return {"pool": self.pool, "cooccurrence": self.cooccurrence, "postlinks": self.postlinks,
                "exposure": self.exposure, "exposure_threshold": self.exposure_threshold,
                "new_queries": sorted(self.new_queries), "meta": self.meta}

    @classmethod
    def from_json(cls, d: dict) -> "EvalSet":
        return cls(d["pool"], [tuple(p) for p in d["cooccurrence"]], [tuple(p) for p in d["postlinks"]],
                   d["exposure"], d["exposure_threshold"], set(d["new_queries"]), d["meta"])


def test_window_event_counts(events_root: Path, notes: set[str]) -> dict[str, int]:
    """Behaviour events per note inside the test window (the exposure of a query)."""
    counts: dict[str, int] = {}
    for part in sorted(events_root.glob("dt=*")):
        day = date.fromisoformat(part.name[3:])
        if not (TEST_WINDOW_START <= day <= date.fromisoformat(TEST_RUN_DATE)):
            continue
        ids = read_table(part, EVENTS).column("note_id")
        for nid, n in zip(*np.unique(np.asarray(ids.to_pylist(), dtype=object), return_counts=True)):
            if nid in notes:
                counts[nid] = counts.get(nid, 0) + int(n)
    return counts


def build_eval_set(prepared: PreparedData, n_pairs: int, pool_size: int, seed: int = 0) -> EvalSet:
    """Sample the test pairs and the pool (see the module docstring); deterministic for a seed."""
    require_success(prepared.split / "test_pairs")
    require_success(prepared.split / "pool")
    pairs_tbl = read_table(prepared.split / "test_pairs", PAIRS)
    full_pool = read_table(prepared.split / "pool", POOL).column("note_id").to_pylist()
    pool_set = set(full_pool)
    all_pairs = list(zip(pairs_tbl.column("src_note_id").to_pylist(), pairs_tbl.column("dst_note_id").to_pylist()))
    rng = np.random.default_rng(seed)
    take = np.sort(rng.permutation(len(all_pairs))[:n_pairs]) if n_pairs else np.arange(len(all_pairs))
    cooc = [all_pairs[i] for i in take]

    links = read_table(prepared.links, RELATED_LINKS)
    link_pairs = sorted({(s, d) for s, d in zip(links.column("src_note_id").to_pylist(),
                                                 links.column("dst_note_id").to_pylist())
                         if s in pool_set and d in pool_set and s != d})
    endpoints = {n for p in cooc + link_pairs for n in p}
    if len(endpoints) > pool_size:
        raise ValueError(f"pool_size={pool_size} is smaller than the {len(endpoints)} endpoints of the sampled "
                         f"test pairs and PostLinks; raise --pool-size or lower --eval-pairs")
    others = sorted(pool_set - endpoints)
    extra = [others[i] for i in rng.permutation(len(others))[: pool_size - len(endpoints)]]
    pool = sorted(endpoints | set(extra))

    notes = read_table(prepared.notes, NOTES).select(["note_id", "created_at"])
    queries = {q for q, _ in cooc + link_pairs}
    created = dict(zip(notes.column("note_id").to_pylist(), notes.column("created_at").to_pylist()))
    start = datetime(TEST_WINDOW_START.year, TEST_WINDOW_START.month, TEST_WINDOW_START.day, tzinfo=timezone.utc)
    new_queries = {q for q in queries if created[q] >= start}
    exposure = test_window_event_counts(prepared.events, queries)
    cooc_q = [exposure.get(q, 0) for q, _ in cooc]
    threshold = int(np.median(cooc_q)) if cooc_q else 1
    threshold = max(threshold, 1)
    meta = {"seed": seed, "test_pairs_full": len(all_pairs), "test_pairs": len(cooc), "pool_full": len(full_pool),
            "pool": len(pool), "pool_endpoints": len(endpoints), "postlinks_pairs": len(link_pairs),
            "postlinks_total": links.num_rows, "new_note_queries_cooccurrence": sum(q in new_queries for q, _ in cooc),
            "exposure_threshold": threshold}
    return EvalSet(pool, cooc, link_pairs, exposure, threshold, new_queries, meta)


def data_digest(partition: Path) -> str:
    """Identity of a marked partition: its ``_stats.json`` (rewritten whenever the partition is)."""
    import hashlib
    require_success(partition)
    stats = partition / "_stats.json"
    return hashlib.sha256(stats.read_bytes() if stats.exists() else b"").hexdigest()[:16]


EVAL_SET_VERSION = 1


def load_or_build_eval_set(path: Path, prepared: PreparedData, n_pairs: int, pool_size: int, seed: int) -> EvalSet:
    """Cached by its parameters and the split's identity: a rerun scores the same test set,
    a re-mined split gets a new one."""
    key = {"n_pairs": n_pairs, "pool_size": pool_size, "seed": seed, "version": EVAL_SET_VERSION,
           "split": data_digest(prepared.split), "test_pairs": data_digest(prepared.split / "test_pairs")}
    if path.exists():
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return EvalSet.from_json(cached["eval_set"])
    es = build_eval_set(prepared, n_pairs, pool_size, seed)
    atomic_write_text(path, json.dumps({"key": key, "eval_set": es.to_json()}))
    return es


def notes_by_id(notes_path: Path, ids=None) -> dict[str, dict]:
    """NOTES rows (all, or those in ``ids``) as dicts keyed by note_id."""
    tbl = read_table(notes_path, NOTES)
    if ids is not None:
        want = pa.array(sorted(set(ids)), pa.string())
        tbl = tbl.filter(pc.is_in(tbl.column("note_id"), value_set=want))
    return {r["note_id"]: r for r in tbl.to_pylist()}


def read_train_pairs(prepared: PreparedData) -> list[tuple[str, str]]:
    """The split's training pairs, each unordered pair once, self-pairs refused.

    (The NoteLLM trainer cleans its input the same way; the MiniLM baseline
    reads the same partition through this function.)
    """
    require_success(prepared.train_pairs)
    tbl = read_table(prepared.train_pairs, PAIRS)
    seen, out = set(), []
    for s, d in zip(tbl.column("src_note_id").to_pylist(), tbl.column("dst_note_id").to_pylist()):
        if s == d:
            raise ValueError(f"{prepared.train_pairs}: src_note_id == dst_note_id ({s!r}); "
                             "the split never writes these")
        key = (s, d) if s < d else (d, s)
        if key not in seen:
            seen.add(key)
            out.append((s, d))
    return out
