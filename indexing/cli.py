"""Command line of the indexing stage: ``python -m indexing.cli <command>``.

Commands::

    embed      embed the notes into the per-model embedding store (incremental by default; --full)
    build      build an index from stored embeddings into a directory (no publishing)
    publish    embed + build + gate + publish in one go (the nightly DAG task); prints one JSON line
    rollback   point CURRENT at an earlier snapshot (verified first)
    info       print a snapshot's manifest (CURRENT by default)
    neighbors  nearest notes of a note in the live snapshot
    search     embed a text as a note with the snapshot's model and search the live snapshot

Exit codes: 0 ok, 2 bad input (contract/snapshot/usage error), 3 quality gate failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import os
import sys
from pathlib import Path

import contextlib

from notellm.cli import EXIT_BAD_INPUT, EXIT_GATE_FAILED


_OUT = sys.stdout


def emit(text: str) -> None:
    """Results go to the real stdout; everything libraries print goes to stderr (see main)."""
    print(text, file=_OUT, flush=True)


def _add_model_args(p):
    p.add_argument("--model", type=Path, help="NoteLLM model directory (default: the approved model)")
    p.add_argument("--models-root", type=Path, help="model registry root with APPROVED.json")


def _add_embed_args(p):
    p.add_argument("--notes", type=Path, required=True, help="notes Parquet (NOTES contract), e.g. <root>/notes/notes.parquet")
    p.add_argument("--emb-root", type=Path, required=True, help="embedding store root")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--incremental", dest="incremental", action="store_true", default=True,
                      help="reuse stored vectors of unchanged notes (default)")
    mode.add_argument("--full", dest="incremental", action="store_false", help="re-embed every note")
    p.add_argument("--shard-size", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="auto = bf16 autocast on GPU and on CPUs with native bf16 (AVX512-BF16/AMX), else fp32")
    p.add_argument("--num-procs", type=int, default=1, help="local worker processes (one per GPU, or CPU)")
    p.add_argument("--rank", type=int, default=int(os.environ.get("RANK", 0)),
                   help="this worker's rank when launched externally (env RANK)")
    p.add_argument("--world-size", type=int, default=int(os.environ.get("WORLD_SIZE", 1)),
                   help="number of externally launched workers (env WORLD_SIZE); run `embed --finalize` after all")
    p.add_argument("--no-progress", action="store_true")


def _add_index_args(p):
    p.add_argument("--index-type", choices=("auto", "flat", "ivf", "hnsw"), default="auto")
    p.add_argument("--nlist", type=int, default=None, help="IVF lists (default 4*sqrt(n))")
    p.add_argument("--no-gpu", action="store_true", help="build on CPU even when FAISS sees GPUs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m indexing.cli", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("embed", help="embed notes into the embedding store")
    _add_model_args(p)
    _add_embed_args(p)
    p.add_argument("--finalize", action="store_true",
                   help="only check all shards of an externally launched multi-worker run and mark it complete")

    p = sub.add_parser("build", help="build an index from the stored embeddings into --out")
    _add_model_args(p)
    p.add_argument("--notes", type=Path, required=True)
    p.add_argument("--emb-root", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    _add_index_args(p)

    p = sub.add_parser("publish", help="embed + build + gate + publish (nightly)")
    _add_model_args(p)
    _add_embed_args(p)
    p.add_argument("--snapshot-root", type=Path, required=True)
    p.add_argument("--date", type=dt.date.fromisoformat, default=None, help="snapshot date YYYY-MM-DD (default today UTC)")
    p.add_argument("--test-pairs", type=Path, help="PAIRS Parquet (file or dt= folder) for the Recall@K gate")
    p.add_argument("--pool", type=Path, help="POOL Parquet for the Recall@K gate")
    p.add_argument("--min-ann-recall", type=float, default=0.95)
    p.add_argument("--max-recall-drop", type=float, default=0.02)
    p.add_argument("--keep", type=int, default=7, help="snapshots to retain (CURRENT is never deleted)")
    _add_index_args(p)

    p = sub.add_parser("rollback", help="point CURRENT at an earlier snapshot")
    p.add_argument("--snapshot-root", type=Path, required=True)
    p.add_argument("--to", required=True, help="snapshot directory name, e.g. 2026-11-24-1a2b3c4d")

    p = sub.add_parser("info", help="print a snapshot manifest and the list of snapshots")
    p.add_argument("--snapshot-root", type=Path, required=True)
    p.add_argument("--name", default=None)
    p.add_argument("--no-verify", action="store_true")

    p = sub.add_parser("neighbors", help="nearest notes of a note")
    p.add_argument("--snapshot-root", type=Path, required=True)
    p.add_argument("--note-id", required=True)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--notes", type=Path, help="notes Parquet, to print titles")
    p.add_argument("--name", default=None)

    p = sub.add_parser("search", help="search the live snapshot with a text")
    p.add_argument("--snapshot-root", type=Path, required=True)
    p.add_argument("--text", required=True, help="embedded as a note whose title is the text")
    p.add_argument("--content", default="", help="optional note content")
    p.add_argument("--hashtags", default="", help="comma-separated hashtags")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--notes", type=Path, help="notes Parquet, to print titles")
    p.add_argument("--name", default=None)
    return parser


def _embed_config(args):
    from indexing.embed import EmbedConfig
    return EmbedConfig(shard_size=args.shard_size, batch_size=args.batch_size, precision=args.precision,
                       incremental=args.incremental, progress=not args.no_progress)


def _index_config(args):
    from indexing.build import IndexConfig
    return IndexConfig(index_type=args.index_type, nlist=args.nlist, use_gpu=not args.no_gpu)


def _titles(notes_path):
    if not notes_path:
        return {}
    from notellm.contracts import NOTES, read_table
    t = read_table(notes_path, NOTES, columns=["note_id", "title"])
    return dict(zip(t.column("note_id").to_pylist(), t.column("title").to_pylist()))


def _print_hits(hits, titles):
    for rank, (nid, score) in enumerate(hits, 1):
        line = {"rank": rank, "note_id": nid, "score": round(float(score), 6)}
        if titles:
            line["title"] = titles.get(nid)
        emit(json.dumps(line, ensure_ascii=False))


def cmd_embed(args) -> int:
    from indexing import embed, pipeline
    model_dir = pipeline.resolve_model_dir(args.model, args.models_root)
    config = _embed_config(args)
    if args.finalize:
        from notellm.contracts import NOTES, read_table
        from notellm.encoder import SIDECAR, EncoderConfig
        enc = EncoderConfig.from_json(model_dir / SIDECAR)
        plan, _ = embed.make_plan(read_table(args.notes, NOTES), enc.prompt_config, config.shard_size)
        embed.finalize(args.emb_root, enc.model_id, plan)
        emit(json.dumps({"finalized": str(args.emb_root / enc.model_id), "notes": len(plan.note_ids)}))
        return 0
    stats = pipeline.run_embed(model_dir, args.notes, args.emb_root, config, args.num_procs, args.rank,
                               args.world_size)
    emit(json.dumps({"emb_dir": str(args.emb_root), "model_dir": str(model_dir), **stats}))
    return 0


def cmd_build(args) -> int:
    import faiss

    from indexing import build, pipeline
    from notellm.contracts import IDS, write_table
    model_dir = pipeline.resolve_model_dir(args.model, args.models_root)
    _, ids, vecs, enc = pipeline.load_corpus_vectors(model_dir, args.notes, args.emb_root)
    built = build.build_index(ids, vecs, _index_config(args))
    args.out.mkdir(parents=True, exist_ok=True)
    faiss.write_index(built.index, str(args.out / "index.faiss"))
    write_table(built.ids, args.out / "ids.parquet", IDS)
    info = {"out": str(args.out), "model_id": enc.model_id, "num_vectors": len(ids), "index": built.description,
            "build_seconds": round(built.build_seconds, 3), "on_gpu": built.on_gpu}
    (args.out / "build.json").write_text(json.dumps(info, indent=2))
    emit(json.dumps(info))
    return 0


def cmd_publish(args) -> int:
    from indexing import pipeline
    from indexing.gate import GateConfig
    model_dir = pipeline.resolve_model_dir(args.model, args.models_root)
    config = pipeline.NightlyConfig(embed=_embed_config(args), index=_index_config(args),
                                    gate=GateConfig(min_ann_recall=args.min_ann_recall,
                                                    max_recall_drop=args.max_recall_drop),
                                    keep=args.keep, num_procs=args.num_procs)
    result = pipeline.run_nightly(notes_path=args.notes, model_dir=model_dir, emb_root=args.emb_root,
                                  snapshot_root=args.snapshot_root, date=args.date or pipeline.today(),
                                  config=config, pairs_path=args.test_pairs, pool_path=args.pool)
    emit(json.dumps(result))
    return 0


def cmd_rollback(args) -> int:
    from indexing.publish import rollback
    emit(json.dumps(rollback(args.snapshot_root, args.to)))
    return 0


def cmd_info(args) -> int:
    from indexing.publish import list_snapshots
    from indexing.snapshot import Snapshot, current_name
    snap = Snapshot.open(args.snapshot_root, args.name, verify=not args.no_verify)
    emit(json.dumps({"current": current_name(args.snapshot_root), "opened": snap.name,
                      "snapshots": [s["name"] for s in list_snapshots(args.snapshot_root)],
                      "manifest": snap.info()}))
    return 0


def cmd_neighbors(args) -> int:
    from indexing.snapshot import Snapshot
    snap = Snapshot.open(args.snapshot_root, args.name)
    _print_hits(snap.neighbors(args.note_id, args.k), _titles(args.notes))
    return 0


def cmd_search(args) -> int:
    from indexing.pipeline import load_encoder
    from indexing.snapshot import Snapshot
    snap = Snapshot.open(args.snapshot_root, args.name)
    encoder = load_encoder(Path(snap.info()["model"]["path"]))
    if encoder.config.model_id != snap.info()["model"]["model_id"]:
        raise RuntimeError(f"model at {snap.info()['model']['path']} is {encoder.config.model_id}, "
                           f"the snapshot was built with {snap.info()['model']['model_id']}")
    note = {"title": args.text, "content": args.content,
            "hashtags": [h.strip() for h in args.hashtags.split(",") if h.strip()]}
    vec = encoder.embed_notes([note], batch_size=1)
    ids, scores = snap.search(vec, args.k)
    _print_hits([(n, s) for n, s in zip(ids[0], scores[0]) if n is not None], _titles(args.notes))
    return 0


COMMANDS = {"embed": cmd_embed, "build": cmd_build, "publish": cmd_publish, "rollback": cmd_rollback,
            "info": cmd_info, "neighbors": cmd_neighbors, "search": cmd_search}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from indexing.gate import GateFailed
    from indexing.snapshot import SnapshotError
    from notellm.contracts import ContractError
    global _OUT
    _OUT = sys.stdout
    try:
        # Libraries (DeepSpeed's accelerator probe, tqdm, transformers) print to stdout;
        # the DAG parses our stdout as JSON lines, so send theirs to stderr.
        with contextlib.redirect_stdout(sys.stderr):
            return COMMANDS[args.cmd](args)
    except GateFailed as exc:
        print(f"quality gate failed: {exc}", file=sys.stderr)
        return EXIT_GATE_FAILED
    except (ContractError, SnapshotError, FileNotFoundError, KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
