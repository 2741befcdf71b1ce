"""Data paths as URIs, on whichever filesystem holds them.

Every data path the jobs and DAGs touch (events, notes, pairs, splits, work
dirs) is a URI string: ``file:///data/x``, ``hdfs://nn:8020/x``,
``s3a://bucket/x``, or scheme-less. Paths below one are joined with ``/``
(:func:`join`), never through ``pathlib`` (``Path("s3a://b/x")`` is
``s3a:/b/x``). Two backends share one interface, :class:`Storage`:

* :class:`notellm.storage_hadoop.HadoopStorage` (a Spark session): the Hadoop ``FileSystem`` of the
  Spark driver, which is the one the executors read and write; scheme-less
  paths mean the cluster's ``fs.defaultFS`` (HDFS on most YARN clusters).
  Jobs qualify every path through it first, so the driver never lists one
  filesystem while the executors read another.
* :class:`ArrowStorage` (no Spark session: the DAG's checks, a local run's
  fail-fast input check before a JVM starts): ``pyarrow.fs``; scheme-less and
  ``file:`` paths are local (written with fsync), ``s3a://`` is read as
  ``s3://``, ``hdfs://`` needs libhdfs.

Names of files or folders starting with ``_`` or ``.`` below a listed root
are never data (``_temporary/`` of a running Spark commit, ``_SUCCESS``,
``.x.tmp-*`` of a writer): :meth:`Storage.list_files` skips them, so readers
see committed files only.

Parquet footers are read through the same interface (:func:`parquet_metadata`:
two ranged reads of the file's tail), so schema and row-count checks cost the
same on S3 as on a local disk and need no data read.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
from urllib.parse import urlsplit

from notellm import locking

PARQUET_MAGIC = b"PAR1"


@dataclasses.dataclass(frozen=True)
class FileEntry:
    uri: str
    size: int


class StorageError(OSError):
    """A filesystem operation failed; the message names the URI."""


def scheme_of(uri: str) -> str:
    """``hdfs`` for ``hdfs://nn/x``, ``""`` for a scheme-less path (``/data/x`` or ``data/x``)."""
    text = str(uri)
    if "://" not in text and not text.startswith("file:"):
        return ""
    return urlsplit(text).scheme.lower()


def join(base: str, *parts: str) -> str:
    """``base/part/...`` with single slashes; a URI stays a URI (``s3a://b/x`` + ``y`` = ``s3a://b/x/y``)."""
    out = str(base).rstrip("/") or "/"
    for part in parts:
        part = str(part).strip("/")
        if part:
            out = out + part if out.endswith("/") else f"{out}/{part}"
    return out


def name_of(uri: str) -> str:
    """The last path component."""
    return str(uri).rstrip("/").rsplit("/", 1)[-1]


def is_data_name(name: str) -> bool:
    """False for ``_SUCCESS``, ``_temporary``, ``.x.tmp-*`` and the like."""
    return not name.startswith(("_", "."))


def temp_name(name: str) -> str:
    """A sibling name for staging ``name``: hidden, and unique to this host and process."""
    return locking.temp_name(name)


def _relative_parts(base: str, uri: str) -> list[str]:
    base_path = urlsplit(base).path.rstrip("/") if "://" in base or base.startswith("file:") else base.rstrip("/")
    path = urlsplit(uri).path if "://" in uri or uri.startswith("file:") else uri
    rel = path[len(base_path):] if path.startswith(base_path) else path
    return [p for p in rel.split("/") if p]


class Storage:
    """The filesystem operations the jobs and DAG checks use; ``uri`` arguments are strings."""

    def qualify(self, uri: str) -> str:
        raise NotImplementedError

    def info(self, uri: str) -> str | None:
        """``"file"``, ``"dir"`` or None (absent)."""
        raise NotImplementedError

    def _list_all(self, uri: str) -> list[FileEntry]:
        raise NotImplementedError

    def children(self, uri: str) -> list[str]:
        """Names of the files and folders directly in ``uri`` (hidden ones included), sorted."""
        raise NotImplementedError

    def size(self, uri: str) -> int:
        raise NotImplementedError

    def read_range(self, uri: str, offset: int, length: int) -> bytes:
        raise NotImplementedError

    def read_bytes(self, uri: str) -> bytes:
        return self.read_range(uri, 0, self.size(uri))

    def _write_new(self, uri: str, data: bytes) -> None:
        """Create ``uri`` (which must not exist) with ``data``, durably."""
        raise NotImplementedError

    def rename(self, src: str, dst: str) -> None:
        """Move a file or folder; ``dst`` must not exist."""
        raise NotImplementedError

    def delete(self, uri: str) -> None:
        """Remove a file or a folder tree; absent is fine."""
        raise NotImplementedError

    def mkdirs(self, uri: str) -> None:
        raise NotImplementedError

    # ---- derived operations (one definition for both backends)

    def exists(self, uri: str) -> bool:
        return self.info(uri) is not None

    def is_dir(self, uri: str) -> bool:
        return self.info(uri) == "dir"

    def is_file(self, uri: str) -> bool:
        return self.info(uri) == "file"

    def list_files(self, uri: str, suffix: str = "") -> list[FileEntry]:
        """Data files below ``uri`` (recursive), sorted: names ending with
        ``suffix``, and no path component below ``uri`` starting with ``_`` or ``.``."""
        found = []
        for entry in self._list_all(uri):
            parts = _relative_parts(uri, entry.uri)
            if parts and all(is_data_name(p) for p in parts) and parts[-1].endswith(suffix):
                found.append(entry)
        return sorted(found, key=lambda e: e.uri)

    def write_bytes(self, uri: str, data: bytes) -> None:
        """Replace ``uri`` with ``data`` through a hidden temp sibling and a rename,
        so a reader sees the old bytes or the new ones, never a torn file."""
        parent, name = uri.rstrip("/").rsplit("/", 1) if "/" in uri.rstrip("/") else (".", uri)
        tmp = join(parent, temp_name(name))
        self.mkdirs(parent)
        try:
            self._write_new(tmp, data)
            if self.exists(uri):     # HDFS and object stores refuse a rename onto a file
                self.delete(uri)
            self.rename(tmp, uri)
        except BaseException:
            self.delete(tmp)
            raise

    def read_text(self, uri: str) -> str:
        return self.read_bytes(uri).decode("utf-8")

    def write_text(self, uri: str, text: str) -> None:
        self.write_bytes(uri, text.encode("utf-8"))

    def read_json(self, uri: str):
        return json.loads(self.read_text(uri))

    def write_json(self, uri: str, obj) -> None:
        self.write_text(uri, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


# --------------------------------------------------------------------------- pyarrow.fs / local


def _local_path(uri: str) -> str | None:
    """The local path of a scheme-less or ``file:`` URI, else None."""
    text = str(uri)
    sch = scheme_of(text)
    if sch == "":
        return os.path.abspath(text)
    if sch == "file":
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise StorageError(f"{uri}: file URIs with a host are not local paths")
        return parts.path or "/"
    return None


class ArrowStorage(Storage):
    """``pyarrow.fs`` (local, S3, HDFS with libhdfs); local writes are fsynced."""

    def __init__(self):
        self._remote: dict[tuple[str, str], object] = {}

    def _split(self, uri: str):
        local = _local_path(uri)
        if local is not None:
            return None, local
        from pyarrow import fs as pafs

        parts = urlsplit(str(uri))
        sch = "s3" if parts.scheme in ("s3a", "s3n") else parts.scheme
        key = (sch, parts.netloc)
        if key not in self._remote:
            self._remote[key] = pafs.FileSystem.from_uri(f"{sch}://{parts.netloc}/")[0]
        path = f"{parts.netloc}{parts.path}" if sch == "s3" else parts.path
        return self._remote[key], path.rstrip("/") or "/"

    def _uri(self, like: str, path: str) -> str:
        """``path`` (of the backend) written the way ``like`` was."""
        sch = scheme_of(like)
        if sch == "":
            return path
        parts = urlsplit(str(like))
        if sch == "file":
            return "file://" + path
        if sch in ("s3a", "s3n", "s3"):
            return f"{parts.scheme}://{path}"
        return f"{parts.scheme}://{parts.netloc}{path}"

    def qualify(self, uri: str) -> str:
        fs, path = self._split(uri)
        return path if fs is None and scheme_of(uri) == "" else self._uri(uri, path)

    def info(self, uri: str) -> str | None:
        fs, path = self._split(uri)
        if fs is None:
            return "dir" if os.path.isdir(path) else "file" if os.path.exists(path) else None
        from pyarrow import fs as pafs

        kind = fs.get_file_info(path).type
        return {pafs.FileType.File: "file", pafs.FileType.Directory: "dir"}.get(kind)

    def _list_all(self, uri: str) -> list[FileEntry]:
        fs, path = self._split(uri)
        if fs is None:
            if os.path.isfile(path):
                return [FileEntry(self._uri(uri, path), os.path.getsize(path))]
            out = []
            for dirpath, dirs, files in os.walk(path):
                dirs[:] = [d for d in dirs if is_data_name(d)]   # never descend into _temporary/ or .tmp dirs
                out += [FileEntry(self._uri(uri, os.path.join(dirpath, f)), os.path.getsize(os.path.join(dirpath, f)))
                        for f in files]
            return out
        from pyarrow import fs as pafs

        if fs.get_file_info(path).type == pafs.FileType.File:
            return [FileEntry(uri, fs.get_file_info(path).size)]
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
        return [FileEntry(self._uri(uri, i.path), i.size) for i in infos if i.type == pafs.FileType.File]

    def children(self, uri: str) -> list[str]:
        fs, path = self._split(uri)
        if fs is None:
            return sorted(os.listdir(path)) if os.path.isdir(path) else []
        from pyarrow import fs as pafs

        infos = fs.get_file_info(pafs.FileSelector(path, recursive=False, allow_not_found=True))
        return sorted(i.base_name for i in infos)

    def size(self, uri: str) -> int:
        fs, path = self._split(uri)
        try:
            return os.path.getsize(path) if fs is None else fs.get_file_info(path).size
        except OSError as exc:
            raise StorageError(f"{uri}: {exc}") from exc

    def read_range(self, uri: str, offset: int, length: int) -> bytes:
        fs, path = self._split(uri)
        try:
            if fs is None:
                with open(path, "rb") as fh:
                    fh.seek(offset)
                    return fh.read(length)
            with fs.open_input_file(path) as fh:
                fh.seek(offset)
                return fh.read(length)
        except OSError as exc:
            raise StorageError(f"{uri}: {exc}") from exc

    def _write_new(self, uri: str, data: bytes) -> None:
        fs, path = self._split(uri)
        if fs is None:
            from notellm.files import write_bytes_durable

            write_bytes_durable(path, data)
            return
        with fs.open_output_stream(path) as out:
            out.write(data)

    def rename(self, src: str, dst: str) -> None:
        fs, src_path = self._split(src)
        _, dst_path = self._split(dst)
        if self.exists(dst):
            raise StorageError(f"cannot rename {src} to {dst}: the target exists")
        if fs is None:
            from notellm.files import fsync_dir

            os.rename(src_path, dst_path)
            fsync_dir(os.path.dirname(dst_path))
            return
        fs.move(src_path, dst_path)

    def delete(self, uri: str) -> None:
        fs, path = self._split(uri)
        if fs is None:
            import shutil

            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.unlink(path)
            return
        kind = self.info(uri)
        if kind == "dir":
            fs.delete_dir(path)
        elif kind == "file":
            fs.delete_file(path)

    def mkdirs(self, uri: str) -> None:
        fs, path = self._split(uri)
        if fs is None:
            os.makedirs(path, exist_ok=True)
        else:
            fs.create_dir(path, recursive=True)


def for_spark(spark) -> Storage:
    """The storage a Spark job uses: the driver's Hadoop FileSystem
    (:class:`notellm.storage_hadoop.HadoopStorage`)."""
    from notellm.storage_hadoop import HadoopStorage

    return HadoopStorage(spark)


LOCAL = ArrowStorage()


# --------------------------------------------------------------------------- Parquet footers


def parquet_metadata(storage: Storage, uri: str):
    """A Parquet file's ``FileMetaData`` from two ranged reads of its tail (no data read)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    size = storage.size(uri)
    if size < 12:
        raise StorageError(f"{uri}: {size} bytes is too short for a Parquet file")
    tail = storage.read_range(uri, size - 8, 8)
    if tail[4:] != PARQUET_MAGIC:
        raise StorageError(f"{uri}: no Parquet magic at the end of the file (truncated or not Parquet)")
    footer_len = struct.unpack("<i", tail[:4])[0]
    if not 0 < footer_len <= size - 12:
        raise StorageError(f"{uri}: footer length {footer_len} does not fit the file's {size} bytes")
    footer = storage.read_range(uri, size - 8 - footer_len, footer_len)
    try:
        return pq.read_metadata(pa.BufferReader(PARQUET_MAGIC + footer + tail))
    except (pa.ArrowInvalid, OSError) as exc:
        raise StorageError(f"{uri}: unreadable Parquet footer: {exc}") from exc
