"""The GPU quality run (issue 18) from the bundle of :mod:`evaluation.gpu_bundle`; the driver
behind ``scripts/gpu_run.sh``.

    python -m evaluation.gpu_run receive [--parts part-2]   # each device call: keep the carried part(s)
    python -m evaluation.gpu_run prepare                    # every part checked, joined, extracted; wheels
    python -m evaluation.gpu_run run --out OUTDIR           # backbone, GPU tests, one epoch, evaluation, report
    python -m evaluation.gpu_run calls                      # the device calls to issue (make gpu-run)

``run``: the SmolLM2 GGUF is converted (``notellm.backbone``), the GPU tests run
(``pytest -m gpu``, their log kept), then every system of the quality report is computed
exactly as ``evaluation.compare`` computes it, on the bundle's test set (all test pairs, the
whole pool), with the models on the GPU: NoteLLM and NoteLLM w/o CSFT are trained by
``python -m training.train`` for one full epoch of the unique-note plan
(:func:`notellm.batching.plan_epoch`; bf16 on CUDA), MiniLM is fine-tuned on the same batches
and evaluated zero-shot, BM25 as the lexical floor. A system that fails is reported and the
others go on. ``OUTDIR`` gets ``report.md`` (with a section on the run itself), ``metrics.json``
(a ``gpu_run`` block: device, phase times, GPU tests, epoch plan) and ``plots/``; its name is
the report's date label, committed as ``reports/<date>-gpu/``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from evaluation import gpu_parts, gpu_systems
from notellm import cli
from notellm.config import option
from notellm.files import atomic_write_text

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
STORE = Path("/tmp/notellm-gpu")
BUNDLE = REPO / "var" / "gpu-bundle"
KIND = "nvidia-h200"
SYSTEMS = "bm25,minilm,minilm_ft,notellm_no_csft,notellm"
# Computed in this order (the report keeps the registry's): NoteLLM first, the cheap baselines, then the rest.
PRIORITY = ("notellm", "minilm", "bm25", "minilm_ft", "notellm_no_csft", "smollm_prompteol", "notellm_short")
# Estimated seconds on one H200 (docs/operations.md, "The GPU quality run"); the log compares.
ESTIMATE_S = {"backbone": 20, "gpu_tests": 40, "context": 10, "bm25": 15, "minilm": 10,
              "minilm_ft": 35, "notellm": 140, "notellm_no_csft": 135, "report": 30}


# ------------------------------------------------------------------ receive / prepare
@dataclasses.dataclass
class ReceiveConfig:
    """Keep the bundle part(s) this device call carried (checked against their manifest)."""

    bundle: Path = option(BUNDLE, help="folder of the carried part-<k>/ folders")
    store: Path = option(STORE, help="where the parts are kept between calls (outside the repository copy)")
    parts: list[str] = option(default_factory=list, help="part names (default: every part-<k>/ present)")


def receive(cfg: ReceiveConfig, timer: cli.Timer) -> dict:
    names = cfg.parts or sorted((p.name for p in cfg.bundle.glob("part-*") if p.is_dir()),
                                key=lambda n: int(n.split("-")[1]))
    got = []
    try:
        with timer.phase("receive"):
            for name in names:
                got.append(gpu_parts.receive(cfg.bundle / name, cfg.store))
        held = gpu_parts.status(cfg.store)
    except gpu_parts.PartError as exc:
        raise cli.BadInput(str(exc)) from exc
    log.info("received %s; the store holds %s, still missing %s", got or "nothing", held["have"], held["missing"])
    return {"received": got, **held}


@dataclasses.dataclass
class PrepareConfig:
    """Check every stored part, join and extract the bundle, install its wheels."""

    store: Path = option(STORE, help="the parts' store (see receive)")
    install: bool = option(True, help="pip-install the bundle's wheels into <store>/site")


def prepare(cfg: PrepareConfig, timer: cli.Timer) -> dict:
    bundle = cfg.store / "bundle"
    try:
        with timer.phase("assemble"):
            manifest = gpu_parts.assemble(cfg.store, bundle)
    except gpu_parts.PartError as exc:
        raise cli.BadInput(str(exc)) from exc
    wheels = sorted((bundle / "wheels").glob("*.whl"))
    if cfg.install and wheels:
        with timer.phase("wheels"):
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                            "--no-cache-dir", "--upgrade", "--target", str(cfg.store / "site"), *map(str, wheels)],
                           check=True, stdout=sys.stderr)
    return {"bundle": str(bundle), "bundle_id": manifest["bundle_id"], "wheels": len(wheels),
            "site": str(cfg.store / "site"), "shims": str(bundle / "shims")}


# ------------------------------------------------------------------ run
@dataclasses.dataclass
class RunConfig:
    """On the GPU host: convert the backbone, run the GPU tests, train one epoch, evaluate, write the report."""

    out: Path = option(help="report folder (its name is the report's date label, e.g. $OUT/2026-12-08-gpu)")
    store: Path = option(STORE, help="the parts' store holding the extracted bundle/ (see prepare)")
    device: str = option("cuda", choices=("cuda", "cpu", "auto"), help="where the models run (cpu: the dry mode)")
    batch_pairs: int = option(128, help="pairs per batch (2x notes, the in-batch negatives) of every trained system")
    lr: float = option(1e-4, help="NoteLLM peak learning rate (as evaluation.compare)")
    warmup_fraction: float = option(0.05, help="NoteLLM linear warm-up as a share of the epoch's steps")
    gen_notes: int = option(24, help="held-out notes for category/hashtag generation")
    cases: int = option(12, help="queries and generations shown as cases")
    systems: str = option(SYSTEMS, help="comma-separated systems of evaluation.registry")
    gpu_tests: str = option("tests/evaluation/test_gpu_run.py", help="pytest paths run with -m gpu ('' = none)")
    budget_s: float = option(480.0, help="the run's time budget: the log says after each phase how much is left")
    deadline_s: float = option(560.0, help="a system that would end the run later than this (its estimate, or the "
                                           "first NoteLLM variant's measured time, plus the report) is skipped "
                                           "and reported, so a report always comes back within a device call's "
                                           "600 s")

    def validate(self) -> None:
        if self.batch_pairs < 1 or not 0 <= self.warmup_fraction < 1:
            raise ValueError("batch_pairs must be >= 1 and warmup_fraction in [0, 1)")


class Phases:
    """Each phase's wall time and outcome, logged against the budget."""

    def __init__(self, timer: cli.Timer, budget_s: float):
        self.timer, self.budget_s, self.t0, self.rows = timer, budget_s, time.perf_counter(), []

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def skip(self, name: str, why: str) -> None:
        log.warning("[%s] skipped: %s", name, why)
        self.rows.append({"phase": name, "estimate_s": ESTIMATE_S.get(name), "status": "skipped", "error": why,
                          "s": 0.0})

    def took(self, name: str) -> float | None:
        return next((r["s"] for r in self.rows if r["phase"] == name and r.get("status") == "ok"), None)

    @contextlib.contextmanager
    def __call__(self, name: str, keep_going: bool = False):
        t, row = time.perf_counter(), {"phase": name, "estimate_s": ESTIMATE_S.get(name)}
        self.rows.append(row)
        try:
            with self.timer.phase(name):
                yield row
            row["status"] = "ok"
        except Exception as exc:  # noqa: BLE001 - a failed system is reported, the others go on
            row.update(status="failed", error=f"{type(exc).__name__}: {exc}")
            if not keep_going:
                raise
            log.exception("[%s] failed; the run goes on without it", name)
        finally:
            row["s"] = round(time.perf_counter() - t, 1)
            log.info("[%s] %.1f s (estimate %s s); %.0f s of the %.0f s budget spent", name, row["s"],
                     row["estimate_s"], self.elapsed(), self.budget_s)


def run_gpu_tests(paths: str, log_file: Path) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rA", "-p", "no:cacheprovider", *paths.split(",")]
    with open(log_file, "w") as fh:
        proc = subprocess.run(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, timeout=180)
    lines = [ln for ln in log_file.read_text().splitlines() if ln.strip()]
    return {"command": " ".join(["python", *cmd[1:]]), "exit": proc.returncode,
            "summary": lines[-1].strip("= ") if lines else "", "log": log_file.name}


def epoch_plan(ctx, batch_pairs: int, seed: int) -> dict:
    """One epoch of the trainer's unique-note plan over the training pairs (the fine-tuned MiniLM sees the same)."""
    from evaluation import protocol
    from notellm.batching import plan_epoch

    pairs = protocol.read_train_pairs(ctx.prepared)
    plan = plan_epoch(pairs, batch_pairs, seed, 0)
    if not plan.batches:
        raise cli.BadInput(f"batch_pairs={batch_pairs}: not one full batch from {len(pairs)} pairs")
    return {"pairs": len(pairs), "steps": len(plan.batches), "batch_pairs": batch_pairs,
            "pairs_placed": len(plan.batches) * batch_pairs, "left_over": plan.left_over}


def run(cfg: RunConfig, timer: cli.Timer) -> dict:
    import torch

    from evaluation import compare
    from evaluation.cache import SystemCache
    from evaluation.report import render_report
    from evaluation.results import assemble_results

    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    if device == "cuda" and not torch.cuda.is_available():
        raise cli.BadInput("--device cuda, but torch sees no CUDA device")
    if device == "cuda":
        os.environ.setdefault("DS_ACCELERATOR", "cuda")       # DeepSpeed in training.train: never a CPU fallback
        torch.backends.cuda.matmul.allow_tf32 = True           # MiniLM (fp32) and the fp32 embedding passes
    out = cfg.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    manifest = gpu_parts.read_manifest(cfg.store / gpu_parts.MANIFEST)
    contents, bundle = manifest["contents"], cfg.store / "bundle"
    phases = Phases(timer, cfg.budget_s)
    env = gpu_systems.environment(device)
    log.info("environment: %s", env)

    with phases("backbone"):
        if contents["backbone"]["kind"] == "gguf":
            from notellm.backbone import DEFAULT_BACKBONE, ensure_default_backbone
            ensure_default_backbone()                         # the shipped GGUF -> HF folder (NOTELLM_CACHE)
            backbone = DEFAULT_BACKBONE
        else:
            backbone = str(bundle / contents["backbone"]["path"])
    tests = None
    if cfg.gpu_tests:
        with phases("gpu_tests", keep_going=True):
            tests = run_gpu_tests(cfg.gpu_tests, out / "gpu_tests.log")
            log.info("GPU tests: %s (exit %s)", tests["summary"], tests["exit"])
            if tests["exit"]:
                raise RuntimeError(f"pytest exit {tests['exit']}: {tests['summary']} (see {tests['log']})")
    with phases("context"):
        ev = contents["eval"]
        ccfg = compare.CompareConfig(data=bundle / "no-dumps", work=bundle / "work", out=out.parent, date=out.name,
                                     batch_pairs=cfg.batch_pairs, lr=cfg.lr, eval_pairs=ev["eval_pairs"],
                                     pool_size=ev["pool_size"], gen_notes=cfg.gen_notes, cases=cfg.cases,
                                     seed=ev["seed"], backbone=backbone, systems=cfg.systems)
        ccfg.validate()
        stages: dict = {}
        ctx = compare.build_context(ccfg, stages)
        epoch = epoch_plan(ctx, cfg.batch_pairs, ccfg.seed)
        epoch["warmup_steps"] = round(cfg.warmup_fraction * epoch["steps"])
        ctx.cfg = dataclasses.replace(ccfg, steps=epoch["steps"], warmup=epoch["warmup_steps"])
        log.info("one epoch: %s; test pairs %d + %d PostLinks, pool %d", epoch, len(ctx.es.cooccurrence),
                 len(ctx.es.postlinks), len(ctx.es.pool))

    systems, cache = gpu_systems.device_systems(device), SystemCache(ctx.work / "systems")
    names, computed = ctx.cfg.system_names(), {}
    for name in sorted(names, key=lambda n: PRIORITY.index(n) if n in PRIORITY else len(PRIORITY)):
        need = (name.startswith("notellm") and phases.took("notellm")) or ESTIMATE_S.get(name, 60)
        left = cfg.deadline_s - phases.elapsed() - ESTIMATE_S["report"]
        if need > left:
            phases.skip(name, f"needs about {need:.0f} s, {left:.0f} s left before the {cfg.deadline_s:.0f} s deadline")
            continue
        with phases(name, keep_going=True) as row:
            key = systems[name].cache_key(ctx)
            hit = cache.load(name, key)
            if hit is None:
                hit = systems[name].compute(ctx)
                cache.save(name, key, *hit)
            row["cost"] = hit[1].get("cost")
            computed[name] = hit
    per_system = {n: computed[n] for n in names if n in computed}      # the report's order
    with phases("report"):
        results = assemble_results(ctx, per_system, stages, phases.elapsed())
        failed = {r["phase"]: r["error"] for r in phases.rows if r.get("status") in ("failed", "skipped")}
        block = {"bundle_id": manifest["bundle_id"], "environment": env, "epoch": epoch, "gpu_tests": tests,
                 "phases": phases.rows, "failed": failed, "minilm": contents["minilm"],
                 "backbone": contents["backbone"], "not_carried": contents.get("not_carried")}
        patch_results(results, cfg, env, epoch, block)
        report = render_report(results, out)
    # the run's own section and phase times, the report phase's included
    atomic_write_text(out / "metrics.json", json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(report, report.read_text() + run_section(block))
    result = {"out": str(out), "report": str(report), "metrics": str(out / "metrics.json"),
              "systems": list(per_system), "failed": failed, "epoch": epoch,
              "gpu_tests": tests and tests["summary"], "phases_s": {r["phase"]: r["s"] for r in phases.rows}}
    if failed:
        raise cli.StageError(f"phases failed: {sorted(failed)} (the report holds the rest)", result)
    return result


def patch_results(results: dict, cfg: RunConfig, env: dict, epoch: dict, block: dict) -> None:
    """The header and settings of a GPU run (the results dict is evaluation.compare's)."""
    where = (f"{env['gpu']} ({env['gpu_memory_gib']} GiB), CUDA {env['cuda']}" if env["device"] == "cuda"
             else "CPU (dry mode)")
    results["machine"] = (f"{where}, {env['cpu_cores']} CPU cores; Python {env['python']}, torch {env['torch']}, "
                          f"transformers {env['transformers']}")
    results["command"] = (f"bash scripts/gpu_run.sh run <out>/{cfg.out.name} (bundle {block['bundle_id']}: "
                          f"python -m evaluation.gpu_bundle)")
    precision = ("bf16 weights and activations (DeepSpeed bf16, fp32 master weights); embedding and MiniLM in fp32 "
                 "with TF32 matmuls" if env["device"] == "cuda" else "fp32 (CPU dry mode)")
    results["config"].update(epochs=1, training_steps=epoch["steps"], training_pairs_seen=epoch["pairs_placed"],
                             notellm_warmup_steps=epoch["warmup_steps"], precision=precision,
                             backbone=("SmolLM2-135M-Instruct (the shipped Q4_1 GGUF, dequantised on the host)"
                                       if block["backbone"]["kind"] == "gguf"
                                       else "a Hugging Face folder from the bundle (the dry mode's tiny Llama)"),
                             minilm_weights=block["minilm"].get("dtype"))
    results["gpu_run"] = block


def run_section(block: dict) -> str:
    """The report's last section: where and how the run ran, phase by phase."""
    env, epoch, tests = block["environment"], block["epoch"], block["gpu_tests"] or {}
    lines = ["", "## The GPU run", "",
             f"Device: {env.get('gpu', 'CPU (dry mode)')}; bundle `{block['bundle_id']}` "
             "(`python -m evaluation.gpu_bundle`, run by `scripts/gpu_run.sh`).",
             f"One epoch: {epoch['steps']} steps of {epoch['batch_pairs']} pairs ({epoch['pairs_placed']} of "
             f"{epoch['pairs']} unique training pairs placed; {epoch['left_over']} could not join a batch without "
             f"repeating a note), warm-up {epoch['warmup_steps']} steps.",
             f"GPU tests (`{tests.get('command', 'not run')}`): {tests.get('summary', 'not run')}.",
             f"MiniLM weights carried as {block['minilm'].get('dtype')}"
             + (f" (cosine to the fp32 original on {block['minilm']['fidelity']['notes']} notes >= "
                f"{block['minilm']['fidelity']['min_cosine']:.6f})" if block["minilm"].get("fidelity") else "")
             + ".", "", "| phase | status | s | estimate s |", "|---|---|---:|---:|"]
    lines += [f"| {r['phase']} | {r.get('status', '?')} | {r['s']} | {r.get('estimate_s') or ''} |"
              for r in block["phases"]]
    if block.get("not_carried"):
        lines += ["", "Not carried to the host:", ""]
        lines += [f"- {name}: {why}" for name, why in block["not_carried"].items()]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ calls
@dataclasses.dataclass
class CallsConfig:
    """The device-tool calls that run the bundle on a GPU host (make gpu-run prints them)."""

    bundle: Path = option(BUNDLE, help="the parts built by python -m evaluation.gpu_bundle")
    date: str | None = option(None, help="report label date (default: today); the report goes to <date>-gpu")
    kind: str = option(KIND, help="device kind named in every call (a change of kind gives the machine back)")


def calls(cfg: CallsConfig, timer: cli.Timer) -> dict:
    try:
        manifest = gpu_parts.read_manifest(cfg.bundle / "part-1" / gpu_parts.MANIFEST)
    except gpu_parts.PartError as exc:
        raise cli.BadInput(f"{exc}; build the bundle first: make gpu-bundle") from exc
    label = f"{cfg.date or date.today().isoformat()}-gpu"
    rel = os.path.relpath(cfg.bundle.resolve(), REPO)
    seq = [{"kind": cfg.kind, "carry": [f"{rel}/{p['name']}"], "timeout_s": 120,
            "command": "bash scripts/gpu_run.sh receive"} for p in manifest["parts"]]
    seq[-1].update(timeout_s=600, command=f"bash scripts/gpu_run.sh run $OUT/{label}")
    for i, c in enumerate(seq, 1):
        log.info("call %d of %d: run(kind=%r, carry=%s, timeout_s=%d, command=%r)", i, len(seq), c["kind"],
                 c["carry"], c["timeout_s"], c["command"])
    log.info("issue each call as soon as the previous one returns: an idle machine goes back after 30 s and its "
             "stored parts with it (receive prints what is still missing; run refuses, naming the missing part)")
    log.info("then: cp -r <files_at>/%s reports/%s && git add reports/%s", label, label, label)
    return {"bundle_id": manifest["bundle_id"], "calls": seq, "report": f"reports/{label}"}


def main(argv=None) -> int:
    return cli.main({"receive": cli.Subcommand(ReceiveConfig, receive, ReceiveConfig.__doc__),
                     "prepare": cli.Subcommand(PrepareConfig, prepare, PrepareConfig.__doc__),
                     "run": cli.Subcommand(RunConfig, run, RunConfig.__doc__),
                     "calls": cli.Subcommand(CallsConfig, calls, CallsConfig.__doc__)},
                    argv=argv, prog="python -m evaluation.gpu_run")


if __name__ == "__main__":
    sys.exit(main())
