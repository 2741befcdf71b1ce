"""Data contracts: the only shapes in which data crosses a folder boundary.

Every Parquet file the pipeline writes or reads has one of the schemas below.
Each schema carries its contract name and version in the Arrow schema
metadata (``notellm.contract`` / ``notellm.version``), so a reader can tell
which contract a file was written under. ``docs/data-contracts.md`` is the
human-readable twin of this module; keep them in step.

Writers never let Arrow infer a schema: :func:`write_table` casts to the
contract first. Readers call :func:`read_table`, which validates and fails
with a :class:`ContractError` naming the file, the column and the problem.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

UTC_TIMESTAMP = pa.timestamp("us", tz="UTC")

class ContractError(ValueError):
    """Raised when data does not match its contract. The message names the
    file (or source), the column and the problem."""

    def __init__(self, source: str, column: str | None, problem: str):
        self.source = str(source)
        self.column = column
        self.problem = problem
        where = f"column '{column}'" if column else "table"
        super().__init__(f"{self.source}: {where}: {problem}")


@dataclasses.dataclass(frozen=True)
class Contract:
    """A named, versioned Arrow schema."""

    name: str
    version: int
    schema: pa.Schema
    description: str = ""

    @property
    def arrow_schema(self) -> pa.Schema:
        return self.schema.with_metadata(
            {b"notellm.contract": self.name.encode(), b"notellm.version": str(self.version).encode()}
        )

    @property
    def columns(self) -> list[str]:
        return self.schema.names


def _contract(name: str, version: int, fields: list[pa.Field], description: str) -> Contract:
    return Contract(name=name, version=version, schema=pa.schema(fields), description=description)


NOTES = _contract(
    "notes",
    1,
    [
        pa.field("note_id", pa.string(), nullable=False),
        pa.field("title", pa.string(), nullable=False),
        pa.field("content", pa.string(), nullable=False),
        pa.field("hashtags", pa.list_(pa.string()), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("created_at", UTC_TIMESTAMP, nullable=False),
    ],
    "One row per note (short user post). note_id is unique.",
)

EVENTS = _contract(
    "events",
    1,
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("note_id", pa.string(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("event_time", UTC_TIMESTAMP, nullable=False),
    ],
    "Behaviour events (click log), stored hive-partitioned by UTC day: events/dt=YYYY-MM-DD/*.parquet.",
)

# Landing forms: what producers drop before validation. Every column is a
# nullable string (hashtags a nullable list of strings; times ISO-8601 text),
# so malformed rows can exist here and be quarantined with a reason by the
# validating step instead of failing a whole file.
NOTES_LANDING = _contract(
    "notes_landing",
    1,
    [
        pa.field("note_id", pa.string()),
        pa.field("title", pa.string()),
        pa.field("content", pa.string()),
        pa.field("hashtags", pa.list_(pa.string())),
        pa.field("category", pa.string()),
        pa.field("created_at", pa.string()),
    ],
    "Notes as dropped by producers, before validation (all nullable text).",
)

EVENTS_LANDING = _contract(
    "events_landing",
    1,
    [
        pa.field("user_id", pa.string()),
        pa.field("note_id", pa.string()),
        pa.field("event_type", pa.string()),
        pa.field("event_time", pa.string()),
    ],
    "Click-log rows as dropped by producers, before validation (all nullable text; "
    "event_time ISO-8601 with offset). Same day partitioning as events.",
)

# Event types. Synthetic/production click logs use impression/view/click;
# public data maps engagement (ask/answer/comment/favourite/rate) onto events.
EVENT_TYPES = ("impression", "view", "click", "ask", "answer", "comment", "favourite", "rate")

PAIRS = _contract(
    "pairs",
    1,
    [
        pa.field("src_note_id", pa.string(), nullable=False),
        pa.field("dst_note_id", pa.string(), nullable=False),
        pa.field("score", pa.float64(), nullable=False),
        pa.field("n_users", pa.int64(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),
        pa.field("window_start", pa.date32(), nullable=False),
        pa.field("window_end", pa.date32(), nullable=False),
    ],
    "Related-note pairs mined from co-occurrence, partitioned by run date: pairs/dt=YYYY-MM-DD/. "
    "rank is 1-based within src_note_id. window_end is inclusive.",
)

POOL = _contract(
    "pool",
    1,
    [pa.field("note_id", pa.string(), nullable=False)],
    "The test pool: every note of the test period that queries are ranked against.",
)

RELATED_LINKS = _contract(
    "related_links",
    1,
    [
        pa.field("src_note_id", pa.string(), nullable=False),
        pa.field("dst_note_id", pa.string(), nullable=False),
        pa.field("link_type", pa.string(), nullable=False),
        pa.field("created_at", UTC_TIMESTAMP, nullable=True),
    ],
    "Human-made links between notes (Stack Exchange PostLinks), used only for evaluation.",
)

QUARANTINE = _contract(
    "quarantine",
    1,
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("row_number", pa.int64(), nullable=True),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("raw", pa.string(), nullable=True),
    ],
    "Rows refused by a validation step, with the file/source, row number, reason and the raw row as JSON.",
)

IDS = _contract(
    "ids",
    1,
    [
        pa.field("faiss_id", pa.int64(), nullable=False),
        pa.field("note_id", pa.string(), nullable=False),
    ],
    "Maps the int64 ids stored in a FAISS index back to note ids.",
)


def embeddings_contract(dim: int) -> Contract:
    """Embedding store segments (v2): note id, L2-normalised float32 vector of
    fixed size, the model that made it, a hash of the exact prompt text it was
    made from (so a nightly run can reuse vectors of unchanged notes) and
    ``deleted``: true marks a tombstone (a delta segment's deletion of the note;
    its vector is all zeros and its text_sha256 empty). Base segments hold no
    tombstones."""
    if dim <= 0:
        raise ValueError(f"embedding dimension must be positive, got {dim}")
    return _contract(
        "embeddings",
        2,
        [
            pa.field("note_id", pa.string(), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), dim), nullable=False),
            pa.field("model_id", pa.string(), nullable=False),
            pa.field("text_sha256", pa.string(), nullable=False),
            pa.field("deleted", pa.bool_(), nullable=False),
        ],
        "One L2-normalised embedding per note and model, or a tombstone.",
    )


CONTRACTS = {c.name: c for c in (NOTES, EVENTS, NOTES_LANDING, EVENTS_LANDING, PAIRS, POOL, RELATED_LINKS,
                                  QUARANTINE, IDS)}


# --------------------------------------------------------------------------
# validation


def _types_compatible(expected: pa.DataType, found: pa.DataType) -> bool:
    if expected.equals(found):
        return True
    # Strings may be stored as large_string / dictionary-encoded by other writers.
    if pa.types.is_string(expected) and (
        pa.types.is_large_string(found)
        or (pa.types.is_dictionary(found) and pa.types.is_string(found.value_type))
    ):
        return True
    if pa.types.is_timestamp(expected) and pa.types.is_timestamp(found):
        return found.tz is not None and found.tz.upper() in ("UTC", "+00:00", "ETC/UTC")
    if pa.types.is_list(expected) and (pa.types.is_list(found) or pa.types.is_large_list(found)):
        return _types_compatible(expected.value_type, found.value_type)
    if pa.types.is_fixed_size_list(expected) and pa.types.is_fixed_size_list(found):
        return expected.list_size == found.list_size and _types_compatible(expected.value_type, found.value_type)
    return False


def validate_schema(schema: pa.Schema, contract: Contract, source: str) -> None:
    """Raise ContractError unless ``schema`` carries every contract column
    with a compatible type. Extra columns are allowed (e.g. partition keys)."""
    for field in contract.schema:
        idx = schema.get_field_index(field.name)
        if idx < 0:
            raise ContractError(source, field.name, f"missing (contract '{contract.name}' v{contract.version} "
                                f"needs columns {contract.columns})")
        found = schema.field(idx).type
        if not _types_compatible(field.type, found):
            raise ContractError(source, field.name, f"expected type {field.type}, found {found}")


def validate_table(table: pa.Table, contract: Contract, source: str) -> pa.Table:
    """Validate types and non-null columns; return the table cast to the
    contract (contract columns first, in contract order, extra columns kept)."""
    validate_schema(table.schema, contract, source)
    for field in contract.schema:
        if not field.nullable:
            nulls = table.column(field.name).null_count
            if nulls:
                raise ContractError(source, field.name, f"{nulls} null value(s) in a non-nullable column")
    return conform(table, contract, source)


def conform(table: pa.Table, contract: Contract, source: str = "<table>") -> pa.Table:
    """Cast the contract columns to their exact contract types."""
    arrays, fields = [], []
    for field in contract.schema:
        col = table.column(field.name)
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        try:
            col = col.cast(field.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ContractError(source, field.name, f"cannot cast {col.type} to {field.type}: {exc}") from exc
        arrays.append(col)
        fields.append(field)
    for name in table.column_names:
        if name not in contract.schema.names:
            arrays.append(table.column(name))
            fields.append(table.schema.field(name))
    schema = pa.schema(fields, metadata=contract.arrow_schema.metadata)
    return pa.Table.from_arrays(arrays, schema=schema)


def read_table(path: str | os.PathLike, contract: Contract, columns: Iterable[str] | None = None,
               filters=None) -> pa.Table:
    """Read a Parquet file or (hive-partitioned) directory and validate it."""
    path = Path(path)
    if not path.exists():
        raise ContractError(str(path), None, f"does not exist (expected '{contract.name}' data)")
    try:
        table = pq.read_table(path, columns=list(columns) if columns else None, filters=filters,
                              partitioning="hive")
    except (pa.ArrowInvalid, OSError) as exc:
        raise ContractError(str(path), None, f"unreadable as Parquet: {exc}") from exc
    if columns:
        sub = Contract(contract.name, contract.version,
                       pa.schema([contract.schema.field(c) for c in columns if c in contract.schema.names]))
        return validate_table(table, sub, str(path))
    return validate_table(table, contract, str(path))


def write_table(table: pa.Table, path: str | os.PathLike, contract: Contract, **kwargs) -> Path:
    """Write ``table`` as one Parquet file under the contract's explicit schema.

    The file is written to a temporary name and renamed, so a crash never
    leaves a truncated file under the final name.
    """
    path = Path(path)
    table = validate_table(table, contract, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp, **kwargs)
    os.replace(tmp, path)
    return path


def empty_table(contract: Contract) -> pa.Table:
    return contract.arrow_schema.empty_table()


# --------------------------------------------------------------------------
# partition completion markers

SUCCESS_MARKER = "_SUCCESS"
STATS_FILE = "_stats.json"


def mark_success(directory: str | os.PathLike, stats: dict) -> None:
    """Write the statistics JSON, then the ``_SUCCESS`` marker (last, so its
    presence means everything before it was written)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{STATS_FILE}.tmp"
    tmp.write_text(json.dumps(stats, indent=2, sort_keys=True, default=str))
    os.replace(tmp, directory / STATS_FILE)
    (directory / SUCCESS_MARKER).write_text("")


def require_success(directory: str | os.PathLike) -> dict:
    """Refuse a partition that has no ``_SUCCESS`` marker; return its stats."""
    directory = Path(directory)
    if not (directory / SUCCESS_MARKER).exists():
        raise ContractError(str(directory), None,
                            f"no {SUCCESS_MARKER} marker: the partition is incomplete or still being written")
    stats_path = directory / STATS_FILE
    return json.loads(stats_path.read_text()) if stats_path.exists() else {}


def partition_dir(root: str | os.PathLike, day) -> Path:
    """Hive-style day partition: <root>/dt=YYYY-MM-DD."""
    return Path(root) / f"dt={day.isoformat() if hasattr(day, 'isoformat') else day}"


# --------------------------------------------------------------------------
# index snapshot manifest (JSON, not Parquet)

MANIFEST_FORMAT_VERSION = 1

MANIFEST_REQUIRED = {
    "format_version": int,
    "snapshot_id": str,
    "created_at": str,          # ISO-8601 UTC
    "files": dict,              # relative name -> {"sha256": str, "bytes": int}
    "num_vectors": int,
    "dim": int,
    "index": dict,              # {"type": "flat"|"ivf"|"hnsw", "params": {...}, "metric": "inner_product"}
    "model": dict,              # {"model_id": str, "path": str, ...}
    "data_window": dict,        # {"start": date|None, "end": date|None}
    "metrics": dict,            # gate and evaluation metrics
}

# Optional: checked only when present (manifests written before a field existed stay readable).
MANIFEST_OPTIONAL = {
    "mmap": bool,               # consumers may memory-map index.faiss (indexing.snapshot.MMAP_FLAGS)
}


def validate_manifest(manifest: dict, source: str) -> dict:
    """Check a snapshot manifest against the contract; raise ContractError."""
    if not isinstance(manifest, dict):
        raise ContractError(source, None, "manifest is not a JSON object")
    for key, typ in MANIFEST_REQUIRED.items():
        if key not in manifest:
            raise ContractError(source, key, "missing from manifest")
        if not isinstance(manifest[key], typ) or (typ is int and isinstance(manifest[key], bool)):
            raise ContractError(source, key, f"expected {typ.__name__}, found {type(manifest[key]).__name__}")
    for key, typ in MANIFEST_OPTIONAL.items():
        if key in manifest and not isinstance(manifest[key], typ):
            raise ContractError(source, key, f"expected {typ.__name__}, found {type(manifest[key]).__name__}")
    if manifest["format_version"] != MANIFEST_FORMAT_VERSION:
        raise ContractError(source, "format_version",
                            f"unsupported version {manifest['format_version']} "
                            f"(reader knows {MANIFEST_FORMAT_VERSION})")
    for name, meta in manifest["files"].items():
        if (not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str)
                or not isinstance(meta.get("bytes"), int)):
            raise ContractError(source, f"files.{name}", "needs 'sha256' (str) and 'bytes' (int)")
    return manifest
