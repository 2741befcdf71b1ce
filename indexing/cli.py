"""Command line of the indexing stage: ``python -m indexing.cli <command>``.

Commands (settings: :mod:`indexing.config`, one dataclass each)::

    embed      embed the notes into the per-model embedding store (incremental by default; --full)
    build      build an index from stored embeddings into a directory (no publishing)
    publish    embed + build + gate + publish in one go (the nightly DAG task)
    rollback   point CURRENT at an earlier snapshot (verified first)
    info       a snapshot's manifest (CURRENT's by default) and the list of snapshots
    neighbors  nearest notes of a note in the live snapshot
    search     embed a text as a note with the snapshot's model and search the live snapshot

The command contract is :mod:`notellm.cli`'s: exactly one JSON result line on
stdout (``command``, ``status``, ``timings_s`` and the command's fields; the
hits of neighbors / search are a list under ``results``), logs on stderr, exit
0 ok, 2 bad input (contract, snapshot or settings error), 3 quality gate
refused. ``-k N``, ``--full`` and ``--index-type`` are kept as spellings of
``--k N``, ``--no-incremental`` and ``--index-key``.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path

from indexing.config import (
    BuildArgs,
    EmbedArgs,
    EmbedConfig,
    GateConfig,
    IndexConfig,
    InfoArgs,
    NeighborsArgs,
    PublishArgs,
    RollbackArgs,
    SearchArgs,
    pick,
)
from notellm import cli

log = logging.getLogger(__name__)

PROG = "python -m indexing.cli"
ALIASES = {"-k": "--k", "--full": "--no-incremental", "--index-type": "--index-key"}


def _bad_input(fn):
    """Snapshot errors, missing files, unknown notes and bad values are bad input (exit 2), as before."""
    @functools.wraps(fn)
    def wrapper(cfg, timer):
        from indexing.snapshot import SnapshotError
        try:
            return fn(cfg, timer)
        except (SnapshotError, FileNotFoundError, KeyError, ValueError) as exc:
            raise cli.BadInput(exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)) from exc
    return wrapper


def _titles(notes_path: Path | None) -> dict:
    if not notes_path:
        return {}
    from notellm.contracts import NOTES, read_table
    t = read_table(notes_path, NOTES, columns=["note_id", "title"])
    return dict(zip(t.column("note_id").to_pylist(), t.column("title").to_pylist()))


def _hits(hits, titles: dict) -> list[dict]:
    out = []
    for rank, (nid, score) in enumerate(hits, 1):
        row = {"rank": rank, "note_id": nid, "score": round(float(score), 6)}
        if titles:
            row["title"] = titles.get(nid)
        out.append(row)
    return out


# --------------------------------------------------------------------------- commands


@_bad_input
def cmd_embed(cfg: EmbedArgs, timer: cli.Timer) -> dict | None:
    """In this process (``--num-procs 1``), as local ranks (``--num-procs N``), as a torchrun rank
    (env WORLD_SIZE > 1: a process group, rank 0 finalises and prints), or as an externally launched
    worker without a group (``--rank R --world-size W``, then ``embed --finalize``)."""
    from indexing import launch, pipeline
    model_dir = pipeline.resolve_model_dir(cfg.model, cfg.models_root)
    config = pick(EmbedConfig, cfg)
    if cfg.finalize:
        return _finalize(cfg, model_dir, config, timer)
    with timer.phase("embed"):
        if cfg.rank is not None:
            stats = launch.run_rank(model_dir, cfg.notes, cfg.emb_root, config, cfg.rank, cfg.world_size,
                                    local_rank=int(os.environ.get("LOCAL_RANK", cfg.rank)), group=False)
        elif int(os.environ.get("WORLD_SIZE", 1)) > 1:
            stats = launch.embed_from_env(model_dir, cfg.notes, cfg.emb_root, config)
        else:
            stats = launch.embed_store(model_dir, cfg.notes, cfg.emb_root, config, cfg.num_procs)
    if stats is None:
        return None   # one result line per launch: rank 0's
    return {"emb_dir": str(cfg.emb_root), "model_dir": str(model_dir), **stats}


def _finalize(cfg: EmbedArgs, model_dir: Path, config: EmbedConfig, timer: cli.Timer) -> dict:
    from indexing import launch
    with timer.phase("finalize"):
        stats = launch.finalize_from_notes(model_dir, cfg.notes, cfg.emb_root)
    return {"finalized": str(Path(cfg.emb_root) / stats["model_id"]), **stats}


@_bad_input
def cmd_build(cfg: BuildArgs, timer: cli.Timer) -> dict:
    import faiss

    from indexing import build, pipeline
    from notellm.contracts import IDS, write_table
    from notellm.files import atomic_path, atomic_write_json
    model_dir = pipeline.resolve_model_dir(cfg.model, cfg.models_root)
    with timer.phase("load"):
        source, enc = pipeline.open_corpus(model_dir, cfg.emb_root)
    with timer.phase("build"):
        built = build.build_index(source, pick(IndexConfig, cfg))
    info = {"out": str(cfg.out), "model_id": enc.model_id, "num_vectors": source.num_vectors,
            "index": built.description, "content_sha256": built.content_sha256,
            "build_seconds": round(built.build_seconds, 3), "phases_s": built.phases, "on_gpu": built.on_gpu}
    with timer.phase("write"):
        with atomic_path(cfg.out / "index.faiss") as tmp:
            faiss.write_index(built.index, str(tmp))
        write_table(built.ids, cfg.out / "ids.parquet", IDS)
        atomic_write_json(cfg.out / "build.json", info)
    return info


@_bad_input
def cmd_publish(cfg: PublishArgs, timer: cli.Timer) -> dict:
    import datetime as dt

    from indexing import pipeline
    model_dir = pipeline.resolve_model_dir(cfg.model, cfg.models_root)
    config = pipeline.NightlyConfig(embed=pick(EmbedConfig, cfg), index=pick(IndexConfig, cfg),
                                    gate=pick(GateConfig, cfg), keep=cfg.keep, num_procs=cfg.num_procs,
                                    run_embed=cfg.embed)
    date = dt.date.fromisoformat(cfg.date) if cfg.date else pipeline.today()
    return pipeline.run_nightly(notes_path=cfg.notes, model_dir=model_dir, emb_root=cfg.emb_root,
                                snapshot_root=cfg.snapshot_root, date=date, config=config,
                                pairs_path=cfg.test_pairs, pool_path=cfg.pool, timer=timer)


@_bad_input
def cmd_rollback(cfg: RollbackArgs, timer: cli.Timer) -> dict:
    from indexing.publish import rollback
    with timer.phase("rollback"):
        return rollback(cfg.snapshot_root, cfg.to)


@_bad_input
def cmd_info(cfg: InfoArgs, timer: cli.Timer) -> dict:
    from indexing.publish import list_snapshots
    from indexing.snapshot import Snapshot, current_name
    with timer.phase("open"):
        snap = Snapshot.open(cfg.snapshot_root, cfg.name, verify=cfg.verify)
    return {"current": current_name(cfg.snapshot_root), "opened": snap.name,
            "snapshots": [s["name"] for s in list_snapshots(cfg.snapshot_root)], "manifest": snap.info()}


@_bad_input
def cmd_neighbors(cfg: NeighborsArgs, timer: cli.Timer) -> dict:
    from indexing.snapshot import Snapshot
    with timer.phase("open"):
        snap = Snapshot.open(cfg.snapshot_root, cfg.name)
    with timer.phase("search"):
        hits = snap.neighbors(cfg.note_id, cfg.k)
    return {"snapshot": snap.name, "note_id": cfg.note_id, "k": cfg.k, "results": _hits(hits, _titles(cfg.notes))}


@_bad_input
def cmd_search(cfg: SearchArgs, timer: cli.Timer) -> dict:
    from indexing.embed import load_encoder
    from indexing.snapshot import Snapshot
    with timer.phase("open"):
        snap = Snapshot.open(cfg.snapshot_root, cfg.name)
        model = snap.info()["model"]
        encoder, _ = load_encoder(Path(model["path"]), precision="fp32")   # one query: fp32, as before
    if encoder.config.model_id != model["model_id"]:
        raise cli.BadInput(f"model at {model['path']} is {encoder.config.model_id}, "
                           f"the snapshot was built with {model['model_id']}")
    note = {"title": cfg.text, "content": cfg.content,
            "hashtags": [h.strip() for h in cfg.hashtags.split(",") if h.strip()]}
    with timer.phase("search"):
        ids, scores = snap.search(encoder.embed_notes([note], batch_size=1), cfg.k)
    hits = [(n, s) for n, s in zip(ids[0], scores[0]) if n is not None]
    return {"snapshot": snap.name, "k": cfg.k, "results": _hits(hits, _titles(cfg.notes))}


COMMANDS = {
    "embed": cli.Subcommand(EmbedArgs, cmd_embed, "embed notes into the embedding store"),
    "build": cli.Subcommand(BuildArgs, cmd_build, "build an index from the stored embeddings into --out"),
    "publish": cli.Subcommand(PublishArgs, cmd_publish, "embed + build + gate + publish (nightly)"),
    "rollback": cli.Subcommand(RollbackArgs, cmd_rollback, "point CURRENT at an earlier snapshot"),
    "info": cli.Subcommand(InfoArgs, cmd_info, "a snapshot's manifest and the list of snapshots"),
    "neighbors": cli.Subcommand(NeighborsArgs, cmd_neighbors, "nearest notes of a note"),
    "search": cli.Subcommand(SearchArgs, cmd_search, "search the live snapshot with a text"),
}


def canonical_argv(argv: list) -> list[str]:
    """The older spellings (``-k N``, ``--full``) as the generated flags."""
    return [ALIASES.get(str(a), str(a)) for a in argv]


def main(argv: list[str] | None = None) -> int:
    argv = canonical_argv(sys.argv[1:] if argv is None else argv)
    return cli.main(COMMANDS, argv=argv, prog=PROG, description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(main())
