"""Approved-model registry: the hand-off from training to indexing.

Layout under a models root::

    <root>/runs/<run_id>/            model directories written by training
    <root>/APPROVED.json             the model indexing must use (replaced atomically)
    <root>/registry.jsonl            append-only history of registrations and rejections
    <root>/.lock                     the registrars' lock (notellm.locking)

Training registers a model only when it passed its quality gate; the nightly
index reads :func:`current_approved`. Nothing else is shared.

Guarantees:

* Every update holds the registrars' lock and compares ``APPROVED.json`` with
  the record the caller's gate compared against (``expected``): a registrar
  that gated against a stale approved model fails with
  :class:`notellm.cli.Conflict` and changes nothing.
* ``APPROVED.json`` records ``model_sha256sums``, the sha256 of the model's
  ``SHA256SUMS.json`` (notellm.integrity); :func:`current_approved` refuses a
  model folder whose manifest no longer has that digest, and loading the model
  checks every file against the manifest.
* A history line torn by a crash (the last one, without its newline) is
  ignored by readers and cut off by the next append; a damaged line elsewhere
  is an error naming the file and line.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from pathlib import Path

from notellm.cli import Conflict
from notellm.faults import fault_point
from notellm.files import atomic_write_bytes
from notellm.integrity import IntegrityError, check_model_id, sums_digest, verify_sums
from notellm.locking import DEFAULT_LOCK_TIMEOUT_S, locked

APPROVED = "APPROVED.json"
HISTORY = "registry.jsonl"
UNCHECKED = object()   # register(expected=UNCHECKED): no compare-and-swap

log = logging.getLogger(__name__)


def _append_history(root: Path, record: dict) -> None:
    """Append one line; first cut a torn last line (a registrar killed mid-append)."""
    path = root / HISTORY
    with open(path, "a+b") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size:
            fh.seek(max(0, size - 1))
            if fh.read(1) != b"\n":
                fh.seek(0)
                data = fh.read()
                keep = data.rfind(b"\n") + 1
                log.warning("%s: cutting a torn last line (%d bytes) before appending", path, size - keep)
                fh.truncate(keep)
        fh.seek(0, os.SEEK_END)
        fh.write((json.dumps(record, sort_keys=True) + "\n").encode())
        fh.flush()
        os.fsync(fh.fileno())


def _read_approved(root: Path) -> dict | None:
    path = root / APPROVED
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{path}: not JSON ({exc})") from None
    check_model_id(record.get("model_id"), str(path))
    return record


def register(root: str | os.PathLike, model_dir: str | os.PathLike, model_id: str, metrics: dict,
             approved: bool, reason: str = "", data_window: dict | None = None,
             expected: dict | None | object = UNCHECKED, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> dict:
    """Record a gate decision; when approved, point APPROVED.json at the model.

    ``expected`` is the approved record (or None) the caller's gate compared
    against; when APPROVED.json holds another by the time the lock is held,
    :class:`Conflict` is raised and nothing is written. An approved model must
    verify against its ``SHA256SUMS.json``; its digest is recorded.
    """
    root = Path(root)
    check_model_id(model_id, f"registration of {model_dir}")
    record = {
        "model_dir": str(Path(model_dir).resolve()),
        "model_id": model_id,
        "approved": bool(approved),
        "reason": reason,
        "metrics": metrics,
        "data_window": data_window or {},
        "registered_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if approved:
        record["model_sha256sums"] = verify_sums(model_dir)
    with locked(root, f"register {model_id}", lock_timeout_s):
        live = _read_approved(root)
        if expected is not UNCHECKED and live != expected:
            raise Conflict(f"{root / APPROVED}: names {live and live['model_id']} but this gate compared against "
                           f"{expected and expected['model_id']}; another registrar changed it. Nothing was "
                           "recorded; rerun the evaluation against the new approved model",
                           {"approved": live and live["model_id"]})
        fault_point("registry", "locked")
        _append_history(root, record)
        fault_point("registry", "history_appended")
        if approved:
            atomic_write_bytes(root / APPROVED, json.dumps(record, indent=2, sort_keys=True).encode())
            fault_point("registry", "approved_swapped")
    return record


def current_approved(root: str | os.PathLike) -> dict | None:
    """The approved model record, or None when no model was ever approved.

    Refuses (IntegrityError) a record whose model folder is gone or whose
    ``SHA256SUMS.json`` no longer has the recorded digest."""
    record = _read_approved(Path(root))
    if record is None:
        return None
    path = Path(root) / APPROVED
    if not Path(record["model_dir"]).exists():
        raise FileNotFoundError(f"{path}: approved model directory {record['model_dir']} is missing")
    recorded = record.get("model_sha256sums")
    if recorded is None:
        raise IntegrityError(f"{path}: records no model_sha256sums; re-register the model")
    if sums_digest(record["model_dir"]) != recorded:
        raise IntegrityError(f"{path}: the manifest of {record['model_dir']} changed since it was approved")
    return record


def history(root: str | os.PathLike) -> list[dict]:
    """Every recorded decision, oldest first (a torn last line is skipped)."""
    path = Path(root) / HISTORY
    if not path.exists():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    torn = lines.pop() if lines else b""   # after the last newline: empty, or a torn append
    if torn.strip():
        log.warning("%s: ignoring a torn last line (%d bytes)", path, len(torn))
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except ValueError as exc:
            raise IntegrityError(f"{path}: line {number} is not JSON ({exc})") from None
    return out
