"""The data layout under one pipeline root: the single definition every stage
default, DAG task and Asset URI uses (docs/data-contracts.md describes each
contract). Standard library only: DAG files import it at parse time.

The root is a local path or a URI (``hdfs://nn/notellm``, ``s3a://bucket/notellm``);
paths below it are joined with ``/`` so a URI stays a URI.
"""

from __future__ import annotations

import dataclasses
import os


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where each contract lives under ``root``."""

    root: str

    def _join(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    @property
    def notes(self) -> str:
        """NOTES: the deduplicated notes table (one file, replaced atomically by ingest)."""
        return self._join("notes", "notes.parquet")

    @property
    def events(self) -> str:
        """EVENTS: ``dt=YYYY-MM-DD/`` partitions of the click log."""
        return self._join("events")

    @property
    def pairs(self) -> str:
        """PAIRS: ``dt=YYYY-MM-DD/`` partitions of co-occurrence pairs (with _SUCCESS and _stats.json)."""
        return self._join("pairs")

    @property
    def pairs_quarantine(self) -> str:
        """QUARANTINE of the pair-mining job: rejected event rows with reasons."""
        return self._join("quarantine", "pairs")

    @property
    def splits(self) -> str:
        """Train/test splits: ``dt=YYYY-MM-DD/{train_pairs,test_pairs,pool}``."""
        return self._join("splits")

    @property
    def models(self) -> str:
        """Models root: ``runs/<run_id>/``, APPROVED.json, registry.jsonl."""
        return self._join("models")

    @property
    def approved(self) -> str:
        return self._join("models", "APPROVED.json")

    @property
    def embeddings(self) -> str:
        """EMBEDDINGS store: ``<model_id>/_store.json`` + ``<model_id>/bNNNNN/<seq>-{base,delta}.parquet``."""
        return self._join("embeddings")

    @property
    def index(self) -> str:
        """Snapshot root: ``snapshots/<name>/`` and ``snapshots/CURRENT``."""
        return self._join("index")

    @property
    def current_snapshot(self) -> str:
        return self._join("index", "snapshots", "CURRENT")


def asset_uri(path: str) -> str:
    """An Airflow Asset URI for a layout path (``file://`` for local paths)."""
    return path if "://" in path else "file://" + os.path.abspath(path)
