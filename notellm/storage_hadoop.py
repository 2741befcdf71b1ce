"""The :class:`notellm.storage.Storage` of a Spark job: the driver's Hadoop
``FileSystem`` through the py4j gateway, so listing, footer reads, staging
and commits go to the filesystem (and credentials, and ``fs.defaultFS``) the
executors use. Obtained with :func:`notellm.storage.for_spark`."""

from __future__ import annotations

from notellm.storage import FileEntry, Storage, StorageError, is_data_name


class HadoopStorage(Storage):
    """The Spark driver's Hadoop ``FileSystem`` (through the py4j gateway): the
    filesystem, credentials and ``fs.defaultFS`` the executors use."""

    def __init__(self, spark):
        self._jvm = spark.sparkContext._jvm
        self._conf = spark.sparkContext._jsc.hadoopConfiguration()

    def _fs(self, uri: str):
        path = self._jvm.org.apache.hadoop.fs.Path(str(uri))
        return path.getFileSystem(self._conf), path

    def qualify(self, uri: str) -> str:
        fs, path = self._fs(uri)
        return fs.makeQualified(path).toString()

    def info(self, uri: str) -> str | None:
        fs, path = self._fs(uri)
        if not fs.exists(path):
            return None
        return "dir" if fs.getFileStatus(path).isDirectory() else "file"

    def _list_all(self, uri: str) -> list[FileEntry]:
        fs, path = self._fs(uri)
        if not fs.exists(path):
            return []
        out, pending = [], [path]
        while pending:   # listStatus per folder: hidden folders (_temporary/) are never walked
            for status in fs.listStatus(pending.pop()):
                child = status.getPath()
                if status.isDirectory():
                    if is_data_name(child.getName()):
                        pending.append(child)
                else:
                    out.append(FileEntry(child.toString(), int(status.getLen())))
        return out

    def children(self, uri: str) -> list[str]:
        fs, path = self._fs(uri)
        if not fs.exists(path) or not fs.getFileStatus(path).isDirectory():
            return []
        return sorted(status.getPath().getName() for status in fs.listStatus(path))

    def list_files(self, uri: str, suffix: str = "") -> list[FileEntry]:
        qualified = self.qualify(uri)   # listStatus answers qualified paths
        return super().list_files(qualified, suffix)

    def size(self, uri: str) -> int:
        fs, path = self._fs(uri)
        try:
            return int(fs.getFileStatus(path).getLen())
        except Exception as exc:  # noqa: BLE001 - py4j wraps FileNotFoundException
            raise StorageError(f"{uri}: {exc}") from exc

    def read_range(self, uri: str, offset: int, length: int) -> bytes:
        fs, path = self._fs(uri)
        stream = fs.open(path)
        try:
            stream.seek(offset)
            return bytes(stream.readNBytes(int(length)))
        finally:
            stream.close()

    def _write_new(self, uri: str, data: bytes) -> None:
        fs, path = self._fs(uri)
        out = fs.create(path, False)
        try:
            out.write(bytearray(data))
            out.hsync()   # durable on HDFS; a flush elsewhere
        finally:
            out.close()

    def rename(self, src: str, dst: str) -> None:
        fs, src_path = self._fs(src)
        _, dst_path = self._fs(dst)
        if fs.exists(dst_path):
            raise StorageError(f"cannot rename {src} to {dst}: the target exists")
        if not fs.rename(src_path, dst_path):
            raise StorageError(f"cannot rename {src} to {dst}")

    def delete(self, uri: str) -> None:
        fs, path = self._fs(uri)
        if fs.exists(path):
            fs.delete(path, True)

    def mkdirs(self, uri: str) -> None:
        fs, path = self._fs(uri)
        fs.mkdirs(path)
