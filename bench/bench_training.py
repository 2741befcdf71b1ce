"""Training benchmark: SmolLM2-135M NoteLLM step throughput on this CPU
(fp32 vs bf16 autocast, v1-paper vs v2-short prompts, MFU) and a short real
training run on Stack Exchange notes.

    flock /tmp/notellm-heavy.lock .venv/bin/python bench/bench_training.py [--steps 2] [--real-steps 40]
        [--batch-pairs 16] [--bf16-batch-pairs 4]

The real run on pairs mined by the project's Spark job (two time windows, time
split) is bench/bench_training_real.py. Pairs for the quick real run here: the
script builds related pairs from the human-made Stack Exchange PostLinks
(RELATED_LINKS from ``python -m jobs.sources.stackexchange``) and holds out a
note-disjoint 25% as the test pairs. That is a different relevance signal
from co-occurrence; the numbers show that the training loop learns, not the
paper's setting.

One JSON result line on stdout (notellm.cli contract): the report, with one row
per throughput configuration under ``"steps"`` (each also logged to stderr as it
finishes) and the real run under ``"real_run"``; also written to
``<work>/report.json``. ``{"skipped": ...}`` when the data is absent.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))   # run as a file: the repository's packages are not installed

from notellm import cli  # noqa: E402
from notellm.config import option  # noqa: E402

log = logging.getLogger(__name__)

SHARED = REPO.parent / "shared" / "data"
SITES = ["beer.stackexchange.com", "cardano.stackexchange.com", "coffee.meta.stackexchange.com",
         "bicycles.meta.stackexchange.com", "dba.meta.stackexchange.com"]


@dataclasses.dataclass
class BenchTrainingConfig:
    """Training benchmark: NoteLLM step throughput on this CPU and a short real training run."""

    steps: int = option(2, help="timed steps per throughput configuration (after one untimed warm-up step)")
    batch_pairs: int = option(16, help="pairs per step of the fp32 throughput runs (both templates)")
    bf16_batch_pairs: int = option(4, help="batch for the bf16-vs-fp32 step ratio and the bf16 loss difference")
    real_steps: int = option(40, help="steps of the real training run on the PostLinks pairs (0: no real run)")
    real_batch_pairs: int = option(8, help="pairs per step of the real training run")
    work: Path = option(Path("/tmp/notellm-bench-training"), help="work directory (reused between runs)")
    skip_throughput: bool = option(False, help="skip prompt lengths, matmul peaks, loss difference and step timing")
    threads: int = option(2, help="torch CPU threads")

    def validate(self) -> None:
        if min(self.steps, self.batch_pairs, self.bf16_batch_pairs, self.real_batch_pairs) < 1:
            raise ValueError("--steps, --batch-pairs, --bf16-batch-pairs and --real-batch-pairs must be >= 1")
        if self.real_steps < 0:
            raise ValueError("--real-steps must be >= 0")


def os_cpu_count() -> int:
    return os.cpu_count() or 0


def cpu_bf16_support() -> str:
    """What the CPU offers for bf16 matmuls (emulated bf16 is much slower than fp32)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "flags unknown"
    native = sorted(flags & {"avx512_bf16", "amx_bf16"})
    base = "AVX512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{base}, native bf16: {', '.join(native)}" if native else f"{base}, no native bf16"


def matmul_peak(dtype, n=2048, reps=5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - t)


def step_timing(encoder_dir, notes, batch_pairs, template, bf16, steps):
    from notellm.encoder import NoteEncoder
    from training.data import assign_tasks
    from training.model import NoteLLMTrainModel

    torch.manual_seed(0)
    enc = NoteEncoder.build(encoder_dir, template_version=template)
    model = NoteLLMTrainModel(enc)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    batch_notes = notes[:2 * batch_pairs]
    times, losses, tokens = [], [], 0
    for step in range(steps + 1):
        ex = assign_tasks(batch_notes, 0.4, 0, step)
        batch = enc.collate([enc.prompts.encode(e.note, e.task, e.hashtags_out) for e in ex])
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(**batch)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        if step:  # step 0 is warm-up
            times.append(time.perf_counter() - t)
            tokens += int(batch["attention_mask"].sum())
        losses.append((out.l_cl.item(), out.l_gen.item()))
    params = sum(p.numel() for p in enc.lm.parameters())
    sec = float(np.mean(times))
    return {"template": template, "bf16_autocast": bf16, "step_s": sec, "samples_per_s": 2 * batch_pairs / sec,
            "tokens_per_s": tokens / sum(times), "tokens_per_step": tokens / len(times), "params": params,
            "first_step_losses": losses[0]}


def prompt_lengths(encoder_dir, notes):
    from notellm.encoder import NoteEncoder
    out = {}
    for template in ("v1-paper", "v2-short"):
        enc = NoteEncoder.build(encoder_dir, template_version=template)
        inf = [len(enc.prompts.encode(n, with_output=False).input_ids) for n in notes]
        full = [len(enc.prompts.encode(n).input_ids) for n in notes]
        out[template] = {"inference_tokens_mean": float(np.mean(inf)), "training_tokens_mean": float(np.mean(full))}
    return out


def loss_difference(encoder_dir, notes, batch_pairs):
    from notellm.encoder import NoteEncoder
    from training.data import assign_tasks
    from training.model import NoteLLMTrainModel
    enc = NoteEncoder.build(encoder_dir)
    model = NoteLLMTrainModel(enc).eval()
    ex = assign_tasks(notes[:2 * batch_pairs], 0.4, 0, 0)
    batch = enc.collate([enc.prompts.encode(e.note, e.task, e.hashtags_out) for e in ex])
    with torch.no_grad():
        f32 = model(**batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            b16 = model(**batch)
    cos = torch.nn.functional.cosine_similarity(torch.cat([f32.emb_a, f32.emb_b]),
                                                torch.cat([b16.emb_a, b16.emb_b])).min().item()
    return {"l_cl_fp32": f32.l_cl.item(), "l_cl_bf16": b16.l_cl.item(), "l_gen_fp32": f32.l_gen.item(),
            "l_gen_bf16": b16.l_gen.item(), "min_embedding_cosine": cos}


def build_link_pairs(work: Path):
    """NOTES + note-disjoint train/test PAIRS partitions from PostLinks (see module docstring)."""
    from notellm.contracts import PAIRS, POOL, RELATED_LINKS, mark_success, read_table, write_table
    out = work / "se"
    if not (out / "notes" / "_SUCCESS").exists():
        subprocess.run([sys.executable, "-m", "jobs.sources.stackexchange", "--data", str(SHARED / "stackexchange"),
                        "--sites", *SITES, "--out", str(out)], cwd=REPO, check=True, capture_output=True)
    links = read_table(out / "related_links", RELATED_LINKS)
    pairs = sorted({tuple(sorted(p)) for p in zip(links.column("src_note_id").to_pylist(),
                                                  links.column("dst_note_id").to_pylist()) if p[0] != p[1]})
    rng = np.random.default_rng(0)
    order = rng.permutation(len(pairs))
    test, test_notes = [], set()
    for i in order[: len(pairs) // 4]:
        test.append(pairs[i])
        test_notes.update(pairs[i])
    train = [p for p in pairs if p not in test and not (set(p) & test_notes)]
    day = dt.date(2026, 11, 25)

    def write(name, rows):
        d = work / name / f"dt={day}"
        tab = pa.Table.from_pylist([{"src_note_id": a, "dst_note_id": b, "score": 1.0, "n_users": 0, "rank": 1,
                                     "window_start": day, "window_end": day} for a, b in rows],
                                   schema=PAIRS.arrow_schema)
        write_table(tab, d / "pairs.parquet", PAIRS)
        mark_success(d, {"pairs": len(rows), "source": "PostLinks (benchmark only)"})
        return d
    pool_dir = work / "pool" / f"dt={day}"
    write_table(pa.Table.from_pylist([{"note_id": n} for n in sorted(test_notes)], schema=POOL.arrow_schema),
                pool_dir / "pool.parquet", POOL)
    mark_success(pool_dir, {"notes": len(test_notes)})
    return write("pairs_train", train), write("pairs_test", test), pool_dir, out / "notes", len(train), len(test)


def run(args: BenchTrainingConfig, timer: cli.Timer) -> dict:
    if not (SHARED / "stackexchange").exists():
        log.warning("skip: %s absent", SHARED / "stackexchange")
        return {"skipped": f"{SHARED / 'stackexchange'} absent"}
    from notellm.backbone import ensure_default_backbone
    from training.data import load_notes
    torch.set_num_threads(args.threads)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    with timer.phase("prepare"):
        backbone = ensure_default_backbone()
        train_dir, test_dir, pool_dir, notes_dir, n_train, n_test = build_link_pairs(work)
        notes = list(load_notes(notes_dir).values())
    rng = np.random.default_rng(0)
    sample = [notes[i] for i in rng.permutation(len(notes))[:64]]
    report = {"machine": f"{os_cpu_count()}-core x86_64 CPU ({cpu_bf16_support()}), no GPU", "torch": torch.__version__}
    if not args.skip_throughput:
        with timer.phase("throughput"):
            report["prompt_lengths"] = prompt_lengths(backbone, sample)
            report["peak_gflops"] = {"fp32": matmul_peak(torch.float32) / 1e9,
                                     "bf16": matmul_peak(torch.bfloat16, reps=2) / 1e9}
            report["loss_difference_bf16"] = loss_difference(backbone, sample, args.bf16_batch_pairs)
            log.info("%s", json.dumps(report))
            # fp32 at the full batch for both templates; bf16 autocast (emulated, ~9x slower on a CPU
            # without native bf16) at a small batch next to fp32 at the same batch, so the ratio is
            # measured within one run without spending the budget on emulated bf16.
            plan = [("v1-paper", False, args.batch_pairs), ("v2-short", False, args.batch_pairs),
                    ("v1-paper", False, args.bf16_batch_pairs), ("v1-paper", True, args.bf16_batch_pairs)]
            runs = []
            for template, bf16, batch_pairs in plan:
                r = step_timing(backbone, sample, batch_pairs, template, bf16, args.steps)
                r["batch_pairs"] = batch_pairs
                peak = report["peak_gflops"]["bf16" if bf16 else "fp32"] * 1e9
                peak_fp32 = report["peak_gflops"]["fp32"] * 1e9
                r["mfu"] = 6 * r["params"] * r["tokens_per_s"] / peak
                r["mfu_vs_fp32_peak"] = 6 * r["params"] * r["tokens_per_s"] / peak_fp32
                runs.append(r)
                log.info("%s", json.dumps(r))
            report["steps"] = runs
    if args.real_steps:
        cfg = {"backbone": str(backbone), "pairs": str(train_dir), "notes": str(notes_dir),
               "output_dir": str(work / "run"), "batch_pairs": args.real_batch_pairs, "lr": 5e-5,
               "warmup_steps": 4, "max_steps": args.real_steps, "save_every": args.real_steps, "log_every": 5,
               "cpu_autocast_bf16": False}  # emulated bf16 is slower than fp32 on AVX2 CPUs
        (work / "real.json").write_text(json.dumps(cfg))
        t = time.perf_counter()
        with timer.phase("real_train"):
            subprocess.run([sys.executable, "-m", "training.train", "--config", str(work / "real.json")],
                           cwd=REPO, check=True)   # its stdout is our stderr while the command runs
        train_s = time.perf_counter() - t
        with timer.phase("real_evaluate"):
            subprocess.run([sys.executable, "-m", "training.evaluate", "--model", str(work / "run" / "model"),
                            "--pairs", str(test_dir), "--pool", str(pool_dir), "--notes", str(notes_dir),
                            "--backbone-baseline", "--ks", "1,10,50", "--batch-pairs", "16",
                            "--out", str(work / "eval.json")], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        ev = json.loads((work / "eval.json").read_text())
        report["real_run"] = {"train_pairs": n_train, "test_pairs": n_test, "steps": args.real_steps,
                              "batch_pairs": args.real_batch_pairs, "train_wall_s": train_s,
                              "trained": {k: ev["model"][k]
                                          for k in ("recall", "in_batch_accuracy", "in_batch_chance")},
                              "untrained": {k: ev["backbone"][k] for k in ("recall", "in_batch_accuracy")},
                              "pool_size": ev["pool_size"]}
    (work / "report.json").write_text(json.dumps(report, indent=2))
    log.info("report written to %s", work / "report.json")
    return report


def main(argv=None) -> int:
    return cli.main(run, BenchTrainingConfig, argv=argv, prog="bench/bench_training.py")


if __name__ == "__main__":
    sys.exit(main())
