"""Embedding into the bucketed store, in process: batching, precision, what a change writes
(only a delta in its own bucket), compaction, incremental == full, resuming a full run,
refused input. Tiny random Llama with the real tokenizer."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pyarrow as pa
import pytest

from indexing.buckets import bucket_of
from indexing.config import EmbedConfig
from indexing.embed import embed_corpus
from indexing.store import open_store
from notellm.collator import token_budget_batches
from notellm.contracts import ContractError, require_success
from notellm.encoder import NoteEncoder
from notellm.inference import embed_notes
from tests.support.notes import make_notes, notes_table, synthetic_note, write_notes

BUCKETS = 16


@pytest.fixture(scope="module")
def encoder(tiny_encoder_dir):
    return NoteEncoder.load(tiny_encoder_dir)


@pytest.fixture(scope="module")
def notes():
    return make_notes(64, seed=3)


def cfg(**kw):
    kw.setdefault("num_buckets", BUCKETS)
    kw.setdefault("max_batch_tokens", 512)
    kw.setdefault("precision", "fp32")
    kw.setdefault("progress", False)
    return EmbedConfig(**kw)


def stored(root, encoder) -> tuple[list, np.ndarray]:
    """Every stored vector by note id order."""
    src = open_store(root, encoder.config.model_id, encoder.config.dim)
    ids, vecs = zip(*src.batches())
    ids = [x for a in ids for x in a.to_pylist()]
    vecs = np.concatenate(vecs)
    order = np.argsort(ids)
    return [ids[i] for i in order], vecs[order]


def files(root) -> dict:
    return {p.relative_to(root).as_posix(): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in root.rglob("*.parquet")}


def test_length_sorted_equals_unsorted_per_note(encoder, notes):
    sorted_ = encoder.embed_notes(notes, batch_size=8, sort_by_length=True)
    plain = encoder.embed_notes(notes, batch_size=8, sort_by_length=False)
    one_by_one = np.concatenate([encoder.embed_notes([n], batch_size=1) for n in notes[:6]])
    # Same note, same vector, whatever batch it lands in and however much padding it gets.
    np.testing.assert_allclose(sorted_, plain, atol=2e-5)
    np.testing.assert_allclose(sorted_[:6], one_by_one, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(sorted_, axis=1), 1.0, atol=1e-5)


def test_token_budget_batches_fit_the_budget_and_give_the_same_vectors(encoder, notes):
    lengths = [5, 50, 7, 50, 20, 3, 120]
    batches = token_budget_batches(lengths, max_batch_tokens=100, max_batch_notes=3)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert [list(b) for b in batches] == [[6], [1, 3], [4, 2, 0], [5]]   # longest first, ties in input order
    assert all(len(b) * max(lengths[i] for i in b) <= 100 or len(b) == 1 for b in batches)
    budget = embed_notes(encoder, notes, batch_size=64, max_batch_tokens=600)
    np.testing.assert_allclose(budget, encoder.embed_notes(notes, batch_size=8), atol=2e-5)


def test_bf16_autocast_and_bf16_weights_match_fp32_by_cosine(encoder, notes, tiny_encoder_dir):
    import torch
    fp32 = encoder.embed_notes(notes, batch_size=8, autocast_bf16=False)
    bf16 = encoder.embed_notes(notes, batch_size=8, autocast_bf16=True)
    cosine = (fp32 * bf16).sum(axis=1)
    assert cosine.min() > 0.995, cosine.min()   # the default precision='auto' relies on this
    assert not np.array_equal(fp32, bf16)       # bf16 really ran
    weights = NoteEncoder.load(tiny_encoder_dir).to(torch.bfloat16)   # what a GPU rank runs (auto)
    w = weights.embed_notes(notes, batch_size=8)
    assert w.dtype == np.float32 and (fp32 * w).sum(axis=1).min() > 0.99


def test_store_layout_manifest_and_success_marker(tmp_path, encoder, notes):
    stats = embed_corpus(encoder, notes_table(notes), tmp_path, cfg())
    model_dir = tmp_path / encoder.config.model_id
    buckets = set(bucket_of(pa.array([n["note_id"] for n in notes]), BUCKETS))
    assert sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*.parquet")) == \
        [f"b{b:05d}/000000-base.parquet" for b in sorted(buckets)]
    done = require_success(model_dir)
    assert done["notes"] == done["vectors"] == 64 and done["reconciles"] and done["num_buckets"] == BUCKETS
    assert (stats.embedded, stats.reused, stats.buckets_written) == (64, 0, len(buckets))
    assert done["bytes_written"] == sum((model_dir / f).stat().st_size for f in files(model_dir))
    ids, vecs = stored(tmp_path, encoder)
    ref = encoder.embed_notes(sorted(notes, key=lambda n: n["note_id"]), batch_size=8)
    assert ids == sorted(n["note_id"] for n in notes)
    np.testing.assert_allclose(vecs, ref, atol=2e-5)


def test_insert_delete_and_edit_each_write_one_delta_in_their_own_bucket(tmp_path, encoder, notes):
    embed_corpus(encoder, notes_table(notes), tmp_path, cfg(compact_fraction=0.9))
    model_dir = tmp_path / encoder.config.model_id
    before = files(model_dir)
    rng = random.Random(7)
    changed = list(notes)
    edited, gone = changed[5]["note_id"], changed[40]["note_id"]
    changed[5] = synthetic_note(5, rng, version=2)
    del changed[40]
    changed.append(synthetic_note(1000, rng))
    changed[10] = dict(changed[10], category="other")        # not in the inference prompt: nothing to do
    touched = set(bucket_of(pa.array([edited, gone, "n01000"]), BUCKETS))
    stats = embed_corpus(encoder, notes_table(changed), tmp_path, cfg(compact_fraction=0.9))
    assert (stats.embedded, stats.deleted, stats.reused) == (2, 1, 63 - 1)
    after = files(model_dir)
    assert {k: v for k, v in after.items() if k in before} == before          # nothing rewritten, nothing removed
    new = sorted(set(after) - set(before))
    assert [n.split("/")[1] for n in new] == ["000001-delta.parquet"] * len(touched)
    assert {int(n[1:6]) for n in new} == touched
    assert stats.bytes_written == sum((model_dir / n).stat().st_size for n in new)
    ids, _ = stored(tmp_path, encoder)
    assert gone not in ids and "n01000" in ids and len(ids) == 64
    again = embed_corpus(encoder, notes_table(changed), tmp_path, cfg(compact_fraction=0.9))
    assert again.embedded == 0 and again.buckets_written == 0 and files(model_dir) == after   # idempotent


def test_compaction_folds_deltas_into_a_new_base(tmp_path, encoder, notes):
    embed_corpus(encoder, notes_table(notes), tmp_path, cfg(compact_fraction=0.25))
    model_dir = tmp_path / encoder.config.model_id
    bucket = int(bucket_of(pa.array([notes[0]["note_id"]]), BUCKETS)[0])
    same_bucket = [i for i, n in enumerate(notes) if bucket_of(pa.array([n["note_id"]]), BUCKETS)[0] == bucket]
    changed = [dict(n, title=n["title"] + " edited") if i in same_bucket else n for i, n in enumerate(notes)]
    stats = embed_corpus(encoder, notes_table(changed), tmp_path, cfg(compact_fraction=0.25))
    assert stats.compactions == 1 and stats.embedded == len(same_bucket)
    left = sorted(p.name for p in (model_dir / f"b{bucket:05d}").iterdir() if p.name != ".lock")   # the writers' lock
    assert left == ["000001-base.parquet"]
    ids, vecs = stored(tmp_path, encoder)
    fresh = tmp_path / "fresh"
    embed_corpus(encoder, notes_table(changed), fresh, cfg(incremental=False))
    _, full = stored(fresh, encoder)
    np.testing.assert_allclose(vecs, full, atol=2e-5)


def test_incremental_equals_full_after_mixed_changes(tmp_path, encoder, notes):
    embed_corpus(encoder, notes_table(notes), tmp_path, cfg())
    rng = random.Random(11)
    changed = [synthetic_note(i, rng, version=3) if i % 9 == 0 else n for i, n in enumerate(notes)]
    del changed[20:26]
    changed += [synthetic_note(500 + i, rng) for i in range(5)]
    embed_corpus(encoder, notes_table(changed), tmp_path, cfg())
    ids, incremental = stored(tmp_path, encoder)
    full_root = tmp_path / "full"
    embed_corpus(encoder, notes_table(changed), full_root, cfg(incremental=False))
    full_ids, full = stored(full_root, encoder)
    assert ids == full_ids == sorted(n["note_id"] for n in changed)
    np.testing.assert_allclose(incremental, full, atol=2e-5)


class Crash(Exception):
    pass


def test_full_mode_reembeds_everything_and_resumes_its_own_interrupted_run(tmp_path, encoder, notes, monkeypatch):
    embed_corpus(encoder, notes_table(notes), tmp_path, cfg())
    model_dir = tmp_path / encoder.config.model_id
    import indexing.embed as embed_mod
    real, calls = embed_mod._BucketWriter._embed, []

    def crash_on_fourth(self, rows):
        calls.append(rows.num_rows)
        if len(calls) == 4:
            raise Crash("simulated crash in the 4th bucket")
        return real(self, rows)

    monkeypatch.setattr(embed_mod._BucketWriter, "_embed", crash_on_fourth)
    with pytest.raises(Crash):
        embed_corpus(encoder, notes_table(notes), tmp_path, cfg(incremental=False))
    monkeypatch.undo()
    assert not (model_dir / "_SUCCESS").exists() and (model_dir / "_run.json").exists()
    with pytest.raises(ContractError, match="not finalised"):
        open_store(tmp_path, encoder.config.model_id)
    resumed = embed_corpus(encoder, notes_table(notes), tmp_path, cfg(incremental=False))
    assert resumed.embedded == 64 - sum(calls[:3]) and resumed.reused == sum(calls[:3])
    assert not (model_dir / "_run.json").exists()
    again = embed_corpus(encoder, notes_table(notes), tmp_path, cfg(incremental=False))   # a new full run
    assert again.embedded == 64 and again.reused == 0
    assert all(p.name.startswith("000002-base") for p in model_dir.rglob("*.parquet"))   # older segments gone


def test_bad_input_is_refused_naming_file_and_field(tmp_path, encoder, notes):
    path = write_notes(notes + [dict(notes[3], title="again")], tmp_path / "dup" / "notes.parquet")
    with pytest.raises(ContractError, match=r"dup/notes.parquet: column 'note_id': 1 duplicate note id\(s\), "
                                            r"e.g. \['n00003'\]"):
        embed_corpus(encoder, path, tmp_path / "emb", cfg())
    table = notes_table(notes).set_column(0, "note_id", pa.array([None] + [n["note_id"] for n in notes[1:]]))
    import pyarrow.parquet as pq
    pq.write_table(table, tmp_path / "null.parquet")
    with pytest.raises(ContractError, match=r"null.parquet: column 'note_id': 1 null value"):
        embed_corpus(encoder, tmp_path / "null.parquet", tmp_path / "emb", cfg())
    with pytest.raises(ContractError, match="does not exist"):
        embed_corpus(encoder, tmp_path / "nope.parquet", tmp_path / "emb", cfg())
    embed_corpus(encoder, notes_table(notes), tmp_path / "emb", cfg())
    with pytest.raises(ContractError, match="has 16 buckets, 32 were asked"):
        embed_corpus(encoder, notes_table(notes), tmp_path / "emb", cfg(num_buckets=32))


def test_external_workers_without_a_group_then_finalize(tmp_path, encoder, notes, tiny_encoder_dir):
    from indexing.launch import finalize_from_notes
    path = write_notes(notes, tmp_path / "notes.parquet")
    s0 = embed_corpus(encoder, path, tmp_path / "emb", cfg(), rank=0, world_size=2)
    model_dir = tmp_path / "emb" / encoder.config.model_id
    assert not (model_dir / "_SUCCESS").exists()                 # a worker never finalises
    with pytest.raises(ContractError, match=r"bucket\(s\) missing or stale"):
        finalize_from_notes(tiny_encoder_dir, path, tmp_path / "emb")
    s1 = embed_corpus(encoder, path, tmp_path / "emb", cfg(), rank=1, world_size=2)
    assert s0.embedded + s1.embedded == 64 and s0.buckets == s1.buckets == BUCKETS // 2
    done = finalize_from_notes(tiny_encoder_dir, path, tmp_path / "emb")
    assert done["vectors"] == 64 and done["finalized_by"] == "embed --finalize"
    assert open_store(tmp_path / "emb", encoder.config.model_id).num_vectors == 64
