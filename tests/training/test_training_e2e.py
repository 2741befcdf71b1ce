"""End-to-end DeepSpeed training on CPU with a tiny random Llama (real tokenizer):
saved-model reload, resume after a kill, ZeRO-3 export, 2-process equivalence,
overfitting, and the evaluate / register / generate commands."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from notellm.cli import EXIT_GATE_FAILED
from notellm.encoder import NoteEncoder
from tests.support.kill import checkpoint_written, run_until_killed
from tests.support.models import tiny_llama
from tests.support.pairs import write_dataset
from tests.support.paths import REPO
from training.config import TrainConfig

pytestmark = pytest.mark.slow
STEPS = 4


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from notellm.backbone import ensure_default_backbone
    root = tmp_path_factory.mktemp("train")
    tiny = tiny_llama(root / "tiny", ensure_default_backbone())
    part, data = write_dataset(root / "data", n_pairs=16)
    base = {"backbone": str(tiny), "pairs": str(part), "notes": str(data), "batch_pairs": 8, "lr": 1e-3,
            "max_steps": STEPS, "save_every": 2, "log_every": 1, "seed": 0}
    return root, base


def write_cfg(root, base, name, **over):
    cfg = {**base, "output_dir": str(root / name), **over}
    path = root / f"{name}.json"
    path.write_text(json.dumps(cfg))
    return path


def log_rows(run_dir):
    return [json.loads(x) for x in (Path(run_dir) / "train_log.jsonl").read_text().splitlines()]


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        e.pop(k, None)
    return e


@pytest.fixture(scope="module")
def full_run(setup):
    from training.train import train
    root, base = setup
    cfg = TrainConfig.load(write_cfg(root, base, "full"))
    metrics, encoder = train(cfg, return_model=True)
    return root / "full", metrics, encoder


def test_saved_model_reloads_with_equal_embeddings(full_run, setup):
    run, metrics, encoder = full_run
    from safetensors.torch import load_file
    for f in (run / "model").glob("*.safetensors"):
        assert all(t.numel() > 0 for t in load_file(str(f)).values()), f
    loaded = NoteEncoder.load(run / "model")
    from training.data import load_notes
    notes = list(load_notes(setup[1]["notes"]).values())[:6]
    np.testing.assert_allclose(loaded.embed_notes(notes), encoder.embed_notes(notes), atol=1e-5)
    side = json.loads((run / "model" / "notellm.json").read_text())
    assert side["tau"] == pytest.approx(log_rows(run)[-1]["tau"], abs=1e-2) and side["dim"] == 128
    assert side["data_window"] == {"start": "2026-11-01", "end": "2026-11-25"}
    rows = log_rows(run)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    assert {"l_cl", "l_gen", "loss", "tau", "lr", "samples_per_s"} <= set(rows[0])
    assert rows[0]["loss"] == pytest.approx((rows[0]["l_cl"] + 0.01 * rows[0]["l_gen"]) / 1.01, rel=1e-5)
    assert json.loads((run / "metrics.json").read_text())["steps"] == STEPS


def test_resume_after_kill_matches_uninterrupted(full_run, setup):
    root, base = setup
    cfg_path = write_cfg(root, base, "killed")
    code, _ = run_until_killed([sys.executable, "-m", "training.train", "--config", str(cfg_path)],
                               checkpoint_written(root / "killed"), root / "killed-logs", cwd=REPO, env=env())
    assert code == -signal.SIGKILL
    assert not (root / "killed" / "model").exists() and 2 <= len(log_rows(root / "killed")) < STEPS
    proc = subprocess.run([sys.executable, "-m", "training.train", "--config", str(cfg_path)], cwd=REPO, env=env(),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "resumed from" in proc.stderr
    resumed, full = log_rows(root / "killed"), log_rows(full_run[0])
    assert [r["step"] for r in resumed] == [r["step"] for r in full]
    for a, b in zip(resumed, full):
        for key in ("l_cl", "l_gen", "tau", "lr"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), (a["step"], key)


def torchrun(cfg_path, nproc: int = 2) -> None:
    """``torchrun --nproc_per_node N -m training.train`` over gloo; the process group is killed on a timeout."""
    from training.train import free_port
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                             "--master_port", str(free_port()), "-m", "training.train", "--config", str(cfg_path)],
                            cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)  # the launcher and both workers: never leave ranks behind
        raise
    assert proc.returncode == 0, stderr[-3000:]


def assert_same_trajectory(run_dir, reference_dir, keys=("l_cl", "l_gen", "loss", "tau"), rel=1e-3):
    rows, reference = log_rows(run_dir), log_rows(reference_dir)
    assert rows and len(rows) <= len(reference)
    for a, b in zip(rows, reference):
        for key in keys:
            assert a[key] == pytest.approx(b[key], rel=rel, abs=1e-4), (a["step"], key)


def test_two_processes_match_one_process(full_run, setup):
    """torchrun --nproc_per_node 2 over gloo: each rank holds half of the same global batch."""
    root, base = setup
    torchrun(write_cfg(root, base, "two_proc"))
    assert json.loads((root / "two_proc" / "metrics.json").read_text())["world_size"] == 2
    assert_same_trajectory(root / "two_proc", full_run[0])


def test_zero3_partitioned_load_with_gradcache_on_two_processes_matches_one_process(full_run, setup):
    """ZeRO-3 on 2 gloo ranks: the backbone is loaded already partitioned (each rank holds about
    half of the parameter elements before deepspeed.initialize, the [EMB] row written through a
    gather), and GradCache chunks of 4 notes (2 micro-steps per rank and step) give the losses of
    the unchunked single-process ZeRO-2 run. Two steps: the second sees the first update (the LR
    of step 1 is the same in both runs; the schedules differ from step 2 on)."""
    root, base = setup
    torchrun(write_cfg(root, base, "zero3_parts", deepspeed_config="zero3", chunk_notes=4, max_steps=2,
                       save_every=2))
    metrics = json.loads((root / "zero3_parts" / "metrics.json").read_text())
    held = metrics["params_held_at_load"]
    assert metrics["zero_stage"] == 3 and metrics["world_size"] == 2 and metrics["chunk_notes"] == 4
    assert 0.45 < held["share"] < 0.55, held          # rank 0 never held the whole model
    assert json.loads((full_run[0] / "metrics.json").read_text())["params_held_at_load"]["share"] == 1.0
    assert_same_trajectory(root / "zero3_parts", full_run[0], keys=("l_cl", "l_gen", "tau"))
    reloaded = NoteEncoder.load(root / "zero3_parts" / "model")
    emb_id = reloaded.config.emb_token_id
    rows = reloaded.lm.get_input_embeddings().weight.detach()
    assert not np.allclose(rows[emb_id].numpy(), 0.0)   # the [EMB] row survived partitioning


def test_gradcache_with_checkpointing_matches_the_whole_batch(full_run, setup):
    """One process, GradCache chunks of 4 of the 16 notes and gradient checkpointing: the same
    loss trajectory as the plain run (neither lever changes the gradient)."""
    from training.train import train
    root, base = setup
    train(TrainConfig.load(write_cfg(root, base, "gradcache", chunk_notes=4, gradient_checkpointing=True)))
    assert_same_trajectory(root / "gradcache", full_run[0], rel=1e-4)


def test_zero3_exports_full_weights(setup):
    from training.train import train
    root, base = setup
    cfg = TrainConfig.load(write_cfg(root, base, "zero3", deepspeed_config="zero3", max_steps=2, save_every=2))
    train(cfg)
    from safetensors.torch import load_file
    state = load_file(str(root / "zero3" / "model" / "model.safetensors"))
    assert state and all(t.numel() > 0 for t in state.values())
    model = NoteEncoder.load(root / "zero3" / "model")
    assert model.projection.weight.abs().sum() > 0
    assert np.isfinite(model.embed_notes([{"title": "t", "content": "c", "hashtags": [], "category": "x"}])).all()


def test_overfit_raises_in_batch_accuracy(setup):
    from training.data import load_training_pairs
    from training.evaluate import evaluate_encoder
    from training.train import train
    root, base = setup
    cfg = TrainConfig.load(write_cfg(root, base, "overfit", max_steps=30, lr=2e-3, save_every=30, log_every=10))
    metrics, encoder = train(cfg, return_model=True)
    pairs, notes, _ = load_training_pairs(base["pairs"], base["notes"])
    pool = sorted(notes)
    trained = evaluate_encoder(encoder, pairs, pool, notes, ks=(1,), batch_pairs=16)
    untrained = evaluate_encoder(NoteEncoder.build(base["backbone"]), pairs, pool, notes, ks=(1,), batch_pairs=16)
    chance = trained["in_batch_chance"]
    assert trained["in_batch_accuracy"] >= 0.9 > 10 * chance
    assert trained["in_batch_accuracy"] > untrained["in_batch_accuracy"]
    assert metrics["last"]["l_cl"] < 0.5 * metrics["first"]["l_cl"]


def test_evaluate_register_generate_commands(full_run, setup, tmp_path, capsys):
    from training import evaluate, generate, register
    root, base = setup
    model = str(full_run[0] / "model")
    data = Path(base["notes"])
    pool = data / "pool" / "dt=2026-11-25"
    out = tmp_path / "eval.json"
    assert evaluate.main(["--model", model, "--pairs", base["pairs"], "--pool", str(pool), "--notes", str(data),
                          "--backbone-baseline", "--ks", "1,5,10", "--batch-pairs", "8", "--out", str(out)]) == 0
    ev = json.loads(out.read_text())
    assert set(ev) >= {"model", "backbone"} and 0 <= ev["model"]["recall"]["5"] <= 1
    models = tmp_path / "models"
    assert register.main(["--model", model, "--metrics", str(out), "--models-root", str(models), "--k", "10",
                          "--min-recall", "1.01"]) == EXIT_GATE_FAILED
    from notellm.registry import current_approved, history
    assert current_approved(models) is None and history(models)[-1]["approved"] is False
    assert register.main(["--model", model, "--metrics", str(out), "--models-root", str(models), "--k", "10",
                          "--no-baseline-required"]) == 0
    assert current_approved(models)["model_id"] == json.loads((Path(model) / "notellm.json").read_text())["model_id"]
    capsys.readouterr()
    assert generate.main(["--model", model, "--notes", str(data), "--task", "category", "--constrained",
                          "--limit", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    cats = {"coffee", "bicycles", "beer", "economics"}
    assert len(result["generations"]) == 3 and all(row["generated"] in cats for row in result["generations"])
    assert result["summary"]["notes"] == 3 and result["status"] == "ok"


@pytest.mark.parametrize("point,resumed_from", [("checkpoint:files_written@1", None),
                                                ("checkpoint:sums_written@2", 2)])
def test_sigkill_inside_a_checkpoint_save_resumes_from_the_last_listed_tag(full_run, setup, point, resumed_from):
    """Killed while a save is under way (its files down but not listed, or listed but
    'latest' not yet moved) and with a torn last log line: the rerun resumes from the tag
    'latest' names (verified against its SHA256SUMS.json), or from scratch, and ends exactly
    where an uninterrupted run ends."""
    root, base = setup
    name = f"fault-{resumed_from}"
    cfg_path = write_cfg(root, base, name)
    ready = root / f"{name}.ready"
    code, _ = run_until_killed([sys.executable, "-m", "training.train", "--config", str(cfg_path)], ready.exists,
                               root / f"{name}-logs", cwd=REPO,
                               env={**env(), "NOTELLM_FAULT_AT": point, "NOTELLM_FAULT_READY": str(ready)})
    assert code == -signal.SIGKILL
    latest = root / name / "checkpoints" / "latest"
    assert (latest.read_text().strip() if latest.exists() else None) == (f"step{resumed_from}" if resumed_from
                                                                          else None)
    with open(root / name / "train_log.jsonl", "a") as fh:
        fh.write('{"step": 99, "l_cl"')                       # a write torn by the kill
    proc = subprocess.run([sys.executable, "-m", "training.train", "--config", str(cfg_path)], cwd=REPO, env=env(),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert ("resumed from" in proc.stderr) == bool(resumed_from)
    resumed, full = log_rows(root / name), log_rows(full_run[0])
    assert [r["step"] for r in resumed] == [r["step"] for r in full]
    for a, b in zip(resumed, full):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-5), a["step"]
    tags = sorted(p.name for p in (root / name / "checkpoints").glob("step*"))
    assert all((root / name / "checkpoints" / t / "SHA256SUMS.json").exists() for t in tags), tags


def test_top_layers_run_resumes_after_kill_from_its_trainable_weights(setup):
    """train_top_layers saves only the trained weights in checkpoints; a killed run resumes
    from them on top of the rebuilt (frozen) backbone and ends where an uninterrupted run ends."""
    from safetensors.torch import load_file
    root, base = setup
    runs = {}
    for name, kill in (("top-full", False), ("top-killed", True)):
        cfg_path = write_cfg(root, base, name, train_top_layers=1)
        cmd = [sys.executable, "-m", "training.train", "--config", str(cfg_path)]
        if kill:
            code, _ = run_until_killed(cmd, checkpoint_written(root / name), root / f"{name}-logs", cwd=REPO,
                                       env=env())
            assert code == -signal.SIGKILL and not (root / name / "model").exists()
        proc = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert ("resumed from" in proc.stderr) == bool(kill)
        runs[name] = root / name
    for a, b in zip(log_rows(runs["top-full"]), log_rows(runs["top-killed"])):
        for key in ("l_cl", "l_gen", "tau"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), (a["step"], key)
    full = {k: v for f in (runs["top-full"] / "model").glob("*.safetensors") for k, v in load_file(str(f)).items()}
    resumed = {k: v for f in (runs["top-killed"] / "model").glob("*.safetensors")
               for k, v in load_file(str(f)).items()}
    assert full.keys() == resumed.keys()
    for k in full:
        np.testing.assert_allclose(resumed[k].numpy(), full[k].numpy(), atol=1e-5, err_msg=k)
    backbone = {k: v for f in Path(base["backbone"]).glob("*.safetensors") for k, v in load_file(str(f)).items()}
    frozen = "model.layers.0.self_attn.q_proj.weight"
    np.testing.assert_array_equal(full[frozen].numpy(), backbone[frozen].numpy())


def test_non_finite_loss_stops_every_rank_with_the_diverged_exit(setup):
    """exp(tau) overflows with tau = 1e4: the first step's loss is not finite. The run
    stops before the update with exit 4 (no retry in the DAGs), saves nothing, and the
    result line says so."""
    root, base = setup
    cfg_path = write_cfg(root, base, "diverged", tau_init=1e4)
    proc = subprocess.run([sys.executable, "-m", "training.train", "--config", str(cfg_path)], cwd=REPO, env=env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 4, proc.stderr[-3000:]
    [line] = proc.stdout.splitlines()
    result = json.loads(line)
    assert result["status"] == "diverged" and result["step"] == 1 and result["last_checkpoint_step"] is None
    assert "non-finite loss at step 1" in result["error"]
    assert not (root / "diverged" / "model").exists() and not (root / "diverged" / "checkpoints" / "latest").exists()


def test_lora_run_exports_a_merged_plain_model(setup):
    """LoRA (r=4) through the trainer: the export is a plain HF directory (the adapters merged,
    W + (alpha / r) B A) whose embeddings equal those of the adapted model in memory."""
    from safetensors.torch import load_file

    from training.train import train
    root, base = setup
    cfg = TrainConfig.load(write_cfg(root, base, "lora", lora_r=4, lora_alpha=8.0, max_steps=2, save_every=2))
    metrics, adapted = train(cfg, return_model=True)
    assert metrics["lora_r"] == 4
    keys = {k for f in (root / "lora" / "model").glob("*.safetensors") for k in load_file(str(f))}
    assert keys and not any("lora_" in k or "base_layer" in k for k in keys)
    from training.data import load_notes
    notes = list(load_notes(base["notes"]).values())[:6]
    merged = NoteEncoder.load(root / "lora" / "model")
    np.testing.assert_allclose(merged.embed_notes(notes), adapted.embed_notes(notes), atol=1e-5)
    untrained = NoteEncoder.build(base["backbone"], dim=128, seed=0)
    assert not np.allclose(merged.embed_notes(notes), untrained.embed_notes(notes), atol=1e-4)
