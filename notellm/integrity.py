"""sha256 manifests of written folders (model exports, training checkpoints) and
strict ids before they become path components.

A writer calls :func:`write_sums` once every file of a folder is durable; the
manifest ``SHA256SUMS.json`` lists each file (relative POSIX name, bytes,
sha256). Before the folder is used (a model loaded or registered, a checkpoint
resumed) :func:`verify_sums` checks that exactly the listed files are there
with those digests: a torn save, a bit flip, a file swapped in or added after
the save is refused, naming the file. The digest of the manifest itself
(:func:`sums_digest`) pins the whole folder; ``APPROVED.json`` records it.

This detects corruption and accidental mixing, not a malicious writer who can
rewrite the manifest as well: DeepSpeed checkpoints are pickles, so the runs
folder must be writable by the trainer only (docs/operations.md).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path, PurePosixPath

from notellm.cli import BadInput
from notellm.files import atomic_write_bytes, sha256_file

SUMS_FILE = "SHA256SUMS.json"
SUMS_FORMAT = 1
#: A model id: the hex weights digest (notellm.encoder.weights_digest); it names store folders and snapshots.
MODEL_ID = re.compile(r"^[0-9a-f]{8,64}$")


class IntegrityError(BadInput):
    """A folder does not match its manifest, or a name is not allowed (exit 2: a retry reads the same bytes)."""


def check_model_id(model_id: object, where: str) -> str:
    """``model_id`` if it matches :data:`MODEL_ID` (lower-case hex), else IntegrityError naming ``where``."""
    if not isinstance(model_id, str) or not MODEL_ID.match(model_id):
        raise IntegrityError(f"{where}: model_id {model_id!r} is not a model id (8-64 lower-case hex digits); "
                             "it would become a path component")
    return model_id


def check_relative_name(name: object, where: str) -> str:
    """A manifest entry: a relative POSIX path inside the folder (no '..', no absolute path,
    no backslash, no empty or '.' parts), else IntegrityError."""
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        raise IntegrityError(f"{where}: file name {name!r} is not a relative path")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts) or PurePosixPath(name).as_posix() != name \
            or name.endswith("/"):
        raise IntegrityError(f"{where}: file name {name!r} leaves the folder or is not normalised")
    return name


def _listing(directory: Path) -> list[str]:
    names = []
    for dirpath, dirs, files in os.walk(directory):
        dirs.sort()
        for f in sorted(files):
            rel = Path(dirpath, f).relative_to(directory).as_posix()
            if rel != SUMS_FILE:
                names.append(rel)
    return names


def write_sums(directory: str | os.PathLike) -> str:
    """Write ``SHA256SUMS.json`` over every file below ``directory`` (atomically); returns its sha256."""
    directory = Path(directory)
    files = {name: {"bytes": (directory / name).stat().st_size, "sha256": sha256_file(directory / name)}
             for name in _listing(directory)}
    data = json.dumps({"format": SUMS_FORMAT, "files": files}, indent=1, sort_keys=True).encode()
    atomic_write_bytes(directory / SUMS_FILE, data)
    return sums_digest(directory)


def sums_digest(directory: str | os.PathLike) -> str:
    path = Path(directory) / SUMS_FILE
    if not path.exists():
        raise IntegrityError(f"{path}: missing; the folder was not completely written (or predates manifests)")
    return sha256_file(path)


def verify_sums(directory: str | os.PathLike, expected_digest: str | None = None) -> str:
    """Check ``directory`` against its manifest; returns the manifest's sha256.

    ``expected_digest`` (e.g. from ``APPROVED.json``) must equal it when given.
    Refused, naming the file: a missing or unreadable manifest, a name that
    leaves the folder, a missing, resized, changed or unlisted file."""
    directory = Path(directory)
    path = directory / SUMS_FILE
    digest = sums_digest(directory)
    if expected_digest is not None and digest != expected_digest:
        raise IntegrityError(f"{path}: sha256 {digest[:16]}... but {expected_digest[:16]}... was recorded; "
                             "the folder was rewritten after it was recorded")
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
        if manifest.get("format") != SUMS_FORMAT or not isinstance(files, dict):
            raise ValueError(f"format {manifest.get('format')!r}")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{path}: not a manifest ({exc})") from None
    for name in files:
        check_relative_name(name, str(path))
    present = set(_listing(directory))
    unlisted = sorted(present - set(files))
    if unlisted:
        raise IntegrityError(f"{directory / unlisted[0]}: not in {SUMS_FILE} ({len(unlisted)} unlisted file(s)); "
                             "nothing may be added to a written folder")
    for name, entry in sorted(files.items()):
        target = directory / name
        if name not in present:
            raise IntegrityError(f"{target}: listed in {SUMS_FILE} but missing")
        size = target.stat().st_size
        if size != entry.get("bytes"):
            raise IntegrityError(f"{target}: {size} bytes, {entry.get('bytes')} in {SUMS_FILE} (truncated or torn)")
        if sha256_file(target) != entry.get("sha256"):
            raise IntegrityError(f"{target}: sha256 differs from {SUMS_FILE} (corrupted or replaced)")
    return digest
