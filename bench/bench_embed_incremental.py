"""Cost of a nightly incremental embedding run against a full run (issue 16: goal <= 5% of both).

    flock /tmp/notellm-heavy.lock .venv/bin/python bench/bench_embed_incremental.py [--notes 1000] \
        [--backbone smollm2|tiny] [--change 0.01]

A full run (``--no-incremental``) embeds ``--notes`` notes into a fresh store;
then ``--change`` of the notes change, mixed evenly: edits (new title),
deletes and inserts (new ids); an incremental run brings the store in line.
Reported: wall time and bytes written of each run, and each as a share of the
full run, plus the check that the incremental store equals a full run of the
changed notes (max |difference| of vectors). Notes: real Stack Exchange
questions (beer + coffee) via ``jobs.sources.stackexchange`` from
../shared/data, or synthetic notes (``--source synthetic``, or when the data is
absent). One JSON result line (notellm.cli contract).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from notellm import cli
from notellm.config import option

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "stackexchange"
SITES = ["beer.stackexchange.com", "coffee.stackexchange.com"]
sys.path.insert(0, str(REPO))   # tests.support: synthetic notes, the tiny model


@dataclasses.dataclass
class BenchIncrementalConfig:
    """Incremental vs full embedding run: time and bytes written."""

    notes: int = option(1000, help="notes of the full run")
    change: float = option(0.01, help="fraction of notes changed (edits, deletes, inserts in equal parts)")
    backbone: str = option("smollm2", choices=("smollm2", "tiny"), help="SmolLM2-135M or a tiny random Llama")
    source: str = option("stackexchange", choices=("stackexchange", "synthetic"), help="where the notes come from")
    threads: int = option(2, help="torch CPU threads")
    work: Path | None = option(None, help="work directory (null: a new temporary one)")
    seed: int = option(0, help="seed of the sample and the changes")


def _rows(args: BenchIncrementalConfig, work: Path) -> tuple[list[dict], str]:
    if args.source == "stackexchange" and DATA.is_dir():
        from jobs.sources.stackexchange import convert
        from notellm.contracts import NOTES, read_table
        convert(DATA, work / "se", SITES)
        rows = read_table(work / "se" / "notes" / "notes.parquet", NOTES).to_pylist()
        random.Random(args.seed).shuffle(rows)
        if len(rows) >= args.notes:
            return rows[:args.notes], "stackexchange " + "+".join(s.split(".")[0] for s in SITES)
        log.warning("only %d Stack Exchange notes; using synthetic notes", len(rows))
    from tests.support.notes import make_notes
    return make_notes(args.notes, seed=args.seed), "synthetic"


def _change(rows: list[dict], fraction: float, rng: random.Random) -> tuple[list[dict], dict]:
    k = max(3, round(len(rows) * fraction))
    picked = rng.sample(range(len(rows)), 2 * (k // 3) + k % 3)
    edits, deletes = picked[:k // 3 + k % 3], set(picked[k // 3 + k % 3:])
    out = [dict(r) for r in rows]
    for i in edits:
        out[i]["title"] = out[i]["title"] + " (edited)"
    inserts = [dict(rows[rng.randrange(len(rows))], note_id=f"new:{j}", title=f"new note {j}")
               for j in range(k // 3)]
    out = [r for i, r in enumerate(out) if i not in deletes] + inserts
    return out, {"edits": len(edits), "deletes": len(deletes), "inserts": len(inserts)}


def _model(args: BenchIncrementalConfig, work: Path) -> Path:
    from notellm.backbone import ensure_default_backbone
    if args.backbone == "tiny":
        from tests.support.models import tiny_model
        return tiny_model(work / "tiny", dim=64)
    from notellm.encoder import NoteEncoder
    NoteEncoder.build(ensure_default_backbone(), dim=128).save(work / "model")
    return work / "model"


def _vectors(emb_root: Path, model_id: str) -> tuple[list, np.ndarray]:
    from indexing.store import open_store
    parts = list(open_store(emb_root, model_id).batches())
    ids = [x for a, _ in parts for x in a.to_pylist()]
    return ids, np.concatenate([v for _, v in parts])


def run(args: BenchIncrementalConfig, timer: cli.Timer) -> dict:
    import torch

    from indexing.config import EmbedConfig
    from indexing.launch import embed_store
    from tests.support.notes import write_notes
    torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-embed-inc-"))
    rng = random.Random(args.seed)
    with timer.phase("prepare"):
        rows, source = _rows(args, work)
        model_dir = _model(args, work)
        write_notes(rows, work / "day1.parquet")
        changed, mix = _change(rows, args.change, rng)
        write_notes(changed, work / "day2.parquet")
    cfg = EmbedConfig(progress=False)
    with timer.phase("full"):
        t = time.perf_counter()
        full = embed_store(model_dir, work / "day1.parquet", work / "emb", dataclasses.replace(cfg, incremental=False))
        full_s = time.perf_counter() - t
    with timer.phase("incremental"):
        t = time.perf_counter()
        inc = embed_store(model_dir, work / "day2.parquet", work / "emb", cfg)
        inc_s = time.perf_counter() - t
    with timer.phase("check"):
        ref = embed_store(model_dir, work / "day2.parquet", work / "ref", dataclasses.replace(cfg, incremental=False))
        a_ids, a = _vectors(work / "emb", full["model_id"])
        b_ids, b = _vectors(work / "ref", ref["model_id"])
    return {
        "source": source, "backbone": args.backbone, "notes_full": len(rows), "notes_after": len(changed),
        "changes": mix, "num_buckets": full["num_buckets"], "torch_threads": torch.get_num_threads(),
        "full_s": round(full_s, 3), "full_bytes_written": full["bytes_written"], "full_embedded": full["embedded"],
        "full_notes_per_s": full["notes_per_s"],
        "incremental_s": round(inc_s, 3), "incremental_bytes_written": inc["bytes_written"],
        "incremental_embedded": inc["embedded"], "incremental_deleted": inc["deleted"],
        "incremental_buckets_written": inc["buckets_written"], "incremental_compactions": inc["compactions"],
        "time_share": round(inc_s / full_s, 5), "bytes_share": round(inc["bytes_written"] / full["bytes_written"], 5),
        "same_ids_as_full_run": a_ids == b_ids, "max_abs_diff_vs_full_run": float(np.abs(a - b).max()),
    }


def main(argv=None) -> int:
    return cli.main(run, BenchIncrementalConfig, argv=argv, prog="bench/bench_embed_incremental.py")


if __name__ == "__main__":
    sys.exit(main())
