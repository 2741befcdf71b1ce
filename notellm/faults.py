"""Fault points: named steps inside every writer where a test can stop the process.

Each writer calls ``fault_point(writer, step)`` between its durable steps (the
publish steps, the Spark folder commit, the ingest day swap, a training save,
an export, an embedding segment, a registry update). In production it costs one
environment lookup. A fault test sets ``NOTELLM_FAULT_AT=<writer>:<step>`` (a
comma list is allowed) and ``NOTELLM_FAULT_READY=<file>``: on reaching that
step the process writes its pid to the file and blocks, so the test can kill it
with SIGKILL exactly there (real process death, not an exception) and then
check what readers see.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

FAULT_ENV = "NOTELLM_FAULT_AT"
READY_ENV = "NOTELLM_FAULT_READY"


_hits: dict[str, int] = {}


def fault_point(writer: str, step: str) -> None:
    """Block forever at ``writer:step`` when the fault environment names it (tests only);
    ``writer:step@n`` blocks at its n-th occurrence in this process (e.g. the third day)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    point = f"{writer}:{step}"
    wanted = {item.split("@")[0]: int(item.split("@")[1]) if "@" in item else 1 for item in spec.split(",")}
    if point not in wanted:
        return
    _hits[point] = _hits.get(point, 0) + 1
    if _hits[point] != wanted[point]:
        return
    ready = os.environ.get(READY_ENV)
    if ready:
        tmp = Path(f"{ready}.tmp-{os.getpid()}")
        tmp.write_text(f"{os.getpid()} {writer}:{step}\n")
        os.replace(tmp, ready)
    while True:   # the test kills this process here
        time.sleep(3600)
