"""The bucketed embedding store without a model: the bucket hash, segment logs (last write wins,
tombstones), atomic segments, the manifest's fixed bucket count, the reader (order, take, refusals)."""

from __future__ import annotations

import json
import random

import numpy as np
import pyarrow as pa
import pytest

from indexing.buckets import auto_num_buckets, bucket_of, fnv1a64
from indexing.store import (
    STORE_FILE,
    StoreInfo,
    clean_bucket,
    create_or_check_store,
    finalize,
    fold,
    list_segments,
    live_segments,
    open_store,
    segment_table,
    write_segment,
)
from notellm.contracts import ContractError
from notellm.locking import host_tag


def fnv1a64_reference(text: str) -> int:
    """Plain FNV-1a 64 over the UTF-8 bytes."""
    h = 0xCBF29CE484222325
    for byte in text.encode("utf-8"):
        h ^= byte
        h = (h * 0x100000001B3) % (1 << 64)
    return h


def test_fnv1a64_matches_the_reference_and_known_values():
    # Published FNV-1a 64 test vectors (and the offset basis for the empty string).
    known = {"": 0xCBF29CE484222325, "a": 0xAF63DC4C8601EC8C, "foobar": 0x85944171F73967E8}
    assert [int(h) for h in fnv1a64(pa.array(list(known)))] == list(known.values())
    rng = random.Random(0)
    alphabet = "abcxyz019:-_éü中🙂"
    ids = [("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))) for _ in range(500)]
    want = [fnv1a64_reference(s) for s in ids]
    assert [int(h) for h in fnv1a64(pa.array(ids))] == want
    assert [int(h) for h in fnv1a64(pa.array(ids, pa.large_string()))] == want
    assert [int(h) for h in fnv1a64(pa.array(ids).dictionary_encode())] == want
    assert [int(h) for h in fnv1a64(pa.array(ids).slice(7, 50))] == want[7:57]        # Arrow offset honoured
    assert [int(h) for h in fnv1a64(pa.chunked_array([ids[:10], ids[10:]]))] == want
    assert list(bucket_of(pa.array(ids), 16)) == [h % 16 for h in want]
    with pytest.raises(ValueError, match="null"):
        fnv1a64(pa.array(["a", None]))


def test_auto_bucket_count():
    assert auto_num_buckets(0) == 16 and auto_num_buckets(10**6) == 16
    assert auto_num_buckets(2 * 10**6) == 32 and auto_num_buckets(10**8) == 2048
    assert auto_num_buckets(10**10) == 4096


def test_bucket_of_a_note_never_moves_when_others_come_or_go():
    ids = [f"n{i:07d}" for i in range(2000)]
    before = dict(zip(ids, bucket_of(pa.array(ids), 64)))
    changed = [i for i in ids if i[-1] != "3"] + [f"new{i}" for i in range(300)]   # deletes + inserts
    after = dict(zip(changed, bucket_of(pa.array(changed), 64)))
    assert all(after[i] == before[i] for i in changed if i in before)
    assert len(set(before.values())) == 64     # spread over every bucket


def _info(tmp_path, buckets=4, dim=3) -> StoreInfo:
    return create_or_check_store(tmp_path / "m1", "m1", dim, buckets, num_notes=0)


def _rows(ids, value, dim=3, deleted=None):
    vecs = np.full((len(ids), dim), value, np.float32)
    return segment_table(ids, vecs, "m1", [f"fp{value}"] * len(ids), deleted)


def test_fold_applies_deltas_in_order_last_write_wins_and_tombstones_delete(tmp_path):
    info = _info(tmp_path)
    write_segment(info, 0, 0, "base", _rows(["c", "a", "b"], 1.0))
    write_segment(info, 0, 1, "delta", _rows(["b", "d"], 2.0))
    write_segment(info, 0, 2, "delta", segment_table(["a", "b"], np.zeros((2, 3), np.float32), "m1", ["", "x"],
                                                     np.array([True, False])))
    state = fold(info, live_segments(list_segments(info, 0)), vectors=True)
    assert state.column("note_id").to_pylist() == ["b", "c", "d"]           # a deleted, sorted by id
    assert state.column("text_sha256").to_pylist() == ["x", "fp1.0", "fp2.0"]
    # A newer base hides everything before it, even before the old segments are removed.
    write_segment(info, 0, 3, "base", _rows(["z"], 5.0))
    assert [s.seq for s in live_segments(list_segments(info, 0))] == [3]
    assert fold(info, live_segments(list_segments(info, 0))).column("note_id").to_pylist() == ["z"]
    clean_bucket(info, 0)
    assert [s.seq for s in list_segments(info, 0)] == [3]


def test_readers_never_see_half_written_segments(tmp_path):
    info = _info(tmp_path)
    write_segment(info, 1, 0, "base", _rows(["a"], 1.0))
    d = info.bucket_dir(1)
    # What a writer killed mid-write leaves: a temporary sibling (dead pid), never the final name.
    torn = d / f".000001-delta.parquet.tmp-{host_tag()}-999999999-abcdef12"
    torn.write_bytes(b"PAR1 torn")
    assert [s.path.name for s in list_segments(info, 1)] == ["000000-base.parquet"]
    assert fold(info, list_segments(info, 1)).num_rows == 1
    clean_bucket(info, 1)
    assert not torn.exists()
    # A failing write removes its temporary file and leaves no segment.
    with pytest.raises(ContractError):
        write_segment(info, 1, 1, "delta", _rows(["b"], 1.0).drop(["deleted"]))
    assert sorted(p.name for p in d.iterdir()) == ["000000-base.parquet"]


def test_bucket_count_is_fixed_when_the_store_is_created(tmp_path):
    info = _info(tmp_path, buckets=8)
    assert json.loads((info.model_dir / STORE_FILE).read_text()) == {
        "format_version": 2, "num_buckets": 8, "hash": "fnv1a64-utf8", "dim": 3, "model_id": "m1"}
    assert create_or_check_store(info.model_dir, "m1", 3, "auto", 10**9).num_buckets == 8   # auto keeps it
    with pytest.raises(ContractError, match="has 8 buckets, 16 were asked.*rebuild"):
        create_or_check_store(info.model_dir, "m1", 3, 16, 0)
    with pytest.raises(ContractError, match="dimension 3"):
        create_or_check_store(info.model_dir, "m1", 4, "auto", 0)


def _finalised(tmp_path, n=40, buckets=4):
    info = _info(tmp_path, buckets=buckets)
    ids = [f"n{i:03d}" for i in range(n)]
    vecs = np.random.default_rng(0).standard_normal((n, 3)).astype(np.float32)
    b = bucket_of(pa.array(ids), buckets)
    for k in range(buckets):
        rows = np.nonzero(b == k)[0]
        write_segment(info, k, 0, "base", segment_table([ids[i] for i in rows], vecs[rows], "m1", ["f"] * len(rows)))
    finalize(info, {"buckets_verified": buckets, "notes": n, "vectors": n})
    return info, ids, vecs, b


def test_store_source_streams_in_canonical_order_and_takes_by_id(tmp_path):
    info, ids, vecs, b = _finalised(tmp_path)
    src = open_store(tmp_path, "m1", 3)
    assert (src.num_vectors, src.dim, src.num_buckets, src.model_id) == (40, 3, 4, "m1")
    got = [(i.to_pylist(), v) for i, v in src.batches(rows=7)]
    assert all(len(i) == 7 for i, _ in got[:-1])
    order = sorted(range(40), key=lambda i: (b[i], ids[i]))
    assert [x for i, _ in got for x in i] == [ids[i] for i in order]
    np.testing.assert_array_equal(np.concatenate([v for _, v in got]), vecs[order])
    assert [x for i, _ in src.batches(rows=7) for x in i.to_pylist()] == [ids[i] for i in order]   # same every call
    found, tv = src.take(["n005", "missing", "n001"])
    assert found == ["n005", "n001"]
    np.testing.assert_array_equal(tv, vecs[[5, 1]])


def test_open_store_refuses_unfinalised_old_and_changed_stores(tmp_path):
    info, *_ = _finalised(tmp_path)
    with pytest.raises(ContractError, match="dimension 3, asked 8"):
        open_store(tmp_path, "m1", 8)
    src = open_store(tmp_path, "m1")
    (info.model_dir / "_SUCCESS").unlink()          # what a starting embed run does first
    with pytest.raises(ContractError, match="not finalised"):
        open_store(tmp_path, "m1")
    with pytest.raises(ContractError, match="changed while it was read"):
        list(src.batches())
    old = tmp_path / "old" / "m0"
    old.mkdir(parents=True)
    (old / "shard-00000.parquet").write_bytes(b"")
    (old / "_SUCCESS").write_text("")
    with pytest.raises(ContractError, match="old-format store"):
        open_store(tmp_path / "old", "m0")
