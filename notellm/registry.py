"""Approved-model registry: the hand-off from training to indexing.

Layout under a models root::

    <root>/runs/<run_id>/            model directories written by training
    <root>/APPROVED.json             the model indexing must use (replaced atomically)
    <root>/registry.jsonl            append-only history of registrations and rejections

Training registers a model only when it passed its quality gate; the nightly
index reads :func:`current_approved`. Nothing else is shared.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

APPROVED = "APPROVED.json"
HISTORY = "registry.jsonl"


def _append_history(root: Path, record: dict) -> None:
    with open(root / HISTORY, "a") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def register(root: str | os.PathLike, model_dir: str | os.PathLike, model_id: str, metrics: dict,
             approved: bool, reason: str = "", data_window: dict | None = None) -> dict:
    """Record a gate decision; when approved, point APPROVED.json at the model."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    record = {
        "model_dir": str(Path(model_dir).resolve()),
        "model_id": model_id,
        "approved": bool(approved),
        "reason": reason,
        "metrics": metrics,
        "data_window": data_window or {},
        "registered_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    _append_history(root, record)
    if approved:
        tmp = root / f".{APPROVED}.tmp-{os.getpid()}"
        with open(tmp, "w") as fh:
            fh.write(json.dumps(record, indent=2, sort_keys=True))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, root / APPROVED)
    return record


def current_approved(root: str | os.PathLike) -> dict | None:
    """The approved model record, or None when no model was ever approved."""
    path = Path(root) / APPROVED
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    if not Path(record["model_dir"]).exists():
        raise FileNotFoundError(f"{path}: approved model directory {record['model_dir']} is missing")
    return record


def history(root: str | os.PathLike) -> list[dict]:
    path = Path(root) / HISTORY
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
