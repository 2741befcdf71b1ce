"""The prepared training folder (training/prepare.py, training/prepared.py, training/batches.py):
saved epoch plans equal notellm.batching.plan_epoch, cleaning equals training.data.load_training_pairs,
footers reconciled, reuse / extend / rebuild, all-or-nothing under SIGKILL, and the DataLoader's
batches equal what the trainer built in-process (real Parquet, the tiny Llama's tokenizer)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from notellm import cli
from notellm.batching import plan_epoch
from notellm.contracts import NOTES, PAIRS, ContractError, mark_success, partition_dir, write_table
from tests.support.kill import kill_at_fault_point
from tests.support.pairs import make_notes_and_pairs, write_dataset
from training.config import PrepareConfig
from training.data import batch_examples, load_notes, load_training_pairs, local_examples
from training.epoch_plan import plan_epoch_indices
from training.prepare import main, prepare
from training.prepared import PreparedData, identity
from training.sampler import UniqueNoteBatchSampler


def cfg_for(part, root, out, **over) -> PrepareConfig:
    return PrepareConfig(**{"pairs": str(part), "notes": str(root), "out": str(out), "batch_pairs": 4, "seed": 0,
                            **over})


def pair_rows(pairs, day=dt.date(2026, 11, 25)):
    return [{"src_note_id": a, "dst_note_id": b, "score": 1.0, "n_users": 2, "rank": 1,
             "window_start": dt.date(2026, 11, 1), "window_end": day} for a, b in pairs]


def messy_dataset(root, n_pairs=40):
    """Notes + a two-file PAIRS partition with self-pairs, repeats in both directions, unknown notes
    (one repeated) and hub notes, so the order of files, the first occurrence and every count matter."""
    notes, pairs = make_notes_and_pairs(n_pairs)
    write_table(pa.Table.from_pylist(notes, schema=NOTES.arrow_schema), root / "notes" / "notes.parquet", NOTES)
    hub = [(pairs[0][0], pairs[i][1]) for i in range(1, 12)]
    extra = [(pairs[3][1], pairs[3][0]), (pairs[5][0], pairs[5][0]), pairs[7], ("ghost", pairs[2][0]),
             (pairs[2][0], "ghost"), ("ghost2", "ghost3")]
    part = partition_dir(root / "pairs", dt.date(2026, 11, 25))
    first, second = pairs[: n_pairs // 2] + hub, extra + pairs[n_pairs // 2:]
    write_table(pa.Table.from_pylist(pair_rows(second), schema=PAIRS.arrow_schema), part / "part-b.parquet", PAIRS)
    write_table(pa.Table.from_pylist(pair_rows(first), schema=PAIRS.arrow_schema), part / "part-a.parquet", PAIRS)
    mark_success(part, {"pairs_written": len(first) + len(second)})
    return part, root


def star(n=60, hubs=5):
    return [(f"hub{i % hubs}", f"leaf{i}") for i in range(n)] + [(f"x{i}", f"y{i}") for i in range(n)]


@pytest.mark.parametrize("batch_pairs", [1, 3, 8])
def test_fast_planner_equals_plan_epoch(batch_pairs):
    rng = np.random.default_rng(batch_pairs)
    for pairs in (star(), [(f"n{a}", f"n{b}") for a, b in rng.integers(0, 40, (300, 2)) if a != b]):
        ids = {n: i for i, n in enumerate(sorted({n for p in pairs for n in p}))}
        src = np.array([ids[a] for a, _ in pairs])
        dst = np.array([ids[b] for _, b in pairs])
        for seed in (0, 7):
            for epoch in range(3):
                ref = plan_epoch(pairs, batch_pairs, seed, epoch)
                got, left = plan_epoch_indices(src, dst, len(ids), batch_pairs, seed, epoch, chunk=17)
                assert got.tolist() == ref.batches and left == ref.left_over


def test_prepared_folder_equals_the_in_memory_loader(tmp_path):
    part, root = messy_dataset(tmp_path / "d")
    out = tmp_path / "prep"
    result = prepare(cfg_for(part, root, out, seed=3, max_steps=23, max_missing_fraction=0.5))
    pairs, notes, report = load_training_pairs(part, root, max_missing_fraction=0.5)
    data = PreparedData(out)
    assert result["status"] == "built" and data.report == report
    assert (report.self_pairs, report.duplicate_pairs, report.missing_note_pairs, report.missing_note_ids) == \
        (1, 3, 2, 3)   # (ghost, x) repeats (x, ghost): a duplicate before it is a missing-note pair
    # the cleaned pairs in Parquet order (files by name), notes by row: what load_training_pairs gives
    rows = data.notes_at(np.arange(data.notes.num_rows))
    assert [(rows[a]["note_id"], rows[b]["note_id"]) for a, b in zip(data.src, data.dst)] == pairs
    assert {r["note_id"]: r for r in rows} == notes and data.categories == sorted({n["category"] for n in rows})
    # saved plans: plan_epoch's batches; as many epochs as 23 steps need; steps like the old sampler
    sampler = UniqueNoteBatchSampler(pairs, 4, seed=3)
    counts = [len(plan_epoch(pairs, 4, 3, e).batches) for e in range(4)]
    need = next(e + 1 for e in range(4) if sum(counts[:e + 1]) >= 23)
    assert data.planned_epochs == need
    for e in range(need + 1):   # the last one is planned on the spot, with the same planner
        assert data.plan(e).tolist() == plan_epoch(pairs, 4, 3, e).batches
    for step in (0, 5, 11, 22, 23, sum(counts[:need])):
        assert data.position(step) == sampler.position(step)
    assert data.global_batch(22).tolist() == sampler.global_batch(22)
    ex = data.batch_examples(data.global_batch(4), 0.4, 3, 4)
    assert ex == batch_examples(sampler.global_batch(4), pairs, notes, 0.4, 3, 4)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [p["left_over"] for p in manifest["plans"]] == [plan_epoch(pairs, 4, 3, e).left_over for e in range(need)]
    assert manifest["identity"]["pairs"]["rows"] == report.pairs_read
    assert [f["name"] for f in manifest["identity"]["pairs"]["files"]] == ["part-a.parquet", "part-b.parquet"]


def test_bad_input_is_refused_like_the_loader(tmp_path):
    part, root = write_dataset(tmp_path / "d1", n_pairs=8, success=False)
    with pytest.raises(ContractError, match="_SUCCESS"):
        prepare(cfg_for(part, root, tmp_path / "p1"))
    part, root = write_dataset(tmp_path / "d2", n_pairs=8, missing=2)
    with pytest.raises(ContractError, match="missing"):
        prepare(cfg_for(part, root, tmp_path / "p2", max_missing_fraction=0.1))
    assert not (tmp_path / "p2").exists() and not list(tmp_path.glob(".p2.tmp-*"))
    with pytest.raises(cli.BadInput, match="cannot fill one batch"):
        prepare(cfg_for(part, root, tmp_path / "p3", batch_pairs=9, max_missing_fraction=0.5))
    notes = pq.read_table(root / "notes" / "notes.parquet")
    write_table(pa.concat_tables([notes, notes.slice(0, 1)]), root / "notes" / "notes.parquet", NOTES)
    with pytest.raises(ContractError, match="duplicate note_id 'n0000a'"):
        prepare(cfg_for(part, root, tmp_path / "p4", max_missing_fraction=0.5))
    pq.write_table(pq.read_table(part / "pairs.parquet").drop_columns(["score"]), part / "pairs.parquet")
    with pytest.raises(ContractError, match="column 'score': missing"):
        prepare(cfg_for(part, root, tmp_path / "p5", max_missing_fraction=0.5))
    (part / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(ContractError, match="bad.parquet"):
        prepare(cfg_for(part, root, tmp_path / "p5", max_missing_fraction=0.5))


def test_rows_read_are_reconciled_with_the_footers(tmp_path, monkeypatch):
    part, root = write_dataset(tmp_path / "d", n_pairs=12)
    real = pq.ParquetFile.iter_batches

    def losing_rows(self, *args, **kwargs):   # a reader that silently drops rows
        for batch in real(self, *args, **kwargs):
            yield batch.slice(1) if "src_note_id" in batch.schema.names else batch
    monkeypatch.setattr(pq.ParquetFile, "iter_batches", losing_rows)
    with pytest.raises(ContractError, match="11 rows read but its footer says 12"):
        prepare(cfg_for(part, root, tmp_path / "p"))
    assert not (tmp_path / "p").exists()


def test_rerun_reuses_extends_or_rebuilds(tmp_path, capsys):
    part, root = write_dataset(tmp_path / "d", n_pairs=16)
    out = tmp_path / "prep"
    args = ["--pairs", str(part), "--notes", str(root), "--out", str(out), "--batch-pairs", "4"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["reuse"] == "built" and first["epochs"] == 1 and first["batches"] == [4]
    before = (out / "manifest.json").read_bytes()
    assert main(args) == 0 and json.loads(capsys.readouterr().out)["reuse"] == "reused"
    assert (out / "manifest.json").read_bytes() == before
    assert main(args + ["--max-steps", "10"]) == 0
    assert json.loads(capsys.readouterr().out)["reuse"] == "extended" and PreparedData(out).planned_epochs == 3
    assert main(args + ["--seed", "1"]) == 0 and json.loads(capsys.readouterr().out)["reuse"] == "built"
    assert PreparedData(out).seed == 1
    # other inputs: a changed partition (its footers and _stats.json) rebuilds
    write_dataset(tmp_path / "d", n_pairs=20)
    assert main(args + ["--seed", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["pairs_used"] == 20
    # the trainer's prepared_dir is only read: another seed or other inputs are refused
    with pytest.raises(cli.BadInput, match="seed"):
        PreparedData(out).check(identity(part, root, 4, 2))
    assert main(["--pairs", str(part), "--notes", str(root), "--out", str(tmp_path / "x"), "--batch-pairs", "0"]) == 2
    assert json.loads(capsys.readouterr().out)["status"] == "bad_input"


@pytest.mark.parametrize("point", ["prepare:files_written", "prepare:staged", "prepare:old_moved_aside",
                                   "prepare:renamed"])
def test_sigkill_leaves_the_old_folder_or_none_and_a_rerun_completes(tmp_path, point):
    part, root = write_dataset(tmp_path / "d", n_pairs=16)
    out = tmp_path / "prep"
    prepare(cfg_for(part, root, out))
    old = (out / "manifest.json").read_bytes()
    kill_at_fault_point(lambda: prepare(cfg_for(part, root, out, seed=5)), point, tmp_path / "ready")
    if out.exists():   # the old folder whole, or (killed after the swap) the new one whole
        data = PreparedData(out)
        assert data.seed == (5 if point == "prepare:renamed" else 0)
        assert (out / "manifest.json").read_bytes() == old or point == "prepare:renamed"
    else:
        assert point == "prepare:old_moved_aside"
    assert prepare(cfg_for(part, root, out, seed=5))["status"] == ("reused" if point == "prepare:renamed" else "built")
    assert PreparedData(out).seed == 5 and not list(tmp_path.glob(".prep.tmp-*"))


def test_dataloader_workers_yield_the_in_process_batches(tmp_path, tiny_llama_dir):
    import torch

    from notellm.encoder import NoteEncoder
    from training.batches import BatchStream, StepBatches, step_loader

    part, root = write_dataset(tmp_path / "d", n_pairs=16)
    prepare(cfg_for(part, root, tmp_path / "prep", batch_pairs=4, seed=2, max_steps=9))
    data = PreparedData(tmp_path / "prep")
    encoder = NoteEncoder.build(tiny_llama_dir, template_version="v2-short")
    pairs, notes, _ = load_training_pairs(part, root)
    sampler = UniqueNoteBatchSampler(pairs, 4, seed=2)

    def expected(step, rank):
        mine = local_examples(batch_examples(sampler.global_batch(step), pairs, notes, 0.4, 2, step), rank, 2)
        return encoder.collate([encoder.prompts.encode(e.note, task=e.task, hashtags_out=e.hashtags_out)
                                for e in mine], with_labels=True)

    dataset = StepBatches(data, encoder.prompts, encoder.tokenizer.pad_token_id, 0.4, 2, 1, 2, 9)
    clone = pickle.loads(pickle.dumps(dataset))   # what a spawned worker gets: the maps reopen by path
    assert clone.data.notes.num_rows == data.notes.num_rows and clone.examples(3) == dataset.examples(3)
    got = list(step_loader(dataset, 3, workers=2))
    assert len(got) == 6
    for step, batch in zip(range(3, 9), got):
        want = expected(step, 1)
        assert batch.keys() == want.keys() and all(torch.equal(batch[k], want[k]) for k in want)
    stream = BatchStream(dataset, workers=2)
    for step in (4, 5, 2, 8):   # in order from the workers, out of order built on the spot
        assert torch.equal(stream.get(step)["input_ids"], expected(step, 1)["input_ids"])
    assert load_notes(root)   # the in-memory reader stays for evaluation


def test_trainer_entry_prepares_under_the_run_and_only_reads_a_given_folder(tmp_path):
    from training.config import TrainConfig
    from training.prepared import open_for_training

    part, root = write_dataset(tmp_path / "d", n_pairs=16)
    train = TrainConfig(pairs=str(part), notes=str(root), output_dir=str(tmp_path / "run"), batch_pairs=4,
                        max_steps=6)
    data = open_for_training(train, tmp_path / "run")
    assert data.path == tmp_path / "run" / "prepared" and data.planned_epochs == 2
    given = dataclasses.replace(train, prepared_dir=str(data.path), output_dir=str(tmp_path / "run2"))
    assert open_for_training(given, tmp_path / "run2").digest == data.digest
    with pytest.raises(cli.BadInput, match="seed"):
        open_for_training(dataclasses.replace(given, seed=1), tmp_path / "run2")
    assert not (tmp_path / "run2").exists()
