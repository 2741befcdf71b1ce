"""Real-data NoteLLM run: Stack Exchange events -> mined pairs (the project's Spark
job, two time windows) -> time split -> SmolLM2 training on this CPU -> Recall@K and
in-batch accuracy of the trained model vs the untrained backbone on the test window.

    flock /tmp/notellm-heavy.lock .venv/bin/python bench/bench_training_real.py \\
        [--work /tmp/notellm-train-real] [--steps 30] [--batch-pairs 8] [--lr 1e-4] [--warmup 3] \\
        [--template v2-short] [--eval-pairs 200] [--pool-sample 600]

Every stage is the project's own CLI, run as a subprocess with the exact arguments
recorded in ``<work>/report.json``; a stage whose output already carries
``_SUCCESS`` (or ``model/``, ``eval.json``) is reused, so a rerun continues where
it stopped.

Windows (the dumps span 2009-2024, with most events before 2016):
train = 2009-10-01 .. 2015-12-31 (run date 2015-12-31, 2283 days), test =
2016-01-01 .. 2024-03-21 (run date 2024-03-21, 3003 days), engagement event
types as view and click, ``--max-gap-hours 0`` (a co-visit anywhere in the
window counts, because engagement on Q&A sites is sparse).

Evaluation sample: the split's test set has ~25k pairs over a ~3.5k-note pool and
embedding runs at ~3 notes/s here (fp32, see "Embedding and index"), so by
default the evaluation uses a seeded random sample of ``--eval-pairs`` test pairs
and a pool of ``--pool-sample`` notes = their endpoints + a seeded random sample
of the other pool notes (written as their own PAIRS/POOL partitions under
``<work>/eval_sample``). Recall@K on a smaller pool is higher than on the full
pool (Recall@K with K >= pool size is 1 by construction); the trained-vs-
untrained comparison uses the same pairs and pool.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
TRAIN_RUN_DATE, TRAIN_WINDOW_DAYS = "2015-12-31", 2283
TEST_RUN_DATE, TEST_WINDOW_DAYS = "2024-03-21", 3003


def run_stage(name: str, cmd: list[str], done: Path, report: dict) -> None:
    """Run one CLI stage unless ``done`` exists; record the command and wall time."""
    entry = {"command": " ".join(cmd)}
    if done.exists():
        entry["reused"] = True
    else:
        t = time.perf_counter()
        print(f"[{name}] {entry['command']}", flush=True)
        subprocess.run(cmd, cwd=REPO, check=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        entry["wall_s"] = round(time.perf_counter() - t, 1)
    report["stages"][name] = entry


def sample_eval_set(split_dir: Path, out: Path, n_pairs: int, pool_size: int, seed: int = 0) -> dict:
    """A seeded random sample of the test pairs and a pool = their endpoints + random other pool notes."""
    from notellm.contracts import PAIRS, POOL, mark_success, read_table, write_table
    pairs = read_table(split_dir / "test_pairs", PAIRS)
    pool = read_table(split_dir / "pool", POOL).column("note_id").to_pylist()
    rng = np.random.default_rng(seed)
    take = np.sort(rng.permutation(pairs.num_rows)[:n_pairs])
    sample = pairs.take(pa.array(take)).select(PAIRS.arrow_schema.names).cast(PAIRS.arrow_schema)
    endpoints = set(sample.column("src_note_id").to_pylist()) | set(sample.column("dst_note_id").to_pylist())
    others = sorted(set(pool) - endpoints)
    extra = [others[i] for i in rng.permutation(len(others))[: max(0, pool_size - len(endpoints))]]
    chosen = sorted(endpoints | set(extra))
    pairs_part, pool_part = out / "test_pairs" / f"dt={TEST_RUN_DATE}", out / "pool" / f"dt={TEST_RUN_DATE}"
    write_table(sample, pairs_part / "pairs.parquet", PAIRS)
    mark_success(pairs_part, {"pairs": sample.num_rows, "of": pairs.num_rows, "seed": seed})
    write_table(pa.Table.from_pylist([{"note_id": n} for n in chosen], schema=POOL.arrow_schema),
                pool_part / "pool.parquet", POOL)
    mark_success(pool_part, {"notes": len(chosen), "endpoints": len(endpoints), "of": len(pool), "seed": seed})
    return {"test_pairs": sample.num_rows, "test_pairs_full": pairs.num_rows, "pool": len(chosen),
            "pool_endpoints": len(endpoints), "pool_full": len(pool), "seed": seed,
            "pairs_dir": str(pairs_part), "pool_dir": str(pool_part)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/notellm-train-real")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-pairs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--template", default="v2-short", choices=["v1-paper", "v2-short"])
    ap.add_argument("--eval-pairs", type=int, default=200, help="random test pairs to evaluate (0 = all)")
    ap.add_argument("--pool-sample", type=int, default=600, help="pool size with --eval-pairs")
    ap.add_argument("--ks", default="10,50,100,1000")
    args = ap.parse_args()
    data = SHARED / "stackexchange"
    if not data.exists():
        print(f"skip: {data} absent")
        return 0
    py, w = sys.executable, Path(args.work)
    w.mkdir(parents=True, exist_ok=True)
    se, notes = w / "se", w / "se" / "notes" / "notes.parquet"
    report: dict = {"machine": "2-core x86_64 CPU (AVX2, no native bf16), 24 GiB, no GPU", "stages": {}}
    run_stage("adapter", [py, "-m", "jobs.sources.stackexchange", "--data", str(data), "--sites", "all",
                          "--out", str(se)], se / "_SUCCESS", report)
    for name, day, days in (("mine_train", TRAIN_RUN_DATE, TRAIN_WINDOW_DAYS),
                            ("mine_test", TEST_RUN_DATE, TEST_WINDOW_DAYS)):
        run_stage(name, [py, "-m", "jobs.cooccurrence", "--events", str(se / "events"), "--notes", str(notes),
                         "--out", str(w / "pairs"), "--quarantine-out", str(w / "q"), "--run-date", day,
                         "--window-days", str(days), "--engagement", "--allow-missing-days", "--max-gap-hours", "0"],
                  w / "pairs" / f"dt={day}" / "_SUCCESS", report)
    run_stage("split", [py, "-m", "jobs.split", "--pairs", str(w / "pairs"), "--train-date", TRAIN_RUN_DATE,
                        "--test-date", TEST_RUN_DATE, "--notes", str(notes), "--events", str(se / "events"),
                        "--out", str(w / "split"), "--allow-missing-days"], w / "split" / "_SUCCESS", report)
    test_pairs, pool = w / "split" / "test_pairs", w / "split" / "pool"
    if args.eval_pairs:
        report["eval_sample"] = sample_eval_set(w / "split", w / "eval_sample", args.eval_pairs, args.pool_sample)
        test_pairs, pool = Path(report["eval_sample"]["pairs_dir"]), Path(report["eval_sample"]["pool_dir"])
    run_dir = w / f"run-{args.template}-{args.steps}"
    run_stage("train", [py, "-m", "training.train", "--set", "backbone=smollm2",
                        "--set", f"pairs={w / 'split' / 'train_pairs'}", "--set", f"notes={notes}",
                        "--set", f"output_dir={run_dir}", "--set", f"max_steps={args.steps}",
                        "--set", f"batch_pairs={args.batch_pairs}", "--set", f"lr={args.lr}",
                        "--set", f"warmup_steps={args.warmup}",
                        "--set", f"template_version={args.template}", "--set", "save_every=20",
                        "--set", "log_every=5"], run_dir / "metrics.json", report)
    eval_json = run_dir / "eval.json"
    cmd = [py, "-m", "training.evaluate", "--model", str(run_dir / "model"),
           "--pairs", str(test_pairs), "--pool", str(pool), "--notes", str(notes),
           "--backbone-baseline", "--ks", args.ks, "--out", str(eval_json)]
    run_stage("evaluate", cmd, eval_json, report)

    for key, path in (("se", se / "_stats.json"), ("pairs_train", w / "pairs" / f"dt={TRAIN_RUN_DATE}" / "_stats.json"),
                      ("pairs_test", w / "pairs" / f"dt={TEST_RUN_DATE}" / "_stats.json"),
                      ("split", w / "split" / "_stats.json"), ("train", run_dir / "metrics.json"),
                      ("eval", eval_json)):
        stats = json.loads(path.read_text())
        if key == "se":
            stats = {k: v for k, v in stats.items() if k != "sites"}
        report[key] = stats
    (w / "report.json").write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
