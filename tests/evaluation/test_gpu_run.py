"""The GPU quality run (issue 18): its parts (cut, received, checked, joined), the device calls it
prints, the wheels it carries, the dry mode end to end on the CPU (tiny fixture bundle -> parts ->
receive -> run -> metrics.json with every system), and the GPU tests that ``scripts/gpu_run.sh``
runs on the GPU host (marked ``gpu``; skipped without a CUDA device)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evaluation import gpu_bundle, gpu_parts, gpu_run
from evaluation.gpu_dry import fixture_notes, write_fixture
from notellm import cli
from tests.support.paths import REPO


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


needs_cuda = pytest.mark.skipif(not _has_cuda(), reason="needs a CUDA device (scripts/gpu_run.sh runs it on the "
                                                        "GPU host)")


# ------------------------------------------------------------------ parts
def _bundle(tmp_path: Path, seed: int = 0, size: int = 300_000) -> tuple[Path, Path]:
    folder = tmp_path / f"src-{seed}"
    (folder / "sub").mkdir(parents=True)
    (folder / "weights.bin").write_bytes(np.random.default_rng(seed).bytes(size))
    (folder / "sub" / "notes.txt").write_text("a note\n" * 100)
    archive = tmp_path / f"bundle-{seed}.tgz"
    gpu_parts.pack(folder, archive)
    return folder, archive


def test_parts_round_trip_and_each_refusal_names_the_part(tmp_path):
    folder, archive = _bundle(tmp_path)
    carried, store = tmp_path / "carried", tmp_path / "store"
    manifest = gpu_parts.cut(archive, carried, 100_000, {"what": "test"})
    names = [p["name"] for p in manifest["parts"]]
    assert names == ["part-1", "part-2", "part-3", "part-4"] and manifest["size"] == archive.stat().st_size
    assert all(p["size"] <= 100_000 for p in manifest["parts"])
    assert sum(p["size"] for p in manifest["parts"]) == manifest["size"]
    for name in names[:3]:                                   # one device call per part
        assert gpu_parts.receive(carried / name, store) == name
    assert gpu_parts.status(store)["missing"] == ["part-4"]
    with pytest.raises(gpu_parts.PartError, match="part-4 is missing"):
        gpu_parts.assemble(store, tmp_path / "out")
    gpu_parts.receive(carried / "part-4", store)
    dest = tmp_path / "out"
    assert gpu_parts.assemble(store, dest)["sha256"] == manifest["sha256"]
    assert (dest / "weights.bin").read_bytes() == (folder / "weights.bin").read_bytes()
    assert (dest / "sub" / "notes.txt").read_text() == (folder / "sub" / "notes.txt").read_text()
    assert gpu_parts.assemble(store, dest)["bundle_id"] == manifest["bundle_id"]       # already there: kept

    stored = store / "parts" / "bundle.tgz.002"
    data = bytearray(stored.read_bytes())
    data[10] ^= 0xFF
    stored.write_bytes(bytes(data))
    with pytest.raises(gpu_parts.PartError, match="part-2 is damaged"):
        gpu_parts.assemble(store, tmp_path / "again")
    (store / "parts" / "bundle.tgz.003").unlink()
    with pytest.raises(gpu_parts.PartError, match="part-2 is damaged|part-3 is missing"):
        gpu_parts.assemble(store, tmp_path / "again")
    chunk = carried / "part-1" / "bundle.tgz.001"
    chunk.write_bytes(chunk.read_bytes()[:-1])              # a carried part cut short
    with pytest.raises(gpu_parts.PartError, match="part-1 is damaged"):
        gpu_parts.receive(carried / "part-1", store)
    # parts of a newer bundle replace the store's older ones
    _, other = _bundle(tmp_path, seed=1, size=50_000)
    newer = gpu_parts.cut(other, tmp_path / "carried-2", 100_000)
    gpu_parts.receive(tmp_path / "carried-2" / "part-1", store)
    assert gpu_parts.status(store) == {"bundle_id": newer["bundle_id"], "have": ["part-1"], "missing": []}


def test_prepare_refuses_a_missing_part_with_exit_2(tmp_path, capsys):
    _, archive = _bundle(tmp_path)
    carried, store = tmp_path / "carried", tmp_path / "store"
    gpu_parts.cut(archive, carried, 120_000)
    assert gpu_run.main(["receive", "--bundle", str(carried), "--store", str(store), "--parts", "part-1"]) == 0
    got = cli.result_line(capsys.readouterr().out)
    assert got["received"] == ["part-1"] and got["missing"] == ["part-2", "part-3"]
    assert gpu_run.main(["prepare", "--store", str(store), "--no-install"]) == cli.EXIT_BAD_INPUT
    got = cli.result_line(capsys.readouterr().out)
    assert got["status"] == "bad_input" and "part-2 is missing" in got["error"]


def test_calls_carry_one_part_each_and_run_last(tmp_path, capsys):
    _, archive = _bundle(tmp_path)
    gpu_parts.cut(archive, tmp_path / "bundle", 120_000)
    assert gpu_run.main(["calls", "--bundle", str(tmp_path / "bundle"), "--date", "2026-12-08"]) == 0
    got = cli.result_line(capsys.readouterr().out)
    calls = got["calls"]
    assert len(calls) == 3 and got["report"] == "reports/2026-12-08-gpu"
    assert [c["command"] for c in calls] == ["bash scripts/gpu_run.sh receive"] * 2 + [
        "bash scripts/gpu_run.sh run $OUT/2026-12-08-gpu"]
    assert [c["carry"][0].rsplit("/", 1)[1] for c in calls] == ["part-1", "part-2", "part-3"]
    assert {c["kind"] for c in calls} == {"nvidia-h200"}           # one kind: a change gives the machine back
    assert all(len(c["command"]) <= 2000 and 1 <= c["timeout_s"] <= 600 for c in calls)


def test_wheels_are_pinned_and_only_cp312_or_pure_ones_travel(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    for name in gpu_bundle.WHEELS:
        tag = ("cp312-cp312-manylinux_2_17_x86_64" if name == "pydantic-core" else "py3-none-any")
        (cache / f"{gpu_bundle._norm(name)}-{gpu_bundle.pinned(name)}-{tag}.whl").write_bytes(b"wheel")
    got = gpu_bundle.fetch_wheels(cache, tmp_path / "out")           # all cached: pip is not called
    assert len(got) == len(gpu_bundle.WHEELS) == len(list((tmp_path / "out").glob("*.whl")))
    assert gpu_bundle.pinned("deepspeed") == "0.19.8"
    (cache / f"deepspeed-{gpu_bundle.pinned('deepspeed')}-py3-none-any.whl").rename(
        cache / f"deepspeed-{gpu_bundle.pinned('deepspeed')}-cp311-cp311-linux_x86_64.whl")
    with pytest.raises(cli.BadInput, match="CPython 3.12"):
        gpu_bundle.fetch_wheels(cache, tmp_path / "out2")


# ------------------------------------------------------------------ the dry mode, end to end
@pytest.mark.slow
def test_dry_mode_end_to_end(tmp_path, backbone_dir):
    out = tmp_path / "reports" / "2026-12-08-gpu"
    env = {**os.environ, "PY": sys.executable, "TMPDIR": str(tmp_path)}
    proc = subprocess.run(["bash", "scripts/gpu_run.sh", "dry", str(out)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    logs = proc.stdout + proc.stderr
    assert "received ['part-1']" in logs and "still missing []" in logs                 # received part by part
    metrics = json.loads((out / "metrics.json").read_text())
    names = [s["name"] for s in metrics["systems"]]
    assert names == ["bm25", "minilm", "minilm_ft", "notellm_no_csft", "notellm"]
    run = metrics["gpu_run"]
    epoch = run["epoch"]
    assert epoch["steps"] >= 1 and epoch["pairs"] == 24 and not run["failed"]
    assert metrics["config"]["epochs"] == 1 and metrics["config"]["training_steps"] == epoch["steps"]
    assert metrics["data"]["test_pairs"] == metrics["data"]["test_pairs_full"] == 48      # every test pair
    assert metrics["data"]["pool"] == metrics["data"]["pool_full"] == 30                  # the whole pool
    for s in metrics["systems"]:
        assert s["pairs"] == {"cooccurrence": 48, "postlinks": 9}
        if s["name"] in ("minilm_ft", "notellm_no_csft", "notellm"):
            assert s["loss_curve"]["step"][-1] == epoch["steps"]                          # one full epoch
    assert all(r["status"] == "ok" for r in run["phases"])
    assert run["gpu_tests"]["exit"] == 0 and "skipped" in run["gpu_tests"]["summary"]     # no CUDA here
    assert run["minilm"]["dtype"] == "fp16" and run["minilm"]["fp16_files"] == ["model.safetensors"]
    report = (out / "report.md").read_text()
    assert "## The GPU run" in report and "| notellm | ok |" in report
    # what the device tool brings back: at most 8 files, at most 2 folders below $OUT
    files = [p.relative_to(out.parent) for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and all(len(f.parts) <= 3 for f in files), files
    assert {"report.md", "metrics.json", "gpu_run.log", "gpu_tests.log"} <= {f.name for f in files}


# ------------------------------------------------------------------ on the GPU host (pytest -m gpu)
@pytest.mark.gpu
@needs_cuda
def test_bf16_embeddings_on_cuda_match_fp32(backbone_dir):
    import torch

    from notellm.encoder import NoteEncoder
    from notellm.precision import use_bf16

    assert use_bf16("auto", "cuda") and torch.cuda.is_bf16_supported()
    encoder = NoteEncoder.build(backbone_dir, dim=128, seed=0).to("cuda")
    notes = fixture_notes()[:16]
    fp32 = encoder.embed_notes(notes, batch_size=8)
    bf16 = encoder.embed_notes(notes, batch_size=8, autocast_bf16=True)
    assert np.isfinite(bf16).all()
    assert float((fp32 * bf16).sum(axis=1).min()) > 0.99                  # unit vectors: cosine


@pytest.mark.gpu
@needs_cuda
def test_deepspeed_trains_in_bf16_on_cuda(tiny_llama_dir, tmp_path):
    work = write_fixture(tmp_path / "work")
    run_dir = tmp_path / "run"
    settings = {"backbone": tiny_llama_dir, "pairs": work / "split" / "train_pairs", "max_steps": 3,
                "notes": work / "se" / "notes" / "notes.parquet", "output_dir": run_dir, "batch_pairs": 4,
                "save_every": 3}
    cmd = [sys.executable, "-m", "training.train"] + [a for k, v in settings.items() for a in ("--set", f"{k}={v}")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "DS_ACCELERATOR": "cuda"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["bf16"] is True and metrics["steps"] == 3
    assert math.isfinite(metrics["last"]["loss"])
    assert (run_dir / "model" / "notellm.json").exists()


@pytest.mark.gpu
@needs_cuda
def test_minilm_fine_tunes_on_cuda(tmp_path):
    from evaluation import systems

    notes = {n["note_id"]: n for n in fixture_notes()}
    pairs = [(f"{c}:{i}", f"{c}:{i + 4}") for c in ("beer", "coffee", "bicycles") for i in range(6)]
    ft = systems.minilm_finetune(pairs, notes, tmp_path / "ft", steps=2, batch_pairs=4, device="cuda")
    assert all(math.isfinite(v) for v in ft["loss_curve"]["l_cl"])
    model = systems.load_minilm(tmp_path / "ft", device="cuda")
    vectors = systems.minilm_embed(model, list(notes.values())[:8])
    assert vectors.shape == (8, 384) and np.isfinite(vectors).all()


@pytest.mark.gpu
@needs_cuda
def test_faiss_search_on_gpu_matches_exact():
    faiss = pytest.importorskip("faiss", reason="faiss is not carried to the GPU host (no cp312 CUDA 13 wheel; "
                                                "evaluation.gpu_bundle.NOT_CARRIED)")
    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        pytest.skip("this faiss has no GPU support (faiss-cpu)")
    rng = np.random.default_rng(0)
    base = rng.standard_normal((5000, 64)).astype(np.float32)
    queries = rng.standard_normal((50, 64)).astype(np.float32)
    cpu = faiss.IndexFlatIP(64)
    cpu.add(base)
    gpu = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, cpu)
    _, want = cpu.search(queries, 10)
    _, got = gpu.search(queries, 10)
    assert (got == want).mean() > 0.99
