"""The embedding store: the plan of a corpus, and reading / writing its shards.

Layout (one folder per model, so vectors of two models never mix)::

    <emb_root>/<model_id>/shard-00000.parquet   embeddings_contract(d): note_id, vector, model_id, text_sha256
    <emb_root>/<model_id>/shard-00001.parquet   ...
    <emb_root>/<model_id>/_run.json             the plan of a full run in progress, for resuming
    <emb_root>/<model_id>/_stats.json, _SUCCESS written last by :func:`finalize`

The plan is a pure function of the corpus: notes sorted by ``note_id`` and cut
into shards of ``shard_size`` rows; shard i holds rows ``[i*S, (i+1)*S)``. Each
shard file is written atomically (temporary name + rename), so a file under
the final name is always complete. Every stored row carries the note's prompt
fingerprint (:func:`notellm.prompts.note_fingerprint`): a vector is valid for
a note exactly when ``(note_id, text_sha256)`` match under the same model,
which is what makes resuming and the incremental mode safe (see
:mod:`indexing.embed`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from notellm.contracts import ContractError, embeddings_contract, mark_success, read_table
from notellm.files import atomic_write_json
from notellm.prompts import PromptConfig, note_fingerprint

log = logging.getLogger(__name__)

SHARD_PREFIX = "shard-"
RUN_FILE = "_run.json"
SUCCESS = "_SUCCESS"


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

    def shard_keys(self, shard: int) -> tuple[list, list]:
        """(note ids, fingerprints) planned for ``shard``."""
        r = self.shard_rows(shard)
        return self.note_ids[r.start:r.stop], self.fingerprints[r.start:r.stop]

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


# ---------------------------------------------------------------- shard files


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


def _read_keys(path: Path) -> tuple[list, list, set]:
    t = pq.read_table(path, columns=["note_id", "text_sha256", "model_id"])
    return t.column("note_id").to_pylist(), t.column("text_sha256").to_pylist(), set(t.column("model_id").to_pylist())


def shard_is_complete(path: Path, plan: Plan, shard: int, model_id: str) -> bool:
    """True when the stored shard holds exactly the planned rows under this model."""
    try:
        ids, fps, models = _read_keys(path)
    except (pa.ArrowInvalid, OSError):
        return False
    want_ids, want_fps = plan.shard_keys(shard)
    return models <= {model_id} and ids == want_ids and fps == want_fps


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


# ---------------------------------------------------------------- reading the store


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
        _check_covers(model_dir, plan, ids, table.column("text_sha256").to_pylist())
    return ids, vecs


def _check_covers(model_dir: Path, plan: Plan, ids: list, fps: list) -> None:
    if ids != plan.note_ids:
        missing = set(plan.note_ids) - set(ids)
        extra = set(ids) - set(plan.note_ids)
        raise ContractError(str(model_dir), "note_id",
                            f"store does not match the notes: {len(missing)} missing (e.g. {sorted(missing)[:3]}), "
                            f"{len(extra)} extra or duplicated (e.g. {sorted(extra)[:3]})")
    if fps != plan.fingerprints:
        raise ContractError(str(model_dir), "text_sha256", "stale vectors: some notes changed since they were embedded")


# ---------------------------------------------------------------- run state and completion


def start_full_run(model_dir: Path, plan: Plan) -> bool:
    """Full mode: start over (drop every shard, record the plan in ``_run.json``)
    unless this is the same full run resuming. True when it started over."""
    model_dir.mkdir(parents=True, exist_ok=True)
    if full_run_ready(model_dir, plan):
        return False
    for path in existing_shards(model_dir).values():
        path.unlink()
    atomic_write_json(model_dir / RUN_FILE, {"digest": plan.digest(), "mode": "full"}, indent=None)
    return True


def full_run_ready(model_dir: Path, plan: Plan) -> bool:
    """True when ``_run.json`` records a full run of exactly this plan."""
    run_file = model_dir / RUN_FILE
    try:
        state = json.loads(run_file.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return state.get("digest") == plan.digest() and state.get("mode") == "full"


def wait_for(cond: Callable[[], bool], timeout: float = 600.0, every: float = 0.2) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise TimeoutError("timed out waiting for rank 0 to prepare the embedding store")
        time.sleep(every)


def finalize(emb_root: str | os.PathLike, model_id: str, plan: Plan, stats=None) -> None:
    """Check every planned shard is complete, drop shards past the plan (deleted
    notes), clear the run state and write ``_stats.json`` + ``_SUCCESS``.
    ``stats`` (an :class:`indexing.embed.EmbedStats`) goes into ``_stats.json``."""
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
    (model_dir / SUCCESS).unlink(missing_ok=True)
    payload = {"model_id": model_id, "notes": len(plan.note_ids), "shards": plan.num_shards,
               "plan_digest": plan.digest()}
    if stats is not None:
        payload.update({k: v for k, v in stats.as_dict().items() if k not in payload})
    mark_success(model_dir, payload)
