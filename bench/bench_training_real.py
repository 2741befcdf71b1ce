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

One JSON result line on stdout (notellm.cli contract): the report, also written
to ``<work>/report.json``; the stages' own output goes to stderr.
``{"skipped": ...}`` when the data is absent.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))   # run as a file: the repository's packages are not installed

from notellm import cli  # noqa: E402
from notellm.config import option  # noqa: E402

log = logging.getLogger(__name__)

SHARED = REPO.parent / "shared" / "data"
TRAIN_RUN_DATE, TRAIN_WINDOW_DAYS = "2015-12-31", 2283
TEST_RUN_DATE, TEST_WINDOW_DAYS = "2024-03-21", 3003


@dataclasses.dataclass
class BenchTrainingRealConfig:
    """Real-data NoteLLM run: Stack Exchange events -> mined pairs -> time split -> training -> Recall@K."""

    work: Path = option(Path("/tmp/notellm-train-real"), help="work directory; finished stages in it are reused")
    steps: int = option(30, help="training steps")
    batch_pairs: int = option(8, help="pairs per training step")
    lr: float = option(1e-4, help="peak learning rate")
    warmup: int = option(3, help="learning-rate warm-up steps")
    template: str = option("v2-short", choices=["v1-paper", "v2-short"], help="prompt template version")
    eval_pairs: int = option(200, help="random test pairs to evaluate (0 = all)")
    pool_sample: int = option(600, help="pool size with --eval-pairs")
    ks: list[int] = option(default_factory=lambda: [10, 50, 100, 1000], help="the K of Recall@K")

    def validate(self) -> None:
        if self.steps < 1 or self.batch_pairs < 1 or self.eval_pairs < 0 or self.pool_sample < 0:
            raise ValueError("--steps and --batch-pairs must be >= 1, --eval-pairs and --pool-sample >= 0")


def run_stage(name: str, cmd: list[str], done: Path, report: dict, timer: cli.Timer) -> None:
    """Run one CLI stage unless ``done`` exists; record the command and wall time."""
    entry = {"command": " ".join(cmd)}
    if done.exists():
        entry["reused"] = True
        log.info("[%s] reused: %s exists", name, done)
    else:
        t = time.perf_counter()
        log.info("[%s] %s", name, entry["command"])
        with timer.phase(name):   # the stage's own stdout (its result line) is our stderr while we run
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


def run(args: BenchTrainingRealConfig, timer: cli.Timer) -> dict:
    data = SHARED / "stackexchange"
    if not data.exists():
        log.warning("skip: %s absent", data)
        return {"skipped": f"{data} absent"}
    py, w = sys.executable, args.work
    w.mkdir(parents=True, exist_ok=True)
    se, notes = w / "se", w / "se" / "notes" / "notes.parquet"
    report: dict = {"machine": "2-core x86_64 CPU (AVX2, no native bf16), 24 GiB, no GPU", "stages": {}}
    run_stage("adapter", [py, "-m", "jobs.sources.stackexchange", "--data", str(data), "--sites", "all",
                          "--out", str(se)], se / "_SUCCESS", report, timer)
    for name, day, days in (("mine_train", TRAIN_RUN_DATE, TRAIN_WINDOW_DAYS),
                            ("mine_test", TEST_RUN_DATE, TEST_WINDOW_DAYS)):
        run_stage(name, [py, "-m", "jobs.cooccurrence", "--events", str(se / "events"), "--notes", str(notes),
                         "--out", str(w / "pairs"), "--quarantine-out", str(w / "q"), "--run-date", day,
                         "--window-days", str(days), "--engagement", "--allow-missing-days", "--max-gap-hours", "0"],
                  w / "pairs" / f"dt={day}" / "_SUCCESS", report, timer)
    run_stage("split", [py, "-m", "jobs.split", "--pairs", str(w / "pairs"), "--train-date", TRAIN_RUN_DATE,
                        "--test-date", TEST_RUN_DATE, "--notes", str(notes), "--events", str(se / "events"),
                        "--out", str(w / "split"), "--allow-missing-days"], w / "split" / "_SUCCESS", report, timer)
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
                        "--set", "log_every=5"], run_dir / "metrics.json", report, timer)
    eval_json = run_dir / "eval.json"
    cmd = [py, "-m", "training.evaluate", "--model", str(run_dir / "model"),
           "--pairs", str(test_pairs), "--pool", str(pool), "--notes", str(notes),
           "--backbone-baseline", "--ks", ",".join(map(str, args.ks)), "--out", str(eval_json)]
    run_stage("evaluate", cmd, eval_json, report, timer)

    for key, path in (("se", se / "_stats.json"), ("pairs_train", w / "pairs" / f"dt={TRAIN_RUN_DATE}" / "_stats.json"),
                      ("pairs_test", w / "pairs" / f"dt={TEST_RUN_DATE}" / "_stats.json"),
                      ("split", w / "split" / "_stats.json"), ("train", run_dir / "metrics.json"),
                      ("eval", eval_json)):
        stats = json.loads(path.read_text())
        if key == "se":
            stats = {k: v for k, v in stats.items() if k != "sites"}
        report[key] = stats
    (w / "report.json").write_text(json.dumps(report, indent=2, default=str))
    log.info("report written to %s", w / "report.json")
    return report


def main(argv=None) -> int:
    return cli.main(run, BenchTrainingRealConfig, argv=argv, prog="bench/bench_training_real.py")


if __name__ == "__main__":
    sys.exit(main())
