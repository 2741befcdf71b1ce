"""The prepared training folder, read side: what every rank memory-maps.

``python -m training.prepare`` (training/prepare.py) writes the folder once;
:class:`PreparedData` opens it without copying it into Python objects: the notes
as a memory-mapped Arrow IPC file (row number = note index), the cleaned pairs as
an (n, 2) ``.npy`` of note indices, one saved epoch plan per epoch
(``plan-epoch-<e>.npy``: (batches, batch_pairs) pair indices), all with
``np.load(mmap_mode="r")``. It answers what ``training/sampler.py`` answered over
in-memory pairs: ``global_batch(step)``, ``position(step)``, ``steps_per_epoch(e)``,
and builds a batch's examples from the notes it reads by row.

Layout and manifest: docs/data-contracts.md, "Prepared training data".
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from notellm import cli, storage
from notellm.contracts import STATS_FILE, ContractError
from notellm.files import sha256_file
from training.config import PrepareConfig, TrainConfig
from training.data import Example, PairReport, assign_tasks, notes_path, refuse_missing
from training.epoch_plan import plan_epoch_indices

log = logging.getLogger(__name__)

FORMAT = 1
KIND = "notellm-prepared-training-data"
MANIFEST = "manifest.json"
NOTES_FILE = "notes.arrow"
PAIRS_FILE = "pairs.npy"
REPORT_FILE = "data_report.json"
NOTE_COLUMNS = ("note_id", "title", "content", "hashtags", "category")


def plan_file(epoch: int) -> str:
    return f"plan-epoch-{int(epoch)}.npy"


# ---------------------------------------------------------------- input identity (footers only)


def parquet_files(path: str | os.PathLike) -> list[Path]:
    """The Parquet files of a file or folder, in the order a dataset read takes them (sorted paths;
    names starting with ``.`` or ``_`` are not data)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ContractError(str(path), None, "does not exist")
    root = os.path.abspath(path)
    files = [path / os.path.relpath(entry.uri, root) for entry in storage.LOCAL.list_files(root)]
    if not files:
        raise ContractError(str(path), None, "holds no Parquet file")
    return files


def footer_rows(path: Path) -> int:
    try:
        return pq.read_metadata(path).num_rows
    except (pa.ArrowInvalid, OSError) as exc:
        raise ContractError(str(path), None, f"unreadable as Parquet: {exc}") from exc


def input_identity(path: str | os.PathLike, stats_dir: Path) -> dict:
    """Path, files with their footer row counts and sizes, and the digest of ``_stats.json``."""
    path = Path(path)
    files = parquet_files(path)
    base = path if path.is_dir() else path.parent
    listed = [{"name": f.relative_to(base).as_posix(), "rows": footer_rows(f), "bytes": f.stat().st_size}
              for f in files]
    stats = stats_dir / STATS_FILE
    return {"path": str(path.resolve()), "files": listed, "rows": sum(f["rows"] for f in listed),
            "stats_sha256": sha256_file(stats) if stats.is_file() else None}


def identity(pairs: str | os.PathLike, notes: str | os.PathLike, batch_pairs: int, seed: int) -> dict:
    """What a prepared folder was made from and for: reused only when all of it is equal."""
    pairs_dir, notes_file = Path(pairs), notes_path(notes)
    return {"pairs": input_identity(pairs_dir, pairs_dir),
            "notes": input_identity(notes_file, notes_file if notes_file.is_dir() else notes_file.parent),
            "batch_pairs": int(batch_pairs), "seed": int(seed)}


def epochs_needed(counts: Sequence[int], epochs: float, max_steps: int | None) -> int | None:
    """How many epoch plans a run needs, given the batch counts of the first plans (None: more
    plans are needed to know). ``epochs`` runs ceil(epochs) epochs (the fraction of the last as
    ``training.trainer.total_steps`` rounds it); ``max_steps`` as many as its steps reach."""
    if max_steps is None:
        return max(1, math.ceil(epochs))
    done = 0
    for e, n in enumerate(counts):
        done += n
        if done >= max_steps:
            return e + 1
    return None


def mismatches(found: dict, expected: dict, prefix: str = "") -> list[str]:
    """Names of the identity entries that differ (nested keys joined by '.')."""
    out = []
    for key in sorted(set(found) | set(expected)):
        a, b = found.get(key), expected.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += mismatches(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}")
    return out


# ---------------------------------------------------------------- the reader


def read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise cli.BadInput(f"{path}: no {MANIFEST}; not a prepared training folder (python -m training.prepare "
                           "writes one)") from None
    except ValueError as exc:
        raise cli.BadInput(f"{path / MANIFEST}: not JSON ({exc})") from None
    if manifest.get("kind") != KIND or manifest.get("format") != FORMAT:
        raise cli.BadInput(f"{path / MANIFEST}: kind {manifest.get('kind')!r} format {manifest.get('format')!r}, "
                           f"expected {KIND!r} format {FORMAT}")
    return manifest


class PreparedData:
    """One prepared folder, memory-mapped. Picklable (DataLoader workers reopen the maps by path)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self._open()

    def _open(self) -> None:
        for name, meta in self.manifest["files"].items():
            size = (self.path / name).stat().st_size if (self.path / name).is_file() else None
            if size != meta["bytes"]:
                raise cli.BadInput(f"{self.path / name}: {size} bytes, the manifest says {meta['bytes']}; "
                                   "the prepared folder is damaged (prepare it again)")
        self.notes = pa.ipc.open_file(pa.memory_map(str(self.path / NOTES_FILE))).read_all()
        pairs = np.load(self.path / PAIRS_FILE, mmap_mode="r")
        self.src, self.dst = pairs[:, 0], pairs[:, 1]
        self._plans: dict[int, np.ndarray] = {}
        self._counts = [int(p["batches"]) for p in self.manifest["plans"]]

    def __getstate__(self) -> dict:
        return {"path": str(self.path), "manifest": self.manifest}

    def __setstate__(self, state: dict) -> None:
        self.path, self.manifest = Path(state["path"]), state["manifest"]
        self._open()

    # ------------------------------------------------------------ what it was made for
    @property
    def batch_pairs(self) -> int:
        return int(self.manifest["identity"]["batch_pairs"])

    @property
    def seed(self) -> int:
        return int(self.manifest["identity"]["seed"])

    @property
    def categories(self) -> list[str]:
        return list(self.manifest["categories"])

    @property
    def digest(self) -> str:
        """sha256 of the pairs and every saved plan: equal folders, equal batches."""
        return self.manifest["digest"]

    @property
    def report(self) -> PairReport:
        return PairReport(**json.loads((self.path / REPORT_FILE).read_text()))

    def check(self, expected: dict) -> None:
        """Refuse (exit 2) a folder made from other inputs or for another batch size or seed."""
        differ = mismatches(self.manifest["identity"], expected)
        if differ:
            raise cli.BadInput(f"{self.path}: prepared for other data or settings ({', '.join(differ[:8])} differ); "
                               "prepare it again for this run", {"prepared": str(self.path), "differ": differ})

    # ------------------------------------------------------------ steps
    @property
    def planned_epochs(self) -> int:
        return len(self._counts)

    def plan(self, epoch: int) -> np.ndarray:
        """(batches, batch_pairs) pair indices of ``epoch``: the saved plan, or one computed here
        (the same planner, so the same batches) for an epoch the folder does not hold."""
        if epoch not in self._plans:
            if epoch < len(self._counts):
                self._plans[epoch] = np.load(self.path / plan_file(epoch), mmap_mode="r")
            else:
                log.warning("%s holds plans for %d epochs; planning epoch %d here (prepare with more epochs "
                            "to save it)", self.path, len(self._counts), epoch)
                self._plans[epoch], _ = plan_epoch_indices(self.src, self.dst, self.notes.num_rows,
                                                           self.batch_pairs, self.seed, epoch)
        return self._plans[epoch]

    def steps_per_epoch(self, epoch: int = 0) -> int:
        return self._counts[epoch] if epoch < len(self._counts) else len(self.plan(epoch))

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, batch index within the epoch) of global step ``step`` (0-based). The step right
        after the last saved epoch is (that epoch + 1, 0) without planning it."""
        epoch = 0
        while not (step == 0 and epoch >= len(self._counts)):
            n = self.steps_per_epoch(epoch)
            if step < n:
                break
            step -= n
            epoch += 1
        return epoch, step

    def global_batch(self, step: int) -> np.ndarray:
        epoch, index = self.position(step)
        return np.asarray(self.plan(epoch)[index])

    # ------------------------------------------------------------ notes
    def notes_at(self, rows: Sequence[int]) -> list[dict]:
        """The notes of these rows, as dicts {note_id, title, content, hashtags, category}."""
        return self.notes.take(pa.array(np.asarray(rows, dtype=np.int64))).to_pylist()

    def batch_examples(self, pair_indices: Sequence[int], r: float, seed: int, step: int) -> list[Example]:
        """The global batch in the [a_1..a_B, b_1..b_B] layout with CSFT tasks assigned
        (what ``training.data.batch_examples`` gives for the same pairs)."""
        idx = np.asarray(pair_indices, dtype=np.int64)
        rows = np.concatenate([self.src[idx], self.dst[idx]])
        return assign_tasks(self.notes_at(rows), r, seed, step)


# ---------------------------------------------------------------- the trainer's entry


def config_for(train: TrainConfig, out: Path) -> PrepareConfig:
    return PrepareConfig(pairs=train.pairs, notes=train.notes, out=str(out), batch_pairs=train.batch_pairs,
                         seed=train.seed, epochs=train.epochs, max_steps=train.max_steps,
                         max_missing_fraction=train.max_missing_fraction)


def open_for_training(train: TrainConfig, out_dir: Path, rank: int = 0, world: int = 1, dist=None) -> PreparedData:
    """Every rank's data: ``prepared_dir`` as given (checked), or ``<out_dir>/prepared`` prepared by
    rank 0 (training.prepare.prepare) while the others wait for its outcome (``dist``:
    torch.distributed, with ``world`` > 1 ranks). At 10^8+ pairs prepare first (the wait is a
    collective, bounded by the process group's timeout)."""
    from training.prepare import prepare

    ident = identity(train.pairs, train.notes, train.batch_pairs, train.seed)
    path = Path(train.prepared_dir) if train.prepared_dir else out_dir / "prepared"
    if not train.prepared_dir:
        failure, outcome = None, None
        if rank == 0:
            try:
                result = prepare(config_for(train, path))
                log.info("prepared data %s: %s", path, result["status"])
            except Exception as exc:   # noqa: BLE001 - re-raised below, after the other ranks heard of it
                failure = exc
                bad = isinstance(exc, (cli.BadInput, ContractError))
                outcome = (cli.EXIT_BAD_INPUT if bad else cli.EXIT_ERROR, f"{type(exc).__name__}: {exc}")
        if world > 1:
            outcome = _broadcast(dist, outcome)
        if failure is not None:
            raise failure
        if outcome is not None:
            kind = cli.BadInput if outcome[0] == cli.EXIT_BAD_INPUT else RuntimeError
            raise kind(f"rank 0 could not prepare {path}: {outcome[1]}")
    data = PreparedData(path)
    data.check(ident)
    refuse_missing(data.report, train.max_missing_fraction, train.pairs, train.notes)
    return data


def _broadcast(dist, obj):
    """Rank 0's ``obj`` on every rank (NCCL needs this rank's GPU: no engine has set it yet)."""
    import torch

    box = [obj]
    nccl = dist.get_backend() == "nccl"
    dist.broadcast_object_list(box, src=0, device=torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
                               if nccl else None)
    return box[0]
