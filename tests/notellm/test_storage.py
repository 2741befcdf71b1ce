"""notellm.storage: both backends (pyarrow.fs without Spark, the driver's Hadoop
FileSystem with it) give the same answers on the same folder, URIs and paths
with spaces included; Parquet footers are read by ranged reads."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from notellm import storage
from notellm.storage import LOCAL, StorageError


@pytest.fixture(params=["arrow", "hadoop"])
def store(request):
    if request.param == "arrow":
        return LOCAL
    return storage.for_spark(request.getfixturevalue("spark"))


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "with space" / "events"
    for rel in ("dt=2026-11-20/part-0.parquet", "dt=2026-11-20/part-1.parquet", "dt=2026-11-21/x.parquet",
                "dt=2026-11-20/_temporary/0/part-9.parquet", "dt=2026-11-20/.part-0.parquet.crc",
                "_staging/dt=2026-11-22.tmp-1/part-0.parquet", "dt=2026-11-20/_SUCCESS", "notes.txt"):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"a": list(range(5))}), path) if rel.endswith(".parquet") else path.write_text("")
    return root


def test_join_and_scheme():
    assert storage.join("s3a://b/root/", "pairs", "dt=1") == "s3a://b/root/pairs/dt=1"
    assert storage.scheme_of("hdfs://nn:8020/x") == "hdfs" and storage.scheme_of("/data/x") == ""
    assert storage.scheme_of("file:///data/x") == "file"


@pytest.mark.parametrize("form", ["path", "file_uri"])
def test_listing_skips_hidden_and_temporary_files(store, tree, form):
    root = str(tree) if form == "path" else "file://" + str(tree)
    names = [e.uri.rsplit("/events/", 1)[1] for e in store.list_files(root, ".parquet")]
    assert names == ["dt=2026-11-20/part-0.parquet", "dt=2026-11-20/part-1.parquet", "dt=2026-11-21/x.parquet"]
    assert store.is_dir(root) and not store.exists(storage.join(root, "nope"))
    assert "_staging" in store.children(root)


def test_footers_from_ranged_reads_match_pyarrow(store, tree):
    part = str(tree / "dt=2026-11-20" / "part-0.parquet")
    meta = storage.parquet_metadata(store, store.qualify(part))
    assert meta.num_rows == 5 and meta.schema.to_arrow_schema() == pq.read_schema(part)
    bad = tree / "not-parquet.parquet"
    bad.write_bytes(b"x" * 64)
    with pytest.raises(Exception, match="not-parquet|Parquet|magic"):
        storage.parquet_metadata(store, store.qualify(str(bad)))


def test_write_rename_delete(store, tmp_path):
    base = store.qualify(str(tmp_path / "a b"))
    target = storage.join(base, "x", "_stats.json")
    store.write_json(target, {"n": 1})
    store.write_json(target, {"n": 2})                      # replaced, not appended
    assert store.read_json(target) == {"n": 2}
    assert [n for n in store.children(storage.join(base, "x")) if ".tmp-" in n] == []   # no temp left
    store.mkdirs(storage.join(base, "y"))
    with pytest.raises(StorageError, match="exists"):
        store.rename(storage.join(base, "x"), storage.join(base, "y"))
    store.rename(storage.join(base, "x"), storage.join(base, "z"))
    assert store.read_json(storage.join(base, "z", "_stats.json")) == {"n": 2}
    store.delete(storage.join(base, "z"))
    store.delete(storage.join(base, "z"))                   # absent is fine
    assert not store.exists(storage.join(base, "z"))


def test_local_storage_refuses_a_file_uri_with_a_host():
    with pytest.raises(StorageError, match="host"):
        LOCAL.exists("file://otherhost/data")
