"""Embedding the corpus: order independence, bf16 vs fp32, resumable shards,
incremental == full, worker sharding. Tiny random Llama with the real tokenizer."""

from __future__ import annotations

import random

import numpy as np
import pyarrow.parquet as pq
import pytest

from indexing.embed import EmbedConfig, embed_corpus
from indexing.launch import embed_multiprocess
from indexing.store import existing_shards, finalize, load_embeddings, make_plan
from notellm.contracts import ContractError, require_success
from notellm.encoder import NoteEncoder
from tests.support.notes import make_notes, notes_table, synthetic_note, write_notes


@pytest.fixture(scope="module")
def encoder(tiny_encoder_dir):
    return NoteEncoder.load(tiny_encoder_dir)


@pytest.fixture(scope="module")
def notes():
    return make_notes(32, seed=3)


def cfg(**kw):
    kw.setdefault("shard_size", 8)
    kw.setdefault("batch_size", 8)
    kw.setdefault("precision", "fp32")
    kw.setdefault("progress", False)
    return EmbedConfig(**kw)


def store(tmp_path, encoder, notes):
    plan, _ = make_plan(notes_table(notes), encoder.config.prompt_config, 1 << 30)
    return load_embeddings(tmp_path, encoder.config.model_id, encoder.config.dim, plan)


def test_length_sorted_equals_unsorted_per_note(encoder, notes):
    sorted_ = encoder.embed_notes(notes, batch_size=8, sort_by_length=True)
    plain = encoder.embed_notes(notes, batch_size=8, sort_by_length=False)
    one_by_one = np.concatenate([encoder.embed_notes([n], batch_size=1) for n in notes[:6]])
    # Same note, same vector, whatever batch it lands in and however much padding it gets.
    np.testing.assert_allclose(sorted_, plain, atol=2e-5)
    np.testing.assert_allclose(sorted_[:6], one_by_one, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(sorted_, axis=1), 1.0, atol=1e-5)


def test_bf16_autocast_matches_fp32_by_cosine(encoder, notes):
    fp32 = encoder.embed_notes(notes, batch_size=8, autocast_bf16=False)
    bf16 = encoder.embed_notes(notes, batch_size=8, autocast_bf16=True)
    cosine = (fp32 * bf16).sum(axis=1)
    assert cosine.min() > 0.995, cosine.min()   # the default precision='auto' relies on this
    assert not np.array_equal(fp32, bf16)       # bf16 really ran


def test_store_layout_contract_and_success_marker(tmp_path, encoder, notes):
    stats = embed_corpus(encoder, notes_table(notes), tmp_path, cfg())
    model_dir = tmp_path / encoder.config.model_id
    assert sorted(p.name for p in model_dir.glob("shard-*.parquet")) == [f"shard-0000{i}.parquet" for i in range(4)]
    meta = pq.read_schema(model_dir / "shard-00000.parquet").metadata
    assert meta[b"notellm.contract"] == b"embeddings"
    assert require_success(model_dir)["notes"] == len(notes)
    assert (stats.embedded, stats.reused, stats.shards_written) == (32, 0, 4)
    ids, vecs = store(tmp_path, encoder, notes)
    ref = encoder.embed_notes(sorted(notes, key=lambda n: n["note_id"]), batch_size=8)
    assert ids == sorted(n["note_id"] for n in notes)
    np.testing.assert_allclose(vecs, ref, atol=2e-5)


class Crash(Exception):
    pass


def test_crash_after_k_shards_then_resume_skips_complete_shards(tmp_path, encoder, notes):
    def crash_after_two(shard):
        if shard == 1:
            raise Crash("simulated crash after 2 shards")

    with pytest.raises(Crash):
        embed_corpus(encoder, notes_table(notes), tmp_path, cfg(incremental=False), after_shard=crash_after_two)
    model_dir = tmp_path / encoder.config.model_id
    assert sorted(existing_shards(model_dir)) == [0, 1]
    assert not (model_dir / "_SUCCESS").exists()
    # Only whole shards exist: each holds exactly its planned rows.
    assert pq.read_metadata(model_dir / "shard-00001.parquet").num_rows == 8
    mtimes = {i: p.stat().st_mtime_ns for i, p in existing_shards(model_dir).items()}

    stats = embed_corpus(encoder, notes_table(notes), tmp_path, cfg(incremental=False))
    assert stats.shards_skipped == 2 and stats.shards_written == 2 and stats.embedded == 32 - 16
    assert all(existing_shards(model_dir)[i].stat().st_mtime_ns == mtimes[i] for i in (0, 1))
    _, resumed = store(tmp_path, encoder, notes)
    fresh = tmp_path / "fresh"
    embed_corpus(encoder, notes_table(notes), fresh, cfg(incremental=False))
    _, full = store(fresh, encoder, notes)
    np.testing.assert_array_equal(resumed, full)


def test_full_mode_reembeds_everything_from_an_old_run(tmp_path, encoder, notes):
    embed_corpus(encoder, notes_table(notes), tmp_path, cfg())
    stats = embed_corpus(encoder, notes_table(notes), tmp_path, cfg(incremental=False))
    assert stats.embedded == 32 and stats.reused == 0


def test_incremental_equals_full_and_costs_only_the_changes(tmp_path, encoder, notes):
    embed_corpus(encoder, notes_table(notes), tmp_path, cfg())
    rng = random.Random(7)
    changed = list(notes)
    changed[5] = synthetic_note(5, rng, version=2)           # edited note
    changed[25] = dict(changed[25], hashtags=["new-tag"])      # hashtags are part of the prompt
    del changed[12:22]                                         # deleted notes
    changed += [synthetic_note(100, rng)]                      # a new note
    changed[10] = dict(changed[10], category="other")          # not in the inference prompt: reused

    stats = embed_corpus(encoder, notes_table(changed), tmp_path, cfg())
    assert stats.embedded == 2 + 1 and stats.reused == len(changed) - 3
    ids, incremental = store(tmp_path, encoder, changed)
    assert not {f"n{i:05d}" for i in range(12, 22)} & set(ids)   # deleted notes disappeared
    # 23 notes -> 3 shards; the old 4th shard is gone, no stale rows left behind.
    assert sorted(existing_shards(tmp_path / encoder.config.model_id)) == [0, 1, 2]

    full_root = tmp_path / "full"
    embed_corpus(encoder, notes_table(changed), full_root, cfg(incremental=False))
    full_ids, full = store(full_root, encoder, changed)
    assert ids == full_ids
    np.testing.assert_allclose(incremental, full, atol=2e-5)

    again = embed_corpus(encoder, notes_table(changed), tmp_path, cfg())
    assert again.embedded == 0 and again.shards_written == 0   # nothing changed: nothing to do


def test_worker_sharding_covers_the_corpus(tmp_path, encoder, notes):
    table = notes_table(notes)
    s0 = embed_corpus(encoder, table, tmp_path, cfg(), rank=0, world_size=2)
    assert not (tmp_path / encoder.config.model_id / "_SUCCESS").exists()   # not finalised by a worker
    with pytest.raises(ContractError, match="missing or stale"):
        finalize(tmp_path, encoder.config.model_id, make_plan(table, encoder.config.prompt_config, 8)[0])
    s1 = embed_corpus(encoder, table, tmp_path, cfg(), rank=1, world_size=2)
    assert s0.shards_written == 2 and s1.shards_written == 2 and s0.embedded + s1.embedded == 32
    finalize(tmp_path, encoder.config.model_id, make_plan(table, encoder.config.prompt_config, 8)[0])
    _, vecs = store(tmp_path, encoder, notes)
    ref = encoder.embed_notes(sorted(notes, key=lambda n: n["note_id"]), batch_size=8)
    np.testing.assert_allclose(vecs, ref, atol=2e-5)


def test_duplicate_note_ids_are_refused(tmp_path, encoder, notes):
    with pytest.raises(ContractError, match="duplicate note id"):
        embed_corpus(encoder, notes_table(notes + [notes[0]]), tmp_path, cfg())


def test_stale_store_is_refused_by_the_reader(tmp_path, encoder, notes):
    embed_corpus(encoder, notes_table(notes), tmp_path, cfg())
    edited = [dict(notes[0], title="something else")] + notes[1:]
    with pytest.raises(ContractError, match="stale vectors"):
        store(tmp_path, encoder, edited)


@pytest.mark.slow
def test_multiprocess_cpu_workers(tmp_path, encoder, notes, tiny_encoder_dir):
    notes_path = write_notes(notes[:12], tmp_path / "notes" / "notes.parquet")
    stats = embed_multiprocess(tiny_encoder_dir, notes_path, tmp_path / "emb", cfg(shard_size=3), num_procs=2)
    assert stats["embedded"] == 12 and stats["shards_written"] == 4
    _, vecs = store(tmp_path / "emb", encoder, notes[:12])
    ref = encoder.embed_notes(sorted(notes[:12], key=lambda n: n["note_id"]), batch_size=8)
    np.testing.assert_allclose(vecs, ref, atol=2e-5)
