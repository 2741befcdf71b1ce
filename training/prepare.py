"""Prepare the training data once, for every rank: ``python -m training.prepare``.

Usage::

    python -m training.prepare --pairs PAIRS_ROOT/dt=D --notes NOTES --out DIR --batch-pairs B --seed S \\
        [--epochs E | --max-steps N]

Reads one PAIRS partition and the NOTES table by record batches (never whole
tables as Python lists), cleans the pairs exactly as ``training.data.clean_pairs``
does (self-pairs, repeats of an unordered pair, pairs with a note missing from the
notes; the same PairReport and the same ``max_missing_fraction`` refusal), checks
that the rows read equal the Parquet footers' row counts, and writes the prepared
folder (training/prepared.py reads it; docs/data-contracts.md, "Prepared training
data"): the used notes as an Arrow IPC file, the cleaned pairs as note indices in
Parquet order (the order the plans are made from), one plan per epoch the run needs
and the manifest, last. The folder is staged under a temp name and renamed into
place, so a SIGKILL leaves the old folder or none, never a partial one.

A rerun with the same inputs (paths, footer row counts and sizes, ``_stats.json``
digests), ``batch_pairs`` and seed reuses the folder (adding plans when the run needs
more epochs); any other identity rebuilds it. The trainer prepares
``<output_dir>/prepared`` this way on rank 0 unless ``prepared_dir`` names a folder,
which it only reads and refuses when its identity differs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from notellm import cli
from notellm.contracts import NOTES, PAIRS, Contract, ContractError, require_success, validate_schema, validate_table
from notellm.faults import fault_point
from notellm.files import atomic_path, atomic_write_json, fsync_file, sha256_file
from notellm.locking import locked, remove_dead_temps, replace_dir, temp_name
from training.config import PrepareConfig
from training.data import PairReport, notes_path, refuse_missing
from training.epoch_plan import index_dtype, plan_epoch_indices
from training.prepared import (
    FORMAT,
    KIND,
    MANIFEST,
    NOTE_COLUMNS,
    NOTES_FILE,
    PAIRS_FILE,
    REPORT_FILE,
    PreparedData,
    epochs_needed,
    identity,
    parquet_files,
    plan_file,
)

log = logging.getLogger(__name__)

BATCH_ROWS = 1 << 16
_NOTE_ID = Contract(NOTES.name, NOTES.version, pa.schema([NOTES.schema.field("note_id")]))
_NOTE_ROWS = Contract(NOTES.name, NOTES.version, pa.schema([NOTES.schema.field(c) for c in NOTE_COLUMNS]))


def _batches(path: Path, contract: Contract, columns: list[str]):
    """Validated record batches (one-batch tables of ``columns``) of one Parquet file whose schema has
    every ``contract`` column, and its footer row count."""
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ContractError(str(path), None, f"unreadable as Parquet: {exc}") from exc
    validate_schema(pf.schema_arrow, contract, str(path))
    read = Contract(contract.name, contract.version, pa.schema([contract.schema.field(c) for c in columns]))

    def gen():
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=columns):
            yield validate_table(pa.Table.from_batches([batch]), read, str(path))
    return gen(), pf.metadata.num_rows


def _reconcile(path: Path, read: int, footer: int) -> None:
    if read != footer:
        raise ContractError(str(path), None, f"{read} rows read but its footer says {footer}; the file is damaged")


def read_note_ids(files: list[Path]) -> pa.Array:
    """Every note_id of the notes table in row order (row number = index); footers reconciled."""
    chunks = []
    for f in files:
        batches, footer = _batches(f, _NOTE_ROWS, ["note_id"])
        read = 0
        for t in batches:
            read += t.num_rows
            chunks.append(t.column("note_id").cast(pa.large_string()))
        _reconcile(f, read, footer)
    return pa.chunked_array(chunks, type=pa.large_string()).combine_chunks()


class _Lookup:
    """Pair note ids -> note rows, by groups of pairs (one hash build of the notes per group);
    ids absent from the notes are kept (with their positions) to number them afterwards."""

    def __init__(self, note_ids: pa.Array, n_pairs: int):
        self.note_ids = note_ids
        self.rows = {side: np.full(n_pairs, -1, dtype=np.int64) for side in ("src", "dst")}
        self.self_pair = np.zeros(n_pairs, dtype=bool)
        self.unknown: dict[str, list] = {"src": [], "dst": []}
        self.group_rows = max(1 << 22, min(1 << 27, 4 * len(note_ids)))
        self.pending: list[pa.Table] = []
        self.start = self.pending_rows = 0

    def add(self, table: pa.Table) -> None:
        self.pending.append(table.select(["src_note_id", "dst_note_id"]))
        self.pending_rows += table.num_rows
        if self.pending_rows >= self.group_rows:
            self.flush()

    def flush(self) -> None:
        if not self.pending_rows:
            return
        group = pa.concat_tables(self.pending)
        at = slice(self.start, self.start + group.num_rows)
        src, dst = (group.column(c).cast(pa.large_string()) for c in ("src_note_id", "dst_note_id"))
        self.self_pair[at] = pc.equal(src, dst).to_numpy()
        for side, ids in (("src", src), ("dst", dst)):
            found = pc.index_in(ids, value_set=self.note_ids).fill_null(-1).to_numpy()
            self.rows[side][at] = found
            absent = np.flatnonzero(found < 0)
            if len(absent):
                self.unknown[side].append((absent + self.start, ids.take(pa.array(absent)).combine_chunks()))
        self.start += group.num_rows
        self.pending, self.pending_rows = [], 0

    def finish(self) -> tuple[np.ndarray, np.ndarray, pa.Array]:
        """(src rows, dst rows, unknown ids): an id missing from the notes gets n_notes + its number
        in ``unknown ids`` (sorted)."""
        self.flush()
        parts = [ids for side in ("src", "dst") for _, ids in self.unknown[side]]
        if not parts:
            return self.rows["src"], self.rows["dst"], pa.array([], pa.large_string())
        unknown = pc.unique(pa.chunked_array(parts, type=pa.large_string()).combine_chunks()).sort()
        for side in ("src", "dst"):
            for positions, ids in self.unknown[side]:
                self.rows[side][positions] = len(self.note_ids) + pc.index_in(ids, value_set=unknown).to_numpy()
        return self.rows["src"], self.rows["dst"], unknown


def _check_duplicate_notes(note_ids: pa.Array, src: np.ndarray, dst: np.ndarray, notes_file: Path) -> None:
    """A note_id twice in the notes table is refused when a pair uses it (as training.data.load_notes)."""
    counts = pc.value_counts(note_ids)
    dup = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
    if not len(dup):
        return
    first = pc.index_in(dup, value_set=note_ids).to_numpy()
    used = np.isin(first, src) | np.isin(first, dst)
    if used.any():
        nid = dup[int(np.flatnonzero(used)[0])].as_py()
        raise ContractError(str(notes_file), "note_id", f"duplicate note_id {nid!r} (the contract says unique)")


def clean(src: np.ndarray, dst: np.ndarray, self_pair: np.ndarray, n_notes: int, unknown: pa.Array,
          report: PairReport) -> np.ndarray:
    """Positions of the pairs kept, in input order, with ``report`` filled: the semantics of
    training.data.clean_pairs (first self-pairs, then repeats of an unordered pair, first occurrence
    kept, then pairs with an unknown note) on integer ids, vectorised."""
    nonself = np.flatnonzero(~self_pair)
    lo, hi = np.minimum(src[nonself], dst[nonself]), np.maximum(src[nonself], dst[nonself])
    n_ids = n_notes + len(unknown)
    if n_ids >= 3_000_000_000:
        raise ValueError(f"{n_ids} distinct note ids: more than the int64 pair keys hold")
    _, first = np.unique(lo * np.int64(n_ids) + hi, return_index=True)   # stable: the first occurrence
    kept = nonself[np.sort(first)]
    absent = (src[kept] >= n_notes) | (dst[kept] >= n_notes)
    missing = np.unique(np.concatenate([src[kept[absent]], dst[kept[absent]]]))
    missing = missing[missing >= n_notes] - n_notes
    report.self_pairs = int(self_pair.sum())
    report.duplicate_pairs = len(nonself) - len(kept)
    report.missing_note_pairs = int(absent.sum())
    report.missing_note_ids = len(missing)
    report.missing_note_examples = unknown.take(pa.array(missing[:20])).to_pylist()   # unknown is sorted
    used = kept[~absent]
    report.pairs_used = len(used)
    report.check()
    return used


def _write_notes(files: list[Path], rows: np.ndarray, path: Path) -> list[str]:
    """The notes at ``rows`` (sorted notes-table rows) as an Arrow IPC file; returns their categories."""
    categories: set[str] = set()
    start = written = 0
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, _NOTE_ROWS.arrow_schema) as writer:
        for f in files:
            batches, _ = _batches(f, _NOTE_ROWS, list(NOTE_COLUMNS))
            for t in batches:
                lo, hi = np.searchsorted(rows, [start, start + t.num_rows])   # used rows inside this batch
                if hi > lo:
                    part = t.select(list(NOTE_COLUMNS)).take(pa.array(rows[lo:hi] - start))
                    writer.write_table(part)
                    categories.update(pc.unique(part.column("category")).to_pylist())
                    written += part.num_rows
                start += t.num_rows
    if written != len(rows):
        raise ContractError(str(files[0]), None, f"{written} of {len(rows)} used notes found on the second read; "
                                                 "the notes changed while being prepared")
    fsync_file(path)
    return sorted(categories)


def _file_entry(path: Path) -> dict:
    """A file's manifest entry: its size (checked on every open) and sha256."""
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def _save(folder: Path, name: str, array: np.ndarray) -> dict:
    with atomic_path(folder / name) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)
    return _file_entry(folder / name)


def _plans(folder: Path, pairs: np.ndarray, n_notes: int, cfg: PrepareConfig, have: list[dict],
           files: dict) -> list[dict]:
    """Plan the epochs after those in ``have`` until the run's epochs / max_steps are covered."""
    plans = list(have)
    while True:
        need = epochs_needed([p["batches"] for p in plans], cfg.epochs, cfg.max_steps)
        if need is not None and len(plans) >= need:
            return plans
        e = len(plans)
        batches, left = plan_epoch_indices(pairs[:, 0], pairs[:, 1], n_notes, cfg.batch_pairs, cfg.seed, e)
        if not len(batches):
            raise cli.BadInput(f"{len(pairs)} pairs cannot fill one batch of {cfg.batch_pairs} pairs with distinct "
                               f"notes in epoch {e}; lower batch_pairs or add data")
        files[plan_file(e)] = _save(folder, plan_file(e), batches)
        plans.append({"epoch": e, "file": plan_file(e), "batches": len(batches), "left_over": int(left)})
        log.info("epoch %d: %d batches of %d pairs, %d pairs left over", e, len(batches), cfg.batch_pairs, left)


def build(cfg: PrepareConfig, ident: dict, staged: Path) -> dict:
    """Write the whole folder into ``staged`` (manifest last); returns the manifest."""
    pairs_dir, notes_file = Path(cfg.pairs), notes_path(cfg.notes)
    stats = require_success(pairs_dir)
    note_files, pair_files = parquet_files(notes_file), parquet_files(pairs_dir)
    if [f.relative_to(pairs_dir).as_posix() for f in pair_files] != [f["name"] for f in ident["pairs"]["files"]]:
        raise ContractError(str(pairs_dir), None, "its files changed while being prepared")
    note_ids = read_note_ids(note_files)
    lookup = _Lookup(note_ids, ident["pairs"]["rows"])
    report, window = PairReport(partition_stats=stats), [None, None]
    for f, expected in zip(pair_files, ident["pairs"]["files"]):
        batches, footer = _batches(f, PAIRS, PAIRS.columns)
        read = 0
        for t in batches:
            if report.pairs_read + t.num_rows > ident["pairs"]["rows"]:
                raise ContractError(str(f), None, "more rows than the footers say; the partition is being changed")
            lookup.add(t)
            read += t.num_rows
            report.pairs_read += t.num_rows
            if t.num_rows:
                lo, hi = pc.min(t.column("window_start")).as_py(), pc.max(t.column("window_end")).as_py()
                window = [min(window[0] or lo, lo), max(window[1] or hi, hi)]
        _reconcile(f, read, footer)
        _reconcile(f, read, expected["rows"])
    src, dst, unknown = lookup.finish()
    _check_duplicate_notes(note_ids, src, dst, notes_file)
    used = clean(src, dst, lookup.self_pair, len(note_ids), unknown, report)
    report.window_start, report.window_end = (w.isoformat() if w else None for w in window)
    refuse_missing(report, cfg.max_missing_fraction, pairs_dir, cfg.notes)
    log.info("data: %s", report.summary())
    src, dst = src[used], dst[used]
    del lookup
    used_note = np.zeros(len(note_ids), dtype=bool)
    used_note[src] = used_note[dst] = True
    rows = np.flatnonzero(used_note)                             # used notes, in notes-table order
    dense = np.cumsum(used_note, dtype=np.int64) - 1             # notes-table row -> index among the used
    pairs = np.stack([dense[src], dense[dst]], axis=1).astype(index_dtype(len(rows)))
    del used_note, dense
    staged.mkdir(parents=True)
    categories = _write_notes(note_files, rows, staged / NOTES_FILE)
    files = {NOTES_FILE: _file_entry(staged / NOTES_FILE)}
    files[PAIRS_FILE] = _save(staged, PAIRS_FILE, pairs)
    atomic_write_json(staged / REPORT_FILE, report.__dict__)
    files[REPORT_FILE] = _file_entry(staged / REPORT_FILE)
    plans = _plans(staged, pairs, len(rows), cfg, [], files)
    manifest = {"kind": KIND, "format": FORMAT, "identity": ident, "pairs_used": len(pairs), "notes_used": len(rows),
                "categories": categories, "plans": plans, "files": files,
                "digest": sha256_of_json({"pairs": files[PAIRS_FILE]["sha256"], "batch_pairs": cfg.batch_pairs,
                                          "seed": cfg.seed}),
                "order": "cleaned pairs in Parquet order (files sorted by path, rows in file order)"}
    fault_point("prepare", "files_written")
    atomic_write_json(staged / MANIFEST, manifest)
    return manifest


def sha256_of_json(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def prepare(cfg: PrepareConfig) -> dict:
    """Reuse, extend or (re)build ``cfg.out``; returns {status: built|reused|extended, manifest}."""
    out = Path(cfg.out)
    ident = identity(cfg.pairs, cfg.notes, cfg.batch_pairs, cfg.seed)
    with locked(out.parent, "prepare", lock_name=f".{out.name}.lock"):
        remove_dead_temps(out.parent, out.name)
        if (out / MANIFEST).is_file():
            try:
                data = PreparedData(out)
                manifest = data.manifest
                data.check(ident)
            except (cli.BadInput, KeyError, TypeError, ValueError, OSError) as exc:   # other data, or damaged
                log.info("rebuilding %s: %s", out, exc)
            else:
                refuse_missing(data.report, cfg.max_missing_fraction, cfg.pairs, cfg.notes)
                files = dict(manifest["files"])
                plans = _plans(out, np.load(out / PAIRS_FILE, mmap_mode="r"), data.notes.num_rows, cfg,
                               manifest["plans"], files)
                if len(plans) == len(manifest["plans"]):
                    return {"status": "reused", "manifest": manifest}
                manifest = {**manifest, "plans": plans, "files": files}
                atomic_write_json(out / MANIFEST, manifest)     # new plan files first, then the listing
                return {"status": "extended", "manifest": manifest}
        staged = out.parent / temp_name(out.name)
        try:
            manifest = build(cfg, ident, staged)
            fault_point("prepare", "staged")
            replace_dir(staged, out, writer="prepare")
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
    return {"status": "built", "manifest": manifest}


def _run(cfg: PrepareConfig, timer: cli.Timer) -> dict:
    with timer.phase("prepare"):
        result = prepare(cfg)
    m = result["manifest"]
    return {"prepared": str(Path(cfg.out)), "reuse": result["status"], "pairs_used": m["pairs_used"],
            "notes_used": m["notes_used"], "epochs": len(m["plans"]),
            "batches": [p["batches"] for p in m["plans"]], "left_over": [p["left_over"] for p in m["plans"]],
            "data": json.loads((Path(cfg.out) / REPORT_FILE).read_text())}


def main(argv=None) -> int:
    return cli.main(_run, PrepareConfig, argv, prog="python -m training.prepare")


if __name__ == "__main__":
    sys.exit(main())
