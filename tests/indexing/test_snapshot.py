"""Consumer API against a brute-force numpy reference, for every index type; memory-mapped and
read opens answering identically; the vectorised id lookup; close(); streaming verification."""

from __future__ import annotations

import hashlib
import json
import os

import faiss
import numpy as np
import pyarrow as pa
import pytest

from indexing.build import IndexConfig, build_index
from indexing.note_ids import DuplicateNoteIds, NoteIdIndex
from indexing.publish import content_digest, publish
from indexing.snapshot import MMAP_TYPES, Snapshot, SnapshotError, read_index_file, stream_sha256
from tests.support.notes import clustered_vectors

MODEL = {"model_id": "0123456789ab", "path": "/m", "template_version": "v1-paper"}


@pytest.fixture(scope="module", params=["flat", "ivf", "sq8", "hnsw"])
def published(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"snap-{request.param}")
    x = clustered_vectors(3000, 24, clusters=30, noise=0.3, seed=11)
    ids = [f"note-{i}" for i in range(len(x))]
    built = build_index((ids, x), IndexConfig(index_key=request.param, tune_k=10, tune_recall=0.99))
    publish(root, built, date="2026-11-25", model=MODEL, content_sha256=content_digest(ids, x), metrics={})
    return root, ids, x, request.param


def test_open_and_info(published):
    root, ids, x, kind = published
    snap = Snapshot.open(root)
    info = snap.info()
    assert info["index"]["type"] == {"sq8": "ivf"}.get(kind, kind) and info["index"]["metric"] == "inner_product"
    assert info["index"]["key"] and "search_params" in info["index"] and snap.mmap
    assert info["num_vectors"] == len(ids) == len(snap) and info["dim"] == 24
    assert info["model"]["model_id"] == MODEL["model_id"]


def test_vector_roundtrip(published):
    root, ids, x, kind = published
    snap = Snapshot.open(root)
    for i in (0, 1234, 2999):   # SQ8 codes decode to within a quantisation step (2^-8 of each range)
        np.testing.assert_allclose(snap.vector(ids[i]), x[i], atol=2e-3 if kind == "sq8" else 1e-6)
    with pytest.raises(KeyError, match="not in snapshot"):
        snap.vector("nope")


def test_neighbors_match_brute_force_and_exclude_self(published):
    root, ids, x, kind = published
    snap = Snapshot.open(root)
    agree = []
    for i in (3, 500, 2500):
        got = snap.neighbors(ids[i], k=10)
        assert len(got) == 10 and ids[i] not in [n for n, _ in got]
        scores = x @ x[i]
        scores[i] = -np.inf
        ref = [ids[j] for j in np.argsort(-scores, kind="stable")[:10]]
        agree.append(len(set(ref) & {n for n, _ in got}) / 10)
        for n, s in got:  # scores are the cosine of the stored vectors
            assert s == pytest.approx(float(x[ids.index(n)] @ x[i]), abs=5e-3 if kind == "sq8" else 1e-4)
        assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)
    assert np.mean(agree) >= (1.0 if kind == "flat" else 0.9)


def test_search_normalises_queries_and_returns_note_ids(published):
    root, ids, x, kind = published
    snap = Snapshot.open(root)
    q = x[[7, 8]] * 5.0                   # unnormalised queries
    got, scores = snap.search(q, k=5)
    assert [row[0] for row in got] == [ids[7], ids[8]]
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=2e-3 if kind == "sq8" else 1e-5)  # SQ8: decoded codes
    got_all, _ = snap.search(x[:1], k=10_000)   # k capped at the corpus size
    assert len(got_all[0]) == len(ids)


# --------------------------------------------------------------------------- mmap, batches, ids, close


def mapped(path) -> bool:
    """Whether ``path`` is memory-mapped in this process (Linux: /proc/self/maps)."""
    return any(line.rstrip().endswith(str(path)) for line in open("/proc/self/maps"))


needs_proc = pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux /proc/self/maps")


@needs_proc
def test_mmap_and_read_answer_identically(published):
    root, ids, x, kind = published
    on, off = Snapshot.open(root, mmap=True), Snapshot.open(root, mmap=False)
    auto = Snapshot.open(root)
    assert on.info()["mmap"] is True and auto.mmap and on.mmap and not off.mmap
    assert mapped(on.path / "index.faiss")
    some = [ids[i] for i in (0, 17, 1500, 2999)]
    assert on.neighbors_batch(some, 7) == off.neighbors_batch(some, 7)
    assert [on.neighbors(n, 7) for n in some] == on.neighbors_batch(some, 7)
    got_on, s_on = on.search(x[[5, 9, 11]], 6)
    got_off, s_off = off.search(x[[5, 9, 11]], 6)
    assert got_on == got_off
    np.testing.assert_array_equal(s_on, s_off)
    np.testing.assert_array_equal(on.vector(ids[42]), off.vector(ids[42]))
    for snap in (on, off, auto):
        snap.close()


@needs_proc
@pytest.mark.parametrize("key", ["Flat", "HNSW8,Flat", "IVF16,Flat", "IVF16_HNSW8,SQ8", "OPQ4,IVF16_HNSW8,PQ4"])
def test_faiss_maps_every_key_the_build_makes(tmp_path, key):
    """The flags of MMAP_FLAGS really map each family (IO_FLAG_MMAP alone reads flat and HNSW into RAM),
    and the IVF direct map written by the build comes back with it."""
    from indexing.index_key import family_of
    d, x = 16, clustered_vectors(2000, 16, clusters=20, seed=3)
    index = faiss.index_factory(d, key, faiss.METRIC_INNER_PRODUCT)
    index.train(x)
    index.add(x)
    if "IVF" in key:
        faiss.extract_index_ivf(index).make_direct_map()
    path = tmp_path / "index.faiss"
    faiss.write_index(index, str(path))
    on, off = read_index_file(path, mmap=True), read_index_file(path, mmap=False)
    assert mapped(path)
    np.testing.assert_array_equal(on.search(x[:20], 5)[1], off.search(x[:20], 5)[1])
    np.testing.assert_array_equal(on.reconstruct(7), off.reconstruct(7))
    assert family_of(key) in MMAP_TYPES
    del on
    assert not mapped(path)   # dropping the index drops the mapping


def test_old_idmap2_snapshots_still_open(tmp_path):
    """Snapshots written before index keys: IndexIDMap2 around IVF, params.nprobe, no lookup arrays."""
    root, ids, x = small_snapshot(tmp_path, kind="ivf", n=2000)
    snap_dir = Snapshot.open(root).path
    d = x.shape[1]
    base = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, 8, faiss.METRIC_INNER_PRODUCT)
    old = faiss.IndexIDMap2(base)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    old.train(xn)
    old.add_with_ids(xn, np.arange(len(x), dtype=np.int64))
    faiss.write_index(old, str(snap_dir / "index.faiss"))
    manifest = json.loads((snap_dir / "manifest.json").read_text())
    manifest["index"] = {"type": "ivf", "params": {"nlist": 8, "nprobe": 8}, "metric": "inner_product"}
    for name in ("id_keys.npy", "id_order.npy", "id_pos.npy"):
        del manifest["files"][name]
    size = (snap_dir / "index.faiss").stat().st_size
    manifest["files"]["index.faiss"] = {"sha256": hashlib.sha256((snap_dir / "index.faiss").read_bytes()).hexdigest(),
                                        "bytes": size}
    (snap_dir / "manifest.json").write_text(json.dumps(manifest))
    snap = Snapshot.open(root)
    assert isinstance(snap.index, faiss.IndexIDMap2)
    assert faiss.extract_index_ivf(faiss.downcast_index(snap.index.index)).nprobe == 8
    assert snap.neighbors(ids[5], 3)[0][0] != ids[5]
    np.testing.assert_allclose(snap.vector(ids[5]), xn[5], atol=1e-6)


def test_manifest_without_mmap_field_maps_known_types(tmp_path):
    root, ids, x = small_snapshot(tmp_path)
    manifest_path = Snapshot.open(root).path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["mmap"]
    manifest_path.write_text(json.dumps(manifest))          # the manifest is not in its own files list
    assert Snapshot.open(root).mmap
    manifest["mmap"] = False
    manifest_path.write_text(json.dumps(manifest))
    assert not Snapshot.open(root).mmap and Snapshot.open(root, mmap=True).mmap
    with pytest.raises(ValueError, match="mmap must be"):
        Snapshot.open(root, mmap="yes")


def test_lookup_present_absent_and_unknown_ids(published):
    root, ids, x, _ = published
    snap = Snapshot.open(root)
    got = snap.lookup([ids[10], "nope", ids[2999], "", "note-1" * 40, ids[0]])
    assert got.dtype == np.int64 and got.tolist() == [10, -1, 2999, -1, -1, 0]
    assert snap.lookup([]).tolist() == [] and snap.has(ids[3]) and not snap.has("note-3000")
    with pytest.raises(KeyError, match=r"notes not in snapshot .*\['nope', 'zip'\]") as err:
        snap.neighbors_batch([ids[1], "nope", ids[2], "zip"], k=3)
    assert err.value.missing == ["nope", "zip"] == err.value.args[1]
    with pytest.raises(KeyError, match="not in snapshot"):
        snap.neighbors("nope")
    assert snap.neighbors_batch([], 5) == [] and len(snap.neighbors(ids[0], 0)) == 0


@pytest.mark.parametrize("values", [["a", "b", "c"], ["c", "a", "b", "aa", ""], ["é", "e", "zz", "é2", "ß"]])
def test_note_id_index_sorted_unsorted_and_unicode(values):
    index = NoteIdIndex.from_ids(pa.array(values, pa.string()), "ids.parquet")
    assert (index.order is None) == (values == sorted(values))
    assert index.lookup(values + ["missing", "é" * 9]).tolist() == list(range(len(values))) + [-1, -1]
    assert index.names(np.array([[2, -1], [0, 1]])) == [[values[2], None], [values[0], values[1]]]
    assert index.ids.to_pylist() == values


def test_note_id_index_saved_and_mapped(tmp_path):
    values = ["n-10", "n-2", "n-1", "é", "n-33"]
    NoteIdIndex.from_ids(pa.array(values), "ids").save(tmp_path)
    loaded = NoteIdIndex.load(tmp_path)
    assert all(isinstance(a, np.memmap) for a in (loaded.keys, loaded.order, loaded.pos))
    assert loaded.lookup(values + ["n-3"]).tolist() == [0, 1, 2, 3, 4, -1]
    assert loaded.names(np.array([4, 0, -1])) == [["n-33", "n-10", None]]


def test_duplicate_note_ids_refused():
    with pytest.raises(DuplicateNoteIds, match=r"ids.parquet: 1 duplicated note ids, e.g. \['b'\]"):
        NoteIdIndex.from_ids(pa.array(["b", "a", "b"]), "ids.parquet")


def test_close_is_idempotent_and_stops_queries(tmp_path):
    root, ids, x = small_snapshot(tmp_path)
    snap = Snapshot.open(root)
    snap.close()
    snap.close()
    assert snap.closed and len(snap) == len(ids) and snap.info()["num_vectors"] == len(ids)
    for query in (lambda: snap.neighbors(ids[0]), lambda: snap.neighbors_batch(ids[:2], 3),
                  lambda: snap.search(x[:1], 3), lambda: snap.vector(ids[0])):
        with pytest.raises(SnapshotError, match="is closed"):
            query()
    with Snapshot.open(root) as other:
        assert other.neighbors(ids[0], 2)
    assert other.closed


# --------------------------------------------------------------------------- streaming verification


def small_snapshot(tmp_path, kind="flat", n=300):
    x = clustered_vectors(n, 16, clusters=6, seed=5)
    ids = [f"n-{i:05d}" for i in range(n)]
    built = build_index((ids, x), IndexConfig(index_key=kind, tune_k=10))
    publish(tmp_path, built, date="2026-11-25", model=MODEL, content_sha256=content_digest(ids, x), metrics={})
    return tmp_path, ids, x


def test_stream_sha256_matches_hashlib_across_chunks(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(os.urandom(100_003))
    assert stream_sha256(path, chunk=4096) == (hashlib.sha256(path.read_bytes()).hexdigest(), 100_003)


@pytest.mark.parametrize("fname", ["index.faiss", "ids.parquet"])
@pytest.mark.parametrize("mmap", [True, False])
def test_verification_catches_flipped_byte_and_truncation(tmp_path, fname, mmap):
    root, ids, x = small_snapshot(tmp_path)
    path = Snapshot.open(root).path / fname
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match=rf"{fname}: sha256 .* \(corrupted\)"):
        Snapshot.open(root, mmap=mmap)
    path.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(SnapshotError, match=rf"{fname}: size {len(data) // 2} bytes, manifest says {len(data)}"):
        Snapshot.open(root, mmap=mmap, verify=False)
