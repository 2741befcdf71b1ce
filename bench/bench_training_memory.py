"""Training memory levers on a real backbone: peak memory and time of one forward + backward.

    python bench/bench_training_memory.py [--backbone smollm2] [--configs whole:16,chunk8:16,...]

Each configuration runs in a fresh process (SmolLM2-135M by default, fp32, the v1-paper
prompt, notes from tests/support/pairs.py): the model is built, one untimed step warms
the allocator, then the kernel's peak-RSS mark is reset (``/proc/self/clear_refs``) and one
step (forward + backward of the whole NoteLLM loss, no optimizer) is measured: the peak
RSS above the RSS before the step (activations + gradients), and its wall time.
Configurations ``NAME:PAIRS``: ``whole`` (one pass), ``chunkN`` (GradCache, N notes per
chunk), ``ckpt`` (gradient checkpointing), ``chunkN+ckpt``. Prints one JSON line per
configuration and a summary line; the ratios to ``whole`` at the same batch are measured
in the same run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from notellm.config import option  # noqa: E402


@dataclasses.dataclass
class BenchConfig:
    """Peak memory and time of one training step per memory lever."""

    backbone: str = option("smollm2", help="'smollm2' or a Hugging Face causal-LM directory")
    configs: str = option("whole:8,chunk4:8,ckpt:8,chunk4+ckpt:8,whole:16,chunk4:16",
                          help="comma list of NAME:PAIRS (whole, chunkN, ckpt, chunkN+ckpt)")
    one: str | None = option(None, help="(internal) run one configuration in this process")


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def run_one(backbone: str, spec: str) -> dict:
    import torch

    from notellm.backbone import resolve_backbone
    from notellm.encoder import NoteEncoder
    from tests.support.pairs import make_notes_and_pairs
    from training.data import batch_examples
    from training.gradcache import RngStates, backward_chunks, cached_loss, chunk_rows, embed_without_graph
    from training.model import NoteLLMTrainModel

    name, pairs_text = spec.split(":")
    n_pairs = int(pairs_text)
    chunk = int(name.split("+")[0][5:]) if name.startswith("chunk") else 0
    torch.manual_seed(0)
    encoder = NoteEncoder.build(resolve_backbone(backbone), dim=128)
    if "ckpt" in name:
        encoder.lm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model = NoteLLMTrainModel(encoder)
    model.train()
    notes, pairs = make_notes_and_pairs(n_pairs)
    by_id = {n["note_id"]: n for n in notes}
    examples = batch_examples(list(range(n_pairs)), pairs, by_id, r=0.4, seed=0, step=0)
    batch = encoder.collate([encoder.prompts.encode(e.note, task=e.task, hashtags_out=e.hashtags_out)
                             for e in examples])

    def step():
        model.zero_grad(set_to_none=False)
        if not chunk:
            model(**batch).loss.backward()
            return
        chunks = chunk_rows(batch["input_ids"].shape[0], chunk)
        rng = RngStates()
        emb, tau = embed_without_graph(model, batch, chunks, rng)
        cache = cached_loss(emb, tau, model.alpha)
        tokens = (batch["labels"][:, 1:] != -100).sum()
        backward_chunks(model, lambda s: s.backward(), batch, chunks, cache, tokens, rng)

    step()                                   # warm-up: gradients allocated, allocator primed
    Path("/proc/self/clear_refs").write_text("5")   # reset the peak-RSS mark (VmHWM)
    before = _rss_kb("VmRSS")
    t0 = time.perf_counter()
    step()
    took = time.perf_counter() - t0
    peak = _rss_kb("VmHWM")
    return {"config": name, "pairs": n_pairs, "notes": 2 * n_pairs, "tokens": int(batch["attention_mask"].sum()),
            "step_s": round(took, 2), "peak_above_mb": round((peak - before) / 1024, 1),
            "rss_before_mb": round(before / 1024, 1), "threads": torch.get_num_threads()}


def run(cfg: BenchConfig, timer) -> dict:
    if cfg.one:
        return run_one(cfg.backbone, cfg.one)
    rows = []
    for spec in cfg.configs.split(","):
        with timer.phase(spec):
            proc = subprocess.run([sys.executable, __file__, "--backbone", cfg.backbone, "--one", spec], cwd=REPO,
                                  capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
        if proc.returncode:
            raise RuntimeError(f"{spec}: {proc.stderr[-2000:]}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append({k: v for k, v in row.items() if k not in ("status", "timings_s")})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    whole = {r["pairs"]: r for r in rows if r["config"] == "whole"}
    ratios = {f"{r['config']}:{r['pairs']}": {
        "memory_vs_whole": round(r["peak_above_mb"] / whole[r["pairs"]]["peak_above_mb"], 3),
        "time_vs_whole": round(r["step_s"] / whole[r["pairs"]]["step_s"], 3)} for r in rows if r["pairs"] in whole}
    return {"rows": rows, "ratios": ratios}


def main(argv=None) -> int:
    from notellm import cli

    return cli.main(run, BenchConfig, argv=argv, prog="bench/bench_training_memory.py")


if __name__ == "__main__":
    sys.exit(main())
