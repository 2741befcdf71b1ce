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
from indexing.gate import run_gate
from indexing.launch import embed_store
from indexing.publish import DEFAULT_KEEP, publish, readable_current
from indexing.snapshot import Snapshot, SnapshotError
from indexing.store import StoreSource, open_store
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


def read_test_set(pairs_path, pool_path) -> tuple[list | None, list | None]:
    if not pairs_path:
        return None, None
    if not pool_path:
        raise ValueError("test pairs (--test-pairs) need a pool (--pool)")
    pairs = read_table(pairs_path, PAIRS, columns=["src_note_id", "dst_note_id"])
    pool = read_table(pool_path, POOL)
    return (list(zip(pairs.column("src_note_id").to_pylist(), pairs.column("dst_note_id").to_pylist())),
            pool.column("note_id").to_pylist())


def notes_window(notes_path) -> dict:
    """First and last ``created_at`` day of the notes, from one projected column."""
    created = read_table(notes_path, NOTES, columns=["created_at"]).column("created_at")
    if len(created) == 0:
        return {"start": None, "end": None}
    lo, hi = pc.min_max(created).values()
    return {"start": lo.as_py().date().isoformat(), "end": hi.as_py().date().isoformat()}


@dataclasses.dataclass
class NightlyConfig:
    embed: EmbedConfig = dataclasses.field(default_factory=EmbedConfig)
    index: IndexConfig = dataclasses.field(default_factory=IndexConfig)
    gate: GateConfig = dataclasses.field(default_factory=GateConfig)
    keep: int = DEFAULT_KEEP
    num_procs: int = 1
    run_embed: bool = True        # False: index the store as the embed step (e.g. torchrun) left it


def run_embed(model_dir: Path, notes_path, emb_root, config: EmbedConfig, num_procs: int = 1) -> dict:
    return embed_store(model_dir, notes_path, emb_root, config, num_procs)


def open_corpus(model_dir: Path, emb_root) -> tuple[StoreSource, object]:
    """(the finalised store of the model as a stream, its encoder config)."""
    from notellm.encoder import SIDECAR, EncoderConfig
    enc = EncoderConfig.from_json(Path(model_dir) / SIDECAR)
    return open_store(emb_root, enc.model_id, enc.dim), enc


def run_nightly(*, notes_path, model_dir: Path, emb_root, snapshot_root, date, config: NightlyConfig = NightlyConfig(),
                pairs_path=None, pool_path=None, hook=None, timer=None) -> dict:
    """Embed -> build -> gate -> publish; the publish result plus a summary.

    ``timer`` (a :class:`notellm.cli.Timer`) times the phases embed, load,
    build, gate and publish; raises :class:`indexing.gate.GateFailed` when the
    gate refuses (nothing is published, CURRENT stays), and
    :class:`notellm.cli.Conflict` when another publisher moved CURRENT after
    this run read it (its gate compared against a stale baseline).
    """
    phase = timer.phase if timer is not None else (lambda name: contextlib.nullcontext())
    model_dir = Path(model_dir)
    embed_stats = None
    if config.run_embed:
        with phase("embed"):
            embed_stats = run_embed(model_dir, notes_path, emb_root, config.embed, config.num_procs)
    with phase("load"):
        source, enc = open_corpus(model_dir, emb_root)
        pairs, pool = read_test_set(pairs_path, pool_path)
        expected_current = readable_current(snapshot_root)   # what the gate compares against; publish checks it
        live = _live_snapshot(snapshot_root)
    with phase("build"):
        built = build_index(source, config.index)
    with phase("gate"):
        metrics = run_gate(built, source, config.gate, pairs, pool, live)
    metrics["index_build"] = {"phases_s": built.phases, "seconds": round(built.build_seconds, 3)}
    if embed_stats is not None:
        metrics["embed"] = {k: embed_stats[k] for k in ("notes", "embedded", "reused", "notes_per_s")
                            if k in embed_stats}
    model = {"model_id": enc.model_id, "path": str(model_dir.resolve()), "template_version": enc.template_version,
             "dim": enc.dim, "training_data_window": enc.data_window}
    kwargs = {"hook": hook} if hook else {}
    with phase("publish"):
        result = publish(snapshot_root, built, date=date, model=model, metrics=metrics,
                         data_window=notes_window(notes_path), keep=config.keep,
                         expected_current=expected_current, **kwargs)
    result.update(num_vectors=source.num_vectors, index_key=built.key, index_type=built.index_type,
                  search_params=built.search_params, index_params=built.params)
    if embed_stats is not None:
        result.update(embedded=embed_stats["embedded"], reused=embed_stats["reused"])
    return result


def _live_snapshot(snapshot_root):
    """The published snapshot to compare against, or None (none yet, or unusable)."""
    if readable_current(snapshot_root) is None:
        return None
    try:
        return Snapshot.open(snapshot_root, verify=True)
    except SnapshotError as exc:
        # The live snapshot is broken: the new one must not be compared to it, but may replace it.
        log.warning("live snapshot unusable as a baseline: %s", exc)
        return None


def today() -> dt.date:
    return dt.datetime.now(dt.timezone.utc).date()
