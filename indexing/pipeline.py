"""The nightly job in one call: embed (incrementally) -> build -> gate -> publish."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import os
from pathlib import Path

import pyarrow.compute as pc

from indexing.build import build_index
from indexing.config import EmbedConfig, GateConfig, IndexConfig
from indexing.embed import embed_corpus
from indexing.gate import run_gate
from indexing.launch import embed_multiprocess
from indexing.publish import DEFAULT_KEEP, content_digest, publish
from indexing.snapshot import Snapshot, SnapshotError, current_name
from indexing.store import load_embeddings, make_plan
from notellm.contracts import NOTES, PAIRS, POOL, read_table

log = logging.getLogger(__name__)


def resolve_model_dir(model: str | os.PathLike | None, models_root: str | os.PathLike | None) -> Path:
    """An explicit model directory, else the approved model of the registry."""
    if model:
        return Path(model)
    if not models_root:
        raise ValueError("give --model <dir> or --models-root <root with APPROVED.json>")
    from notellm.registry import current_approved
    record = current_approved(models_root)
    if record is None:
        raise FileNotFoundError(f"{models_root}: no approved model (APPROVED.json missing); nothing to index")
    return Path(record["model_dir"])


def load_encoder(model_dir: Path):
    import torch

    from notellm.encoder import NoteEncoder
    encoder = NoteEncoder.load(model_dir)
    if torch.cuda.is_available():
        encoder.to("cuda")
    return encoder


def read_test_set(pairs_path, pool_path) -> tuple[list | None, list | None]:
    if not pairs_path:
        return None, None
    if not pool_path:
        raise ValueError("test pairs (--test-pairs) need a pool (--pool)")
    pairs = read_table(pairs_path, PAIRS, columns=["src_note_id", "dst_note_id"])
    pool = read_table(pool_path, POOL)
    return (list(zip(pairs.column("src_note_id").to_pylist(), pairs.column("dst_note_id").to_pylist())),
            pool.column("note_id").to_pylist())


def notes_window(notes) -> dict:
    if notes.num_rows == 0:
        return {"start": None, "end": None}
    lo, hi = pc.min_max(notes.column("created_at")).values()
    return {"start": lo.as_py().date().isoformat(), "end": hi.as_py().date().isoformat()}


@dataclasses.dataclass
class NightlyConfig:
    embed: EmbedConfig = dataclasses.field(default_factory=EmbedConfig)
    index: IndexConfig = dataclasses.field(default_factory=IndexConfig)
    gate: GateConfig = dataclasses.field(default_factory=GateConfig)
    keep: int = DEFAULT_KEEP
    num_procs: int = 1


def run_embed(model_dir: Path, notes_path, emb_root, config: EmbedConfig, num_procs: int = 1,
              rank: int = 0, world_size: int = 1) -> dict:
    if num_procs > 1:
        return embed_multiprocess(model_dir, notes_path, emb_root, config, num_procs)
    encoder = load_encoder(model_dir)
    notes = read_table(notes_path, NOTES)
    return embed_corpus(encoder, notes, emb_root, config, rank=rank, world_size=world_size).as_dict()


def load_corpus_vectors(model_dir: Path, notes_path, emb_root):
    """(notes table sorted by note_id, note ids, vectors, encoder config) with a full coverage check."""
    from notellm.encoder import SIDECAR, EncoderConfig
    enc = EncoderConfig.from_json(model_dir / SIDECAR)
    notes = read_table(notes_path, NOTES)
    plan, notes = make_plan(notes, enc.prompt_config, 1 << 30)
    ids, vecs = load_embeddings(emb_root, enc.model_id, enc.dim, plan)
    return notes, ids, vecs, enc


def run_nightly(*, notes_path, model_dir: Path, emb_root, snapshot_root, date, config: NightlyConfig = NightlyConfig(),
                pairs_path=None, pool_path=None, hook=None, timer=None) -> dict:
    """Embed -> build -> gate -> publish; the publish result plus a summary.

    ``timer`` (a :class:`notellm.cli.Timer`) times the phases embed, load,
    build, gate and publish; raises :class:`indexing.gate.GateFailed` when the
    gate refuses (nothing is published, CURRENT stays).
    """
    phase = timer.phase if timer is not None else (lambda name: contextlib.nullcontext())
    model_dir = Path(model_dir)
    with phase("embed"):
        embed_stats = run_embed(model_dir, notes_path, emb_root, config.embed, config.num_procs)
    with phase("load"):
        notes, ids, vecs, enc = load_corpus_vectors(model_dir, notes_path, emb_root)
        pairs, pool = read_test_set(pairs_path, pool_path)
        live = _live_snapshot(snapshot_root)
    with phase("build"):
        built = build_index(ids, vecs, config.index)
    with phase("gate"):
        metrics = run_gate(built, ids, vecs, config.gate, pairs, pool, live)
    metrics["embed"] = {k: embed_stats[k] for k in ("notes", "embedded", "reused", "notes_per_s")}
    model = {"model_id": enc.model_id, "path": str(model_dir.resolve()), "template_version": enc.template_version,
             "dim": enc.dim, "training_data_window": enc.data_window}
    kwargs = {"hook": hook} if hook else {}
    with phase("publish"):
        result = publish(snapshot_root, built, date=date, model=model, content_sha256=content_digest(ids, vecs),
                         metrics=metrics, data_window=notes_window(notes), keep=config.keep, **kwargs)
    result.update(num_vectors=len(ids), index_type=built.index_type, index_params=built.params,
                  embedded=embed_stats["embedded"], reused=embed_stats["reused"])
    return result


def _live_snapshot(snapshot_root):
    """The published snapshot to compare against, or None (none yet, or unusable)."""
    if current_name(snapshot_root) is None:
        return None
    try:
        return Snapshot.open(snapshot_root, verify=True)
    except SnapshotError as exc:
        # The live snapshot is broken: the new one must not be compared to it, but may replace it.
        log.warning("live snapshot unusable as a baseline: %s", exc)
        return None


def today() -> dt.date:
    return dt.datetime.now(dt.timezone.utc).date()
