"""notellm.locking: the lock is exclusive across processes, released by a SIGKILL,
and temp files are only removed when their owner is provably gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from notellm.cli import EXIT_CONFLICT, Conflict
from notellm.locking import host_tag, locked, temp_name, temp_owner, temp_owner_gone
from tests.support.paths import REPO

HOLD = """
import sys, time
from notellm.locking import locked
with locked(sys.argv[1], "test holder"):
    print("held", flush=True)
    time.sleep(600)
"""


def _holder(directory):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_held_lock_times_out_with_conflict_naming_the_holder(tmp_path):
    proc = _holder(tmp_path)
    try:
        with pytest.raises(Conflict, match=r"\.lock: held by another writer.*test holder") as err:
            with locked(tmp_path, "second writer", timeout_s=0.3):
                pass
        assert err.value.exit_code == EXIT_CONFLICT
    finally:
        proc.kill()
        proc.wait()


def test_sigkilled_holder_releases_the_lock(tmp_path):
    proc = _holder(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    start = time.monotonic()
    with locked(tmp_path, "after the kill", timeout_s=5):
        pass
    assert time.monotonic() - start < 1


def test_temp_names_carry_host_and_pid_and_owner_liveness(tmp_path):
    name = temp_name("CURRENT")
    assert name.startswith(".CURRENT.tmp-") and temp_owner(name) == (host_tag(), os.getpid())
    mine = tmp_path / name
    mine.write_text("x")
    assert not temp_owner_gone(mine)                              # this live process
    dead = tmp_path / f".x.tmp-{host_tag()}-999999999-0123abcd"
    dead.write_text("x")
    assert temp_owner_gone(dead)
    other = tmp_path / ".x.tmp-otherhost-1-0123abcd"
    other.write_text("x")
    assert not temp_owner_gone(other)                             # cannot probe: wait until stale
    assert temp_owner_gone(other, stale_s=10, now=time.time() + 11)
    assert not temp_owner_gone(tmp_path / "plain-file")
