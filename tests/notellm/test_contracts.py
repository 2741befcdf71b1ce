"""notellm.contracts: schemas, validation errors, writers, markers, manifest."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from notellm import contracts as c
from notellm.contracts import ContractError

UTC = dt.timezone.utc


def _notes(**over):
    cols = {"note_id": ["n1"], "title": ["t"], "content": ["c"], "hashtags": [["a"]], "category": ["x"],
            "created_at": pa.array([dt.datetime(2026, 11, 1, tzinfo=UTC)], c.UTC_TIMESTAMP)}
    cols.update(over)
    return pa.table(cols)


def test_every_contract_carries_name_and_version_metadata():
    for name, contract in c.CONTRACTS.items():
        meta = contract.arrow_schema.metadata
        assert meta[b"notellm.contract"] == name.encode() and meta[b"notellm.version"] == b"1"
    assert set(c.CONTRACTS) == {"notes", "events", "notes_landing", "events_landing", "pairs", "pool",
                                "related_links", "quarantine", "ids"}
    assert all(f.nullable for f in c.NOTES_LANDING.schema) and all(f.nullable for f in c.EVENTS_LANDING.schema)
    assert not any(f.nullable for f in c.NOTES.schema) and not any(f.nullable for f in c.EVENTS.schema)


def test_round_trip_keeps_exact_types_and_metadata(tmp_path):
    path = c.write_table(_notes(), tmp_path / "notes.parquet", c.NOTES)
    back = c.read_table(path, c.NOTES)
    assert back.schema.equals(c.NOTES.arrow_schema.remove_metadata(), check_metadata=False)
    assert back.to_pylist() == _notes().to_pylist()
    meta = pq.read_schema(path).metadata
    assert meta[b"notellm.contract"] == b"notes"
    assert not list(tmp_path.glob(".*tmp*"))                  # atomic write leaves no temp file


def test_missing_column_names_file_column_and_problem(tmp_path):
    path = tmp_path / "n.parquet"
    pq.write_table(_notes().drop_columns(["category"]), path)
    with pytest.raises(ContractError) as err:
        c.read_table(path, c.NOTES)
    e = err.value
    assert e.source == str(path) and e.column == "category" and "missing" in e.problem
    assert str(path) in str(e) and "'category'" in str(e)


@pytest.mark.parametrize("column,value,expected", [
    ("created_at", pa.array([dt.datetime(2026, 11, 1)], pa.timestamp("us")), "expected type timestamp"),  # naive
    ("hashtags", pa.array(["a"]), "expected type list"),
    ("note_id", pa.array([1]), "expected type string"),
])
def test_write_table_refuses_wrong_types(tmp_path, column, value, expected):
    with pytest.raises(ContractError) as err:
        c.write_table(_notes(**{column: value}), tmp_path / "n.parquet", c.NOTES)
    assert err.value.column == column and expected in err.value.problem
    assert not (tmp_path / "n.parquet").exists()


def test_nulls_in_non_nullable_column_are_refused(tmp_path):
    with pytest.raises(ContractError, match="'title': 1 null value"):
        c.write_table(_notes(title=pa.array([None], pa.string())), tmp_path / "n.parquet", c.NOTES)
    # the landing form accepts them
    landing = pa.Table.from_pylist([{"note_id": None, "title": None, "content": None, "hashtags": None,
                                     "category": None, "created_at": "bad"}], schema=c.NOTES_LANDING.schema)
    assert c.write_table(landing, tmp_path / "l.parquet", c.NOTES_LANDING).exists()


def test_compatible_encodings_and_other_utc_spellings_are_accepted():
    t = _notes(note_id=pa.array(["n1"]).dictionary_encode(),
               created_at=pa.array([dt.datetime(2026, 11, 1, tzinfo=UTC)], pa.timestamp("ms", tz="+00:00")))
    out = c.validate_table(t, c.NOTES, "mem")
    assert out.schema.field("note_id").type == pa.string()
    assert out.schema.field("created_at").type == c.UTC_TIMESTAMP
    with pytest.raises(ContractError, match="expected type timestamp"):
        c.validate_table(_notes(created_at=pa.array([dt.datetime(2026, 11, 1)], pa.timestamp("us", tz="Europe/Paris"))),
                         c.NOTES, "mem")


def test_hive_partitioned_read_and_success_markers(tmp_path):
    ev = pa.table({"user_id": ["u"], "note_id": ["n"], "event_type": ["click"],
                   "event_time": pa.array([dt.datetime(2026, 11, 20, 8, tzinfo=UTC)], c.UTC_TIMESTAMP)})
    pdir = c.partition_dir(tmp_path / "events", dt.date(2026, 11, 20))
    assert pdir.name == "dt=2026-11-20"
    c.write_table(ev, pdir / "part-00000.parquet", c.EVENTS)
    with pytest.raises(ContractError, match="no _SUCCESS marker"):
        c.require_success(pdir)
    c.mark_success(pdir, {"rows": 1})
    assert c.require_success(pdir) == {"rows": 1}
    back = c.read_table(tmp_path / "events", c.EVENTS)      # _SUCCESS/_stats.json are ignored by the reader
    assert back.num_rows == 1 and "dt" in back.column_names
    with pytest.raises(ContractError, match="does not exist"):
        c.read_table(tmp_path / "nope", c.EVENTS)


def test_embeddings_contract_and_manifest_validation():
    e = c.embeddings_contract(8)
    assert e.schema.field("vector").type == pa.list_(pa.float32(), 8)
    with pytest.raises(ValueError):
        c.embeddings_contract(0)
    good = {"format_version": 1, "snapshot_id": "s", "created_at": "2026-11-25T00:00:00Z",
            "files": {"index.faiss": {"sha256": "ab", "bytes": 3}}, "num_vectors": 2, "dim": 8,
            "index": {"type": "flat"}, "model": {"model_id": "m"}, "data_window": {"start": None, "end": None},
            "metrics": {}}
    assert c.validate_manifest(good, "m.json") is good
    for key, bad, problem in [("dim", True, "expected int"), ("format_version", 2, "unsupported version"),
                              ("files", {"x": {"sha256": "a"}}, "needs 'sha256'")]:
        with pytest.raises(ContractError, match=problem):
            c.validate_manifest({**good, key: bad}, "m.json")
    with pytest.raises(ContractError, match="'metrics': missing"):
        c.validate_manifest({k: v for k, v in good.items() if k != "metrics"}, "m.json")
