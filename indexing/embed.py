"""Embedding the note corpus with the approved NoteLLM model.

Store layout (one folder per model, so vectors of two models never mix)::

    <emb_root>/<model_id>/shard-00000.parquet   embeddings_contract(d): note_id, vector, model_id, text_sha256
    <emb_root>/<model_id>/shard-00001.parquet   ...
    <emb_root>/<model_id>/_run.json             the plan of a run in progress (full mode), for resuming
    <emb_root>/<model_id>/_stats.json, _SUCCESS written last by :func:`finalize`

The plan is a pure function of the corpus: notes sorted by ``note_id`` and cut
into shards of ``shard_size`` rows; shard i holds rows ``[i*S, (i+1)*S)``. Each
shard file is written atomically (temporary name + rename), so a file under the
final name is always complete. Every stored row carries the note's prompt
fingerprint (:func:`notellm.prompts.note_fingerprint`): a vector is valid for a
note exactly when ``(note_id, text_sha256)`` match under the same model, which
is what makes both resuming and the incremental mode safe:

* a planned shard whose file already holds exactly the planned
  ``(note_id, text_sha256)`` rows is skipped (resume after a crash, or nothing
  changed in it);
* incremental mode reuses every stored vector whose key matches and embeds
  only new or changed notes; shards past the end of the new plan (and with
  them deleted notes) are removed by :func:`finalize`;
* full mode ignores vectors from earlier runs, but resumes its own run: the
  plan digest in ``_run.json`` tells a crashed full run from an old one.

Work is split over ``world_size`` workers by shard (rank r takes shards
i with i % world_size == r); that works on CPU processes and on GPUs alike.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from notellm.contracts import (NOTES, ContractError, embeddings_contract, mark_success, read_table,
                               write_table)
from notellm.precision import PRECISIONS, cpu_has_native_bf16, use_bf16  # noqa: F401 (re-exported)
from notellm.prompts import PromptConfig, note_fingerprint

log = logging.getLogger(__name__)

SHARD_PREFIX = "shard-"
RUN_FILE = "_run.json"


@dataclasses.dataclass
class EmbedConfig:
    """Knobs of an embedding run.

    ``precision``: see notellm.precision (``auto`` = bf16 autocast on GPU and on
    CPUs with native bf16, fp32 elsewhere). Force with ``bf16`` / ``fp32``.
    """

    shard_size: int = 2048
    batch_size: int = 32
    precision: str = "auto"
    incremental: bool = True
    progress: bool = True

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.shard_size <= 0 or self.batch_size <= 0:
            raise ValueError("shard_size and batch_size must be positive")


# ---------------------------------------------------------------- planning (pure)


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a run must produce: notes in note_id order, their fingerprints, the shard cut."""

    note_ids: list
    fingerprints: list
    shard_size: int

    @property
    def num_shards(self) -> int:
        return -(-len(self.note_ids) // self.shard_size)

    def shard_rows(self, shard: int) -> range:
        lo = shard * self.shard_size
        return range(lo, min(lo + self.shard_size, len(self.note_ids)))

    def digest(self) -> str:
        h = hashlib.sha256(str(self.shard_size).encode())
        for nid, fp in zip(self.note_ids, self.fingerprints):
            h.update(nid.encode())
            h.update(b"\0")
            h.update(fp.encode())
        return h.hexdigest()


def make_plan(notes: pa.Table, prompt_config: PromptConfig, shard_size: int) -> tuple[Plan, pa.Table]:
    """Sort notes by note_id, fingerprint them, refuse duplicate ids."""
    notes = notes.sort_by("note_id")
    ids = notes.column("note_id").to_pylist()
    dup = len(ids) - len(set(ids))
    if dup:
        seen, dups = set(), []
        for nid in ids:
            if nid in seen:
                dups.append(nid)
            seen.add(nid)
        raise ContractError("notes", "note_id", f"{dup} duplicate note id(s), e.g. {dups[:3]}")
    rows = notes.select(["title", "content", "hashtags"]).to_pylist()
    fps = [note_fingerprint(r, prompt_config) for r in rows]
    return Plan(ids, fps, shard_size), notes


def shard_path(model_dir: Path, shard: int) -> Path:
    return model_dir / f"{SHARD_PREFIX}{shard:05d}.parquet"


def existing_shards(model_dir: Path) -> dict[int, Path]:
    out = {}
    if model_dir.is_dir():
        for p in model_dir.glob(f"{SHARD_PREFIX}*.parquet"):
            try:
                out[int(p.stem[len(SHARD_PREFIX):])] = p
            except ValueError:
                continue
    return out


# ---------------------------------------------------------------- store reading


def _read_keys(path: Path) -> tuple[list, list, set]:
    t = pq.read_table(path, columns=["note_id", "text_sha256", "model_id"])
    return t.column("note_id").to_pylist(), t.column("text_sha256").to_pylist(), set(t.column("model_id").to_pylist())


def shard_is_complete(path: Path, plan: Plan, shard: int, model_id: str) -> bool:
    """True when the stored shard holds exactly the planned rows under this model."""
    try:
        ids, fps, models = _read_keys(path)
    except (pa.ArrowInvalid, OSError):
        return False
    rows = plan.shard_rows(shard)
    return (models <= {model_id} and ids == plan.note_ids[rows.start:rows.stop]
            and fps == plan.fingerprints[rows.start:rows.stop])


def reusable_vectors(model_dir: Path, model_id: str, dim: int, wanted: Mapping[str, str]) -> dict:
    """(note_id -> vector) for stored rows whose (note_id, text_sha256, model_id) match ``wanted``
    (note_id -> fingerprint). Unreadable shards are skipped with a warning: they are re-embedded."""
    found: dict[str, np.ndarray] = {}
    contract = embeddings_contract(dim)
    for _, path in sorted(existing_shards(model_dir).items()):
        try:
            t = read_table(path, contract)
        except ContractError as exc:
            log.warning("ignoring unreadable embedding shard: %s", exc)
            continue
        ids = t.column("note_id").to_pylist()
        fps = t.column("text_sha256").to_pylist()
        models = t.column("model_id").to_pylist()
        vecs = vectors_of(t)
        for i, (nid, fp, mid) in enumerate(zip(ids, fps, models)):
            if mid == model_id and wanted.get(nid) == fp:
                found[nid] = vecs[i]
    return found


def vectors_of(table: pa.Table) -> np.ndarray:
    """The fixed-size-list ``vector`` column as a float32 (n, d) array (zero-copy where possible)."""
    col = table.column("vector").combine_chunks()
    d = col.type.list_size
    return col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, d)


def embeddings_table(note_ids: Sequence[str], vectors: np.ndarray, model_id: str, fps: Sequence[str]) -> pa.Table:
    dim = vectors.shape[1]
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    vec = pa.FixedSizeListArray.from_arrays(flat, dim)
    return pa.Table.from_arrays(
        [pa.array(list(note_ids), pa.string()), vec, pa.array([model_id] * len(note_ids), pa.string()),
         pa.array(list(fps), pa.string())],
        schema=embeddings_contract(dim).arrow_schema)


def load_embeddings(emb_root: str | os.PathLike, model_id: str, dim: int, plan: Plan | None = None
                    ) -> tuple[list, np.ndarray]:
    """All stored embeddings of a model as (note_ids, vectors), in note_id order.

    With ``plan`` the store must cover it exactly (every planned note with its
    current fingerprint, nothing else); otherwise a ContractError names the gap.
    """
    model_dir = Path(emb_root) / model_id
    shards = existing_shards(model_dir)
    if not shards:
        raise ContractError(str(model_dir), None, "no embedding shards (run `python -m indexing.cli embed` first)")
    contract = embeddings_contract(dim)
    tables = [read_table(shards[i], contract) for i in sorted(shards)]
    table = pa.concat_tables(tables).sort_by("note_id")
    ids = table.column("note_id").to_pylist()
    vecs = vectors_of(table)
    if plan is not None:
        if len(ids) != len(plan.note_ids) or ids != plan.note_ids:
            missing = set(plan.note_ids) - set(ids)
            extra = set(ids) - set(plan.note_ids)
            raise ContractError(str(model_dir), "note_id",
                                f"store does not match the notes: {len(missing)} missing (e.g. {sorted(missing)[:3]}), "
                                f"{len(extra)} extra or duplicated (e.g. {sorted(extra)[:3]})")
        if table.column("text_sha256").to_pylist() != plan.fingerprints:
            raise ContractError(str(model_dir), "text_sha256", "stale vectors: some notes changed since they were embedded")
    return ids, vecs


# ---------------------------------------------------------------- the run


@dataclasses.dataclass
class EmbedStats:
    notes: int = 0
    shards: int = 0
    shards_skipped: int = 0
    shards_written: int = 0
    embedded: int = 0
    reused: int = 0
    seconds: float = 0.0
    embed_seconds: float = 0.0

    @property
    def notes_per_s(self) -> float:
        return self.embedded / self.embed_seconds if self.embed_seconds > 0 else 0.0

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["notes_per_s"] = round(self.notes_per_s, 2)
        return d


class _Progress:
    """tqdm bar counting embedded notes (its rate is notes/s); silent when disabled."""

    def __init__(self, total: int, enabled: bool, desc: str):
        self.bar = None
        if enabled and total:
            from tqdm import tqdm
            self.bar = tqdm(total=total, unit="note", desc=desc, file=sys.stderr, smoothing=0.1)

    def __call__(self, n: int):
        if self.bar is not None:
            self.bar.update(n)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def embed_corpus(encoder, notes: pa.Table, emb_root: str | os.PathLike, config: EmbedConfig = EmbedConfig(),
                 rank: int = 0, world_size: int = 1, after_shard: Callable[[int], None] | None = None,
                 finalize_store: bool | None = None) -> EmbedStats:
    """Embed this worker's shards of ``notes`` (NOTES contract) into the store.

    ``after_shard(i)`` is called after shard i is safely written (a test hook:
    raising there simulates a crash after k shards). With ``world_size == 1``
    the store is finalised (stale shards removed, ``_SUCCESS`` written); with
    several workers call :func:`finalize` once all have finished.
    """
    t0 = time.perf_counter()
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world of size {world_size}")
    model_id = encoder.config.model_id
    if not model_id:
        raise ValueError("encoder has no model_id (load it with NoteEncoder.load from a saved directory)")
    dim = encoder.config.dim
    plan, notes = make_plan(notes, encoder.config.prompt_config, config.shard_size)
    model_dir = Path(emb_root) / model_id
    model_dir.mkdir(parents=True, exist_ok=True)
    stats = EmbedStats(notes=len(plan.note_ids), shards=plan.num_shards)

    run_file = model_dir / RUN_FILE
    if not config.incremental:
        # Full mode: start over unless this is the same full run resuming.
        state = json.loads(run_file.read_text()) if run_file.exists() else {}
        if state.get("digest") != plan.digest() or state.get("mode") != "full":
            if rank == 0:
                for path in existing_shards(model_dir).values():
                    path.unlink()
                _atomic_write_text(run_file, json.dumps({"digest": plan.digest(), "mode": "full"}))
            elif world_size > 1:
                _wait_for(lambda: run_file.exists() and json.loads(run_file.read_text()).get("digest") == plan.digest())

    mine = [i for i in range(plan.num_shards) if i % world_size == rank]
    todo = []
    stored = existing_shards(model_dir)
    for i in mine:
        if i in stored and shard_is_complete(stored[i], plan, i, model_id):
            stats.shards_skipped += 1
            stats.reused += len(plan.shard_rows(i))
        else:
            todo.append(i)

    reuse: dict = {}
    if todo:
        wanted = {}
        for i in todo:
            r = plan.shard_rows(i)
            wanted.update(zip(plan.note_ids[r.start:r.stop], plan.fingerprints[r.start:r.stop]))
        reuse = reusable_vectors(model_dir, model_id, dim, wanted)
    to_embed = sum(len(plan.shard_rows(i)) for i in todo) - sum(1 for _ in reuse)
    progress = _Progress(to_embed, config.progress, f"embed rank {rank}/{world_size}")
    bf16 = use_bf16(config.precision, encoder.device.type)
    if todo:
        # The store is about to change: it is no longer a complete, finalised set.
        (model_dir / "_SUCCESS").unlink(missing_ok=True)
    records = notes.select(["title", "content", "hashtags"])
    try:
        for i in todo:
            r = plan.shard_rows(i)
            ids = plan.note_ids[r.start:r.stop]
            vecs = np.zeros((len(ids), dim), dtype=np.float32)
            need = [j for j, nid in enumerate(ids) if nid not in reuse]
            for j, nid in enumerate(ids):
                if nid in reuse:
                    vecs[j] = reuse[nid]
            if need:
                rows = records.take(pa.array([r.start + j for j in need])).to_pylist()
                te = time.perf_counter()
                vecs[need] = encoder.embed_notes(rows, batch_size=config.batch_size, autocast_bf16=bf16,
                                                 sort_by_length=True, progress=progress)
                stats.embed_seconds += time.perf_counter() - te
            stats.embedded += len(need)
            stats.reused += len(ids) - len(need)
            write_table(embeddings_table(ids, vecs, model_id, plan.fingerprints[r.start:r.stop]),
                        shard_path(model_dir, i), embeddings_contract(dim))
            stats.shards_written += 1
            if after_shard is not None:
                after_shard(i)
    finally:
        progress.close()
    if finalize_store if finalize_store is not None else world_size == 1:
        finalize(emb_root, model_id, plan, stats)
    stats.seconds = time.perf_counter() - t0
    return stats


def finalize(emb_root: str | os.PathLike, model_id: str, plan: Plan, stats: EmbedStats | None = None) -> None:
    """Check every planned shard is complete, drop shards past the plan (deleted
    notes), clear the run state and write ``_stats.json`` + ``_SUCCESS``."""
    model_dir = Path(emb_root) / model_id
    stored = existing_shards(model_dir)
    incomplete = [i for i in range(plan.num_shards)
                  if i not in stored or not shard_is_complete(stored[i], plan, i, model_id)]
    if incomplete:
        raise ContractError(str(model_dir), None, f"shards {incomplete[:10]} missing or stale; rerun the embed step")
    for i, path in stored.items():
        if i >= plan.num_shards:
            path.unlink()
    (model_dir / RUN_FILE).unlink(missing_ok=True)
    (model_dir / "_SUCCESS").unlink(missing_ok=True)
    payload = {"model_id": model_id, "notes": len(plan.note_ids), "shards": plan.num_shards,
               "plan_digest": plan.digest()}
    if stats is not None:
        payload.update({k: v for k, v in stats.as_dict().items() if k not in payload})
    mark_success(model_dir, payload)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _wait_for(cond: Callable[[], bool], timeout: float = 600.0, every: float = 0.2) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise TimeoutError("timed out waiting for rank 0 to prepare the embedding store")
        time.sleep(every)


# ---------------------------------------------------------------- multi-process on one host


def _worker(args):
    model_dir, notes_path, emb_root, config, rank, world_size, threads = args
    import torch

    from notellm.encoder import NoteEncoder
    torch.set_num_threads(threads)
    encoder = NoteEncoder.load(model_dir)
    if torch.cuda.is_available():
        encoder.to(f"cuda:{rank % torch.cuda.device_count()}")
    notes = read_table(notes_path, NOTES)
    config = dataclasses.replace(config, progress=config.progress and rank == 0)
    return embed_corpus(encoder, notes, emb_root, config, rank=rank, world_size=world_size,
                        finalize_store=False).as_dict()


def embed_multiprocess(model_dir: str | os.PathLike, notes_path: str | os.PathLike, emb_root: str | os.PathLike,
                       config: EmbedConfig, num_procs: int) -> dict:
    """Shard the corpus over ``num_procs`` local worker processes (one GPU each
    when there are GPUs, else CPU threads split between them), then finalise."""
    import multiprocessing as mp

    from notellm.encoder import EncoderConfig, SIDECAR
    enc_config = EncoderConfig.from_json(Path(model_dir) / SIDECAR)
    notes = read_table(notes_path, NOTES)
    plan, _ = make_plan(notes, enc_config.prompt_config, config.shard_size)
    if not config.incremental:
        # Prepare the full run once here, so workers only resume it.
        model_store = Path(emb_root) / enc_config.model_id
        model_store.mkdir(parents=True, exist_ok=True)
        run_file = model_store / RUN_FILE
        state = json.loads(run_file.read_text()) if run_file.exists() else {}
        if state.get("digest") != plan.digest() or state.get("mode") != "full":
            for path in existing_shards(model_store).values():
                path.unlink()
            _atomic_write_text(run_file, json.dumps({"digest": plan.digest(), "mode": "full"}))
    threads = max(1, (os.cpu_count() or 1) // num_procs)
    t0 = time.perf_counter()
    ctx = mp.get_context("spawn")
    with ctx.Pool(num_procs) as pool:
        results = pool.map(_worker, [(str(model_dir), str(notes_path), str(emb_root), config, r, num_procs, threads)
                                     for r in range(num_procs)])
    total = EmbedStats(notes=len(plan.note_ids), shards=plan.num_shards)
    for r in results:
        for key in ("shards_skipped", "shards_written", "embedded", "reused"):
            setattr(total, key, getattr(total, key) + r[key])
        total.embed_seconds = max(total.embed_seconds, r["embed_seconds"])
    finalize(emb_root, enc_config.model_id, plan, total)
    total.seconds = time.perf_counter() - t0
    return total.as_dict()
