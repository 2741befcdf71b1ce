"""Package the Spark jobs for ``spark-submit``: one zip (``--py-files``) and one
entry script per job (the application), so a cluster driver needs neither the
repository nor an install of this project, only Python with pyspark and
pyarrow (the ``spark`` extra).

The zip holds the packages the jobs import (``jobs``, ``notellm``, ``sql``
with its ``.sql`` templates, read through ``importlib.resources``) and a
``jobs/BUILD.json`` naming its digest; :func:`code_digest` reads it back, so
a job's ``_stats.json`` says which code built the partition. The zip is
byte-for-byte deterministic (sorted entries, fixed times and modes), its name
carries the digest, and it is written by temp file + rename: a DAG task may
package on every run and reuse what is already there.

Run: ``python -m jobs.package --out DIR``; prints one JSON line with
``py_files`` and one ``<job>`` entry-script path per job::

    spark-submit --master spark://host:7077 --py-files DIR/notellm-jobs-<d>.zip \\
        DIR/cooccurrence-<d>.py --events hdfs:///notellm/events ...

The output folder is a local path: spark-submit uploads local ``--py-files``
and applications to YARN's staging dir (or to
``spark.kubernetes.file.upload.path`` on Kubernetes); docs/operations.md has
the deploy lines.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import io
import json
import os
import sys
import zipfile
from pathlib import Path

from jobs.config import PackageConfig
from notellm import cli

PACKAGES = ("jobs", "notellm", "sql")
# The jobs that run under spark-submit: entry-script name -> module with main().
JOBS = {"cooccurrence": "jobs.cooccurrence", "split": "jobs.split"}
SUFFIXES = (".py", ".sql", ".json")
BUILD_FILE = "BUILD.json"
SOURCE_TREE = "source-tree"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)     # the earliest time a zip entry can hold: no build-time leak


def package_files() -> list[tuple[str, bytes]]:
    """``(archive name, content)`` of every module and data file of :data:`PACKAGES`, sorted."""
    found = []
    for package in PACKAGES:
        root = Path(str(importlib.resources.files(package)))
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            if (not path.is_file() or path.suffix not in SUFFIXES or "__pycache__" in rel.parts
                    or (package == "jobs" and rel.as_posix() == BUILD_FILE)):
                continue
            found.append((f"{package}/{rel.as_posix()}", path.read_bytes()))
    return sorted(found)


def digest_of(files: list[tuple[str, bytes]]) -> str:
    """sha256 over every ``name NUL length NUL content``, in order."""
    h = hashlib.sha256()
    for name, content in files:
        h.update(name.encode() + b"\0" + str(len(content)).encode() + b"\0" + content)
    return h.hexdigest()


def _zip_bytes(files: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, content in files:
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, content)
    return buffer.getvalue()


def entry_script(module: str, digest: str) -> str:
    return (f'"""spark-submit entry point of {module} (built by python -m jobs.package, code {digest[:12]}).\n'
            f'Needs the matching notellm-jobs-{digest[:12]}.zip in --py-files."""\n'
            f"import sys\n\nfrom {module} import main\n\nsys.exit(main())\n")


def _write_once(path: Path, content: bytes) -> None:
    """Write ``path`` atomically unless it already holds ``content`` (names carry digests)."""
    if path.is_file() and path.read_bytes() == content:
        return
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def build(out: str | os.PathLike) -> dict:
    """Write the zip and the entry scripts into ``out``; return their paths and the digest."""
    files = package_files()
    digest = digest_of(files)
    tag = digest[:12]
    build_info = json.dumps({"digest": digest, "files": len(files)}, sort_keys=True).encode()
    files = sorted(files + [(f"jobs/{BUILD_FILE}", build_info)])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    archive = out / f"notellm-jobs-{tag}.zip"
    _write_once(archive, _zip_bytes(files))
    result = {"digest": digest, "py_files": str(archive)}
    for job, module in JOBS.items():
        script = out / f"{job}-{tag}.py"
        _write_once(script, entry_script(module, digest).encode())
        result[job] = str(script)
    return result


def code_digest() -> str:
    """The digest of the package this code was loaded from, or ``source-tree``."""
    try:
        return json.loads(importlib.resources.files("jobs").joinpath(BUILD_FILE).read_text())["digest"]
    except (FileNotFoundError, OSError, KeyError, ValueError):
        return SOURCE_TREE


def command(cfg: PackageConfig, timer: cli.Timer) -> dict:
    with timer.phase("package"):
        return build(cfg.out)


def main(argv: list[str] | None = None) -> int:
    return cli.main(command, PackageConfig, argv, prog="python -m jobs.package")


if __name__ == "__main__":
    sys.exit(main())
