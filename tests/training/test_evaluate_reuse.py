"""training.evaluate's cost levers: the approved model's vectors reused from the nightly embedding
store (written here by the real indexing code), the sampled pool, the device choice. Tiny random
Llama with the real tokenizer, fp32 on the CPU."""

from __future__ import annotations

import json
import logging
import shutil

import pyarrow as pa
import pytest

from indexing.buckets import HASH_NAME, bucket_of
from indexing.config import EmbedConfig
from indexing.embed import embed_corpus
from notellm import config as configs
from notellm.embedding_store import STORE_FILE, bucket_of_id
from notellm.encoder import NoteEncoder
from notellm.registry import register
from tests.support.notes import notes_table
from tests.support.pairs import make_notes_and_pairs, write_dataset
from training import evaluate
from training.config import EvaluateConfig

DAY = "dt=2026-11-25"
NEW_NOTES = 4          # in the notes and the pool, not yet in the store (the nightly has not seen them)
KS = [1, 5, 10, 40]


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_encoder_dir):
    """Notes + test pairs + pool; an approved tiny model; its store of every note but the last
    NEW_NOTES, embedded by indexing before one note's title changed."""
    root = tmp_path_factory.mktemp("eval_reuse")
    pairs_dir, data = write_dataset(root / "data", n_pairs=24, seed=5)
    notes, _ = make_notes_and_pairs(24, seed=5)
    stored = [dict(n) for n in notes[:-NEW_NOTES]]
    stored[3]["title"] = "an older title"          # the note changed since: its stored vector is stale
    encoder = NoteEncoder.load(tiny_encoder_dir)
    cfg = EmbedConfig(num_buckets=8, max_batch_tokens=512, precision="fp32", progress=False)
    embed_corpus(encoder, notes_table(stored), root / "embeddings", cfg)
    register(root / "models", tiny_encoder_dir, encoder.config.model_id, {}, approved=True)
    return {"root": root, "pairs": str(pairs_dir), "pool": str(data / "pool" / DAY), "notes": str(data),
            "model": str(tiny_encoder_dir), "models": str(root / "models"), "emb": str(root / "embeddings"),
            "model_id": encoder.config.model_id, "n_notes": len(notes)}


def run(world, **kw):
    data = {"model": world["model"], "pairs": world["pairs"], "pool": world["pool"], "notes": world["notes"],
            "approved_root": world["models"], "ks": KS, "device": "cpu", "precision": "fp32", **kw}
    return evaluate.run(configs.build(EvaluateConfig, data))


def test_reused_vectors_give_the_same_recall_and_are_counted(world, caplog):
    plain = run(world)
    with caplog.at_level(logging.INFO, logger="training.evaluate"):
        reused = run(world, embeddings_root=world["emb"])
    a, b = reused["approved"], plain["approved"]
    for k in map(str, KS):
        assert a["recall"][k] == pytest.approx(b["recall"][k], abs=1e-6)
    assert a["ranks"] == b["ranks"] and a["in_batch_accuracy"] == pytest.approx(b["in_batch_accuracy"], abs=1e-6)
    assert b["reuse"]["reused"] == 0 and b["notes_embedded"] == world["n_notes"]
    assert a["reuse"]["reused"] == world["n_notes"] - NEW_NOTES - 1
    assert a["reuse"]["stale"] == 1 and a["reuse"]["embedded"] == a["notes_embedded"] == NEW_NOTES + 1
    assert a["reuse"]["skipped"] is None and a["model_id"] == world["model_id"]
    assert "vectors reused from the embedding store" in caplog.text
    assert reused["model"]["recall"] == plain["model"]["recall"]       # only the approved entry changes


def test_a_store_of_another_model_is_not_reused(world, tmp_path, caplog):
    other = tmp_path / "embeddings"
    shutil.copytree(f"{world['emb']}/{world['model_id']}", other / world["model_id"])
    meta = json.loads((other / world["model_id"] / STORE_FILE).read_text())
    (other / world["model_id"] / STORE_FILE).write_text(json.dumps({**meta, "model_id": "0123456789ab"}))
    with caplog.at_level(logging.WARNING, logger="training.evaluate"):
        res = run(world, embeddings_root=str(other))
    reuse = res["approved"]["reuse"]
    assert reuse["reused"] == 0 and reuse["embedded"] == world["n_notes"]
    assert "store of 0123456789ab" in reuse["skipped"] and "not reusing stored vectors" in caplog.text
    # No store of the approved model under the root at all: the same, with its own reason.
    res = run(world, embeddings_root=str(tmp_path / "empty"))
    assert res["approved"]["reuse"]["reused"] == 0 and "no store of this model" in res["approved"]["reuse"]["skipped"]


def test_pool_sample_keeps_every_endpoint_and_is_seeded():
    pool = [f"p{i:03d}" for i in range(200)]
    pairs = [("p010", "p150"), ("p010", "p020"), ("p199", "x-not-in-pool")]
    sample, info = evaluate.sample_pool(pool, pairs, 50, seed=3)
    assert len(sample) == 50 and {"p010", "p150", "p020", "p199"} <= set(sample)
    assert sample == [n for n in pool if n in set(sample)]            # pool order kept
    assert info == {"max_notes": 50, "seed": 3, "full_pool_size": 200, "sampled": True, "pool_size": 50,
                    "endpoints": 4, "random": 46}
    assert evaluate.sample_pool(pool, pairs, 50, seed=3)[0] == sample
    assert evaluate.sample_pool(pool, pairs, 50, seed=4)[0] != sample
    assert evaluate.sample_pool(pool, pairs, 0)[0] == pool and evaluate.sample_pool(pool, pairs, 500)[0] == pool
    sample, info = evaluate.sample_pool(pool, [(f"p{i:03d}", "p000") for i in range(80)], 50)
    assert len(sample) == 80 and info["sampled"] and info["random"] == 0          # endpoints always stay


def test_the_command_line_samples_the_pool_and_records_it(world, tmp_path):
    out = tmp_path / "eval.json"
    assert evaluate.main(["--model", world["model"], "--pairs", world["pairs"], "--pool", world["pool"],
                          "--notes", world["notes"], "--approved-root", world["models"], "--embeddings-root",
                          world["emb"], "--pool-sample", "30", "--seed", "1", "--device", "cpu", "--ks", "1,5",
                          "--limit-pairs", "8",
                          "--precision", "fp32", "--out", str(out)]) == 0
    ev = json.loads(out.read_text())
    assert ev["pool_size"] == ev["pool_sampling"]["pool_size"] == 30 < ev["pool_sampling"]["full_pool_size"]
    assert ev["pool_sampling"]["endpoints"] == 16 and ev["pool_sampling"]["random"] == 14 and ev["test_pairs"] == 8
    assert ev["device"] == "cpu" and ev["weights_dtype"] == "float32"
    assert ev["approved"]["reuse"]["reused"] + ev["approved"]["reuse"]["embedded"] == ev["approved"]["notes_embedded"] \
        + ev["approved"]["notes_reused"] >= 30
    with pytest.raises(configs.ConfigError, match="pool_sample"):
        configs.build(EvaluateConfig, {"model": "m", "pairs": "p", "pool": "q", "notes": "n", "pool_sample": -1})
    with pytest.raises(configs.ConfigError, match="device"):
        configs.build(EvaluateConfig, {"model": "m", "pairs": "p", "pool": "q", "notes": "n", "device": "gpu"})


def test_the_reader_hashes_ids_like_the_writer():
    ids = ["n0001a", "", "ünïcode-note", "x" * 300, "42"]
    assert HASH_NAME == "fnv1a64-utf8"
    for buckets in (1, 7, 16, 4096):
        assert [bucket_of_id(i, buckets) for i in ids] == bucket_of(pa.array(ids), buckets).tolist()


def test_auto_device_is_the_cpu_without_cuda():
    import torch
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    place = evaluate.Placement.choose("auto", "fp32")
    assert (place.device, place.dtype, place.autocast) == ("cpu", "float32", False)
    with pytest.raises(RuntimeError, match="no CUDA device"):
        evaluate.Placement.choose("cuda", "auto")
