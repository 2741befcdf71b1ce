"""The GPU bundle's parts: one archive cut into pieces that each fit one device call (issue 18).

A device call carries at most 64 MiB (the repository's tree included), while the bundle of the
GPU quality run is about three times that. So :func:`cut` splits the archive ``bundle.tgz`` into
parts of at most ``part_bytes``; part ``k`` travels in its own folder ``part-<k>/`` holding the
chunk ``bundle.tgz.<kkk>`` and ``manifest.json``, the same file in every part: the archive's size
and sha256 and each part's name, file, size and sha256.

On the GPU host :func:`receive` checks a carried part against its manifest and stores it in the
store folder (outside the repository copy, which every call replaces); :func:`assemble` checks
that every part is there and intact, joins them, checks the archive's sha256 and extracts it.
A missing or damaged part is refused with its name (:class:`PartError`), so only that part is
sent again.

Standard library only (and :mod:`notellm.files`, itself standard library only): this runs first
on the host, before any wheel is installed.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import shutil
import tarfile
from pathlib import Path

from notellm.files import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)

SCHEMA = "notellm-gpu-bundle/1"
ARCHIVE = "bundle.tgz"
MANIFEST = "manifest.json"
MiB = 1 << 20


class PartError(ValueError):
    """A part is missing, damaged or from another bundle (the message names it)."""


def part_name(k: int) -> str:
    return f"part-{k}"


def cut(archive: Path, out: Path, part_bytes: int, contents: dict | None = None) -> dict:
    """Split ``archive`` into ``out/part-<k>/`` folders of at most ``part_bytes`` each; returns the manifest."""
    if part_bytes < 1:
        raise ValueError("part_bytes must be >= 1")
    size, whole = archive.stat().st_size, hashlib.sha256()
    parts = []
    with open(archive, "rb") as src:
        for k, data in enumerate(iter(lambda: src.read(part_bytes), b""), start=1):
            whole.update(data)
            name, file = part_name(k), f"{ARCHIVE}.{k:03d}"
            (out / name).mkdir(parents=True, exist_ok=True)
            (out / name / file).write_bytes(data)
            parts.append({"name": name, "file": file, "size": len(data),
                          "sha256": hashlib.sha256(data).hexdigest()})
    digest = whole.hexdigest()
    manifest = {"schema": SCHEMA, "bundle_id": digest[:16], "archive": ARCHIVE, "size": size, "sha256": digest,
                "part_bytes": part_bytes, "parts": parts, "contents": contents or {}}
    text = json.dumps(manifest, indent=1) + "\n"
    for p in parts:
        atomic_write_text(out / p["name"] / MANIFEST, text)
    return manifest


def read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise PartError(f"{path}: no manifest (not a bundle part, or nothing received yet)") from None
    if manifest.get("schema") != SCHEMA:
        raise PartError(f"{path}: schema {manifest.get('schema')!r}, expected {SCHEMA!r}")
    return manifest


def _read_part(file: Path, entry: dict, where: str) -> bytes:
    """One chunk's bytes, its size and sha256 checked against its manifest entry."""
    name = entry["name"]
    if not file.exists():
        raise PartError(f"{name} is missing ({where}: no {file.name}); send {name} again")
    size = file.stat().st_size
    if size != entry["size"]:
        raise PartError(f"{name} is damaged ({where}: {size} bytes, manifest {entry['size']}); send {name} again")
    data = file.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry["sha256"]:
        raise PartError(f"{name} is damaged ({where}: sha256 {digest[:16]}..., manifest {entry['sha256'][:16]}...); "
                        f"send {name} again")
    return data


def receive(part_dir: Path, store: Path) -> str:
    """Check the carried ``part_dir`` against its manifest and keep it in ``store``; returns the part's name.

    A store holding parts of another bundle is emptied first (its parts could never assemble)."""
    manifest = read_manifest(part_dir / MANIFEST)
    entry = next((p for p in manifest["parts"] if p["name"] == part_dir.name), None)
    if entry is None:
        raise PartError(f"{part_dir}: the manifest lists no part named {part_dir.name!r}")
    data = _read_part(part_dir / entry["file"], entry, f"carried {part_dir}")
    parts = store / "parts"
    held = store / MANIFEST
    held_id = read_manifest(held)["bundle_id"] if held.exists() else None
    if held_id is not None and held_id != manifest["bundle_id"]:
        log.warning("store %s held bundle %s: emptied for bundle %s", store, held_id, manifest["bundle_id"])
        shutil.rmtree(parts, ignore_errors=True)
    atomic_write_bytes(parts / entry["file"], data)
    atomic_write_text(held, (part_dir / MANIFEST).read_text())
    return entry["name"]


def status(store: Path) -> dict:
    """Which parts the store holds (size-checked) and which it still lacks."""
    manifest = read_manifest(store / MANIFEST)
    have, missing = [], []
    for p in manifest["parts"]:
        f = store / "parts" / p["file"]
        (have if f.exists() and f.stat().st_size == p["size"] else missing).append(p["name"])
    return {"bundle_id": manifest["bundle_id"], "have": have, "missing": missing}


def assemble(store: Path, dest: Path) -> dict:
    """Every part checked, joined, the archive's sha256 checked and extracted into ``dest``.

    Returns the manifest. Already extracted (``dest/.bundle_id`` matches): nothing is redone."""
    manifest = read_manifest(store / MANIFEST)
    marker = dest / ".bundle_id"
    if marker.exists() and marker.read_text().strip() == manifest["bundle_id"]:
        log.info("bundle %s already extracted in %s", manifest["bundle_id"], dest)
        return manifest
    archive = store / ARCHIVE
    whole = hashlib.sha256()
    try:
        with open(archive, "wb") as out:
            for p in manifest["parts"]:             # each part read once: checked, hashed, joined
                data = _read_part(store / "parts" / p["file"], p, f"store {store}")
                whole.update(data)
                out.write(data)
    except PartError:
        archive.unlink(missing_ok=True)
        raise
    if whole.hexdigest() != manifest["sha256"]:
        raise PartError(f"the joined archive's sha256 {whole.hexdigest()[:16]}... differs from the manifest's "
                        f"{manifest['sha256'][:16]}...: the parts are from different builds; send every part again")
    tmp = dest.with_name(dest.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(tmp, filter="data")
    archive.unlink()
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp / "bundle", dest)
    shutil.rmtree(tmp, ignore_errors=True)
    atomic_write_text(marker, manifest["bundle_id"] + "\n")
    return manifest


def pack(folder: Path, archive: Path, compresslevel: int = 1) -> None:
    """``folder`` as ``bundle/`` in a gzip tar, members in sorted order, no owners or times
    (the same inputs give the same archive). Level 1: the weights barely compress (6-8 %)."""
    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        return info

    with open(archive, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=compresslevel,
                                                  mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        tar.add(folder, arcname="bundle", recursive=False, filter=clean)
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname="bundle/" + path.relative_to(folder).as_posix(), recursive=False, filter=clean)
