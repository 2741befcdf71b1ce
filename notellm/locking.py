"""Writers that share a root: an advisory lock around pointer updates, and temp
names that say which host and process own them.

Two publishers (the DAG and a manual CLI run, or two DAG runs) may update the
same pointer (``CURRENT``, ``APPROVED.json``) or the same store bucket. Each
such update runs inside :func:`locked`, an exclusive ``fcntl.flock`` on a lock
file next to the pointer, and re-reads the pointer under it (compare-and-swap:
the caller says what it expects to replace, and a stale writer fails with
:class:`Conflict` instead of silently winning).

``flock`` is honoured by local filesystems and by NFSv4 (Linux emulates it with
byte-range locks there); object stores (S3) have no locks, so pointer roots
live on a POSIX filesystem (docs/operations.md).

Temp names end in ``.tmp-<host>-<pid>-<nonce>``: cleanup removes a temp file
only when its owner is provably gone: a dead pid on this host, or, for another
host's (which this host cannot probe), an age above ``stale_s``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import socket
import time
import uuid
from pathlib import Path
from typing import Iterator

from notellm.cli import Conflict
from notellm.files import pid_alive

LOCK_FILE = ".lock"
#: How long a writer waits for another writer's lock before failing with Conflict.
DEFAULT_LOCK_TIMEOUT_S = 600.0
#: Another host's temp file is only removed once it is this old (its owner cannot be probed).
DEFAULT_STALE_TEMP_S = 6 * 3600.0

_TEMP = re.compile(r"\.tmp-(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-(?P<nonce>[0-9a-f]{8})$")


def host_tag() -> str:
    """This host's name with every character outside [A-Za-z0-9_] replaced, so it parses back."""
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname()) or "host"


def temp_suffix() -> str:
    """``.tmp-<host>-<pid>-<nonce>``: unique to this process and attempt."""
    return f".tmp-{host_tag()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def temp_name(name: str) -> str:
    """A hidden staging sibling for ``name``."""
    return f".{name}{temp_suffix()}"


def temp_owner(name: str) -> tuple[str, int] | None:
    """(host, pid) of a temp name, or None when ``name`` is not one."""
    m = _TEMP.search(name)
    return (m.group("host"), int(m.group("pid"))) if m else None


def temp_owner_gone(path: str | os.PathLike, stale_s: float = DEFAULT_STALE_TEMP_S,
                    now: float | None = None) -> bool:
    """True when the temp file or directory at ``path`` can be removed: its owner is a dead
    process on this host, or it belongs to another host and is older than ``stale_s``."""
    path = Path(path)
    owner = temp_owner(path.name)
    if owner is None:
        return False
    host, pid = owner
    if host == host_tag():
        return not pid_alive(pid)
    try:
        age = (now if now is not None else time.time()) - path.lstat().st_mtime
    except FileNotFoundError:
        return False
    return age > stale_s


@contextlib.contextmanager
def locked(directory: str | os.PathLike, purpose: str, timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
           lock_name: str = LOCK_FILE) -> Iterator[Path]:
    """Hold the exclusive lock of ``directory`` (``<directory>/.lock``) for the block.

    Waits up to ``timeout_s`` for another holder, then raises :class:`Conflict`
    naming the lock file and what its holder recorded (host, pid, purpose). The
    lock is released by the kernel when the holder dies, so a SIGKILLed writer
    never leaves it held.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / lock_name
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                if time.monotonic() >= deadline:
                    raise Conflict(f"{path}: held by another writer for over {timeout_s:.0f} s "
                                   f"({_holder(path)}); {purpose} not done",
                                   {"lock": str(path), "holder": _holder(path)}) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
        # Diagnostics only (the flock is the lock): who holds it and why.
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "purpose": purpose,
                                  "since": time.time()}).encode(), 0)
        yield path
    finally:
        os.close(fd)   # closing the descriptor releases the flock


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "no holder recorded"
    except OSError:
        return "holder unknown"


def remove_dead_temps(parent: str | os.PathLike, name: str, stale_s: float = DEFAULT_STALE_TEMP_S) -> list[str]:
    """Remove ``parent/.<name>.tmp-*`` entries whose owner is gone (see :func:`temp_owner_gone`)."""
    import shutil

    parent, removed = Path(parent), []
    if not parent.is_dir():
        return removed
    for path in parent.iterdir():
        if path.name.startswith(f".{name}.tmp-") and temp_owner_gone(path, stale_s):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed


def replace_dir(staged: str | os.PathLike, final: str | os.PathLike, writer: str = "replace_dir") -> Path:
    """Move the complete, verified folder ``staged`` to ``final``, replacing what is there.

    Two renames (old ``final`` aside, ``staged`` onto ``final``) and a directory
    fsync; a reader sees the old folder, then for an instant none, then the new
    one; never a partial folder. A process killed between the renames leaves the
    old folder aside under a temp name (removed once its owner is gone) and no
    ``final``: the writer's rerun writes it again."""
    import shutil

    from notellm.faults import fault_point
    from notellm.files import fsync_dir

    staged, final = Path(staged), Path(final)
    aside = final.parent / temp_name(final.name)
    if final.exists():
        os.rename(final, aside)
        fault_point(writer, "old_moved_aside")
    os.rename(staged, final)
    fsync_dir(final.parent)
    fault_point(writer, "renamed")
    shutil.rmtree(aside, ignore_errors=True)
    return final
