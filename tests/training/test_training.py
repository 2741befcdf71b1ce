"""Training data plumbing: sampler, pair cleaning, CSFT task mix, config (fast, no model)."""

import json
from collections import Counter

import pytest

from notellm.batching import plan_epoch
from notellm.contracts import ContractError
from tests.support.pairs import make_notes_and_pairs, write_dataset
from training.config import TrainConfig, resolve_deepspeed_config
from training.data import assign_tasks, batch_examples, clean_pairs, load_training_pairs, local_examples
from training.sampler import UniqueNoteBatchSampler


def star_pairs(n=60):
    # many pairs share hub notes: a naive batcher would repeat them inside a batch
    return [(f"hub{i % 5}", f"leaf{i}") for i in range(n)] + [(f"x{i}", f"y{i}") for i in range(n)]


def test_sampler_never_repeats_a_note_and_is_deterministic():
    pairs = star_pairs()
    s = UniqueNoteBatchSampler(pairs, batch_pairs=8, seed=3)
    for epoch in range(3):
        plan = s.plan(epoch)
        placed = sum(len(b) for b in plan.batches)
        assert placed + plan.left_over == len(pairs)
        for batch in plan.batches:
            ids = [n for i in batch for n in pairs[i]]
            assert len(ids) == len(set(ids)) == 16
    assert plan_epoch(pairs, 8, 3, 1).batches == UniqueNoteBatchSampler(pairs, 8, seed=3).plan(1).batches
    assert plan_epoch(pairs, 8, 3, 1).batches != plan_epoch(pairs, 8, 4, 1).batches


def test_sampler_steps_cross_epochs_and_rank_slices():
    pairs = [(f"a{i}", f"b{i}") for i in range(20)]
    s = UniqueNoteBatchSampler(pairs, batch_pairs=4, seed=0)
    assert s.steps_per_epoch() == 5
    assert s.position(7) == (1, 2)
    g = s.global_batch(7)
    r0 = UniqueNoteBatchSampler(pairs, 4, 0, world_size=2, rank=0).local_slice(g)
    r1 = UniqueNoteBatchSampler(pairs, 4, 0, world_size=2, rank=1).local_slice(g)
    assert r0 + r1 == g
    with pytest.raises(ValueError, match="divisible"):
        UniqueNoteBatchSampler(pairs, 3, 0, world_size=2)
    with pytest.raises(ValueError, match="itself"):
        UniqueNoteBatchSampler([("a", "a")], 1)


def test_clean_pairs_counts_every_drop():
    notes = {n: {} for n in ["a", "b", "c"]}
    pairs = [("a", "b"), ("b", "a"), ("a", "a"), ("a", "zz"), ("c", "b"), ("a", "b")]
    kept, rep = clean_pairs(pairs, notes)
    assert kept == [("a", "b"), ("c", "b")]
    assert (rep.self_pairs, rep.duplicate_pairs, rep.missing_note_pairs, rep.missing_note_ids) == (1, 2, 1, 1)
    assert rep.pairs_read == 6 and "zz" in rep.missing_note_examples


def test_load_refuses_unfinished_partition_and_too_many_missing(tmp_path):
    part, root = write_dataset(tmp_path / "d1", n_pairs=8, success=False)
    with pytest.raises(ContractError, match="_SUCCESS"):
        load_training_pairs(part, root)
    part, root = write_dataset(tmp_path / "d2", n_pairs=8, missing=2)
    with pytest.raises(ContractError, match="missing"):
        load_training_pairs(part, root, max_missing_fraction=0.1)
    pairs, notes, rep = load_training_pairs(part, root, max_missing_fraction=0.5)
    assert rep.pairs_read == 10 and rep.missing_note_pairs == 2 and rep.pairs_used == len(pairs) == 8
    assert rep.window_start == "2026-11-01" and rep.window_end == "2026-11-25"


def test_csft_task_mix_fraction_and_determinism():
    notes, pairs = make_notes_and_pairs(16)
    by_id = {n["note_id"]: n for n in notes}
    ex = batch_examples(list(range(16)), pairs, by_id, r=0.4, seed=1, step=5)
    tasks = Counter(e.task for e in ex)
    assert tasks["hashtag"] == round(0.4 * 32) and tasks["category"] == 32 - 13
    for e in ex:
        if e.task == "hashtag":
            assert 1 <= len(e.hashtags_out) and set(e.hashtags_out) <= set(e.note["hashtags"])
    assert ex == batch_examples(list(range(16)), pairs, by_id, r=0.4, seed=1, step=5)
    assert ex != batch_examples(list(range(16)), pairs, by_id, r=0.4, seed=1, step=6)
    # no hashtags -> never the hashtag task
    bare = [{**n, "hashtags": []} for n in notes[:4]]
    assert all(e.task == "category" for e in assign_tasks(bare, 1.0, 0, 0))
    # rank slices keep the [a; b] layout
    loc = local_examples(ex, rank=1, world_size=2)
    assert loc[:8] == ex[8:16] and loc[8:] == ex[24:32]


def test_config_overrides_and_auto_resolution(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"pairs": "p", "notes": "n", "output_dir": "o"}))
    cfg = TrainConfig.load(path, ["batch_pairs=8", "lr=1e-4", "deepspeed_config=zero3"])
    assert cfg.batch_pairs == 8 and cfg.lr == 1e-4 and cfg.r == 0.4 and cfg.alpha == 0.01 and cfg.tau_init == 3.0
    with pytest.raises(ValueError, match="unknown setting"):
        TrainConfig.load(path, ["bogus=1"])
    with pytest.raises(ValueError, match="r=2"):
        TrainConfig.load(path, ["r=2"])
    ds = resolve_deepspeed_config(json.loads(open("training/configs/zero3.json").read()), cfg, world_size=2,
                                  use_bf16=False)
    assert ds["train_micro_batch_size_per_gpu"] == 8 and ds["train_batch_size"] == 16
    assert ds["bf16"]["enabled"] is False and ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"]
    assert "auto" not in json.dumps({k: v for k, v in ds.items() if k != "zero_optimization"})
