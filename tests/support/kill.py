"""Real process death for fault tests: SIGKILL a process at the moment a
condition on its outputs becomes true (no hook inside the code under test)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable


def checkpoint_written(*run_dirs: Path, pattern: str = "checkpoints/latest") -> Callable[[], bool]:
    """True once a run's DeepSpeed ``checkpoints/latest`` names a checkpoint (glob ``pattern``
    under each of ``run_dirs``, so a run folder not known in advance can be watched)."""
    def ready() -> bool:
        for run_dir in run_dirs:
            for latest in Path(run_dir).glob(pattern):
                try:
                    if latest.read_text().strip():
                        return True
                except OSError:
                    pass
        return False
    return ready


def run_until_killed(cmd: list[str], ready: Callable[[], bool], log_dir: Path, timeout: float = 900,
                     poll_s: float = 0.005, **popen_kwargs) -> tuple[int, str]:
    """Start ``cmd``; SIGKILL it as soon as ``ready()`` holds. Returns (exit code, stderr).
    Fails when the process ends on its own first: the kill must really happen."""
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "stdout", "w") as out, open(log_dir / "stderr", "w") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, **popen_kwargs)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and not ready():
            if time.monotonic() > deadline:
                proc.kill()
                raise TimeoutError(f"condition not met within {timeout} s: {cmd}")
            time.sleep(poll_s)
        if proc.poll() is not None:
            raise AssertionError(f"process ended (exit {proc.returncode}) before it could be killed: {cmd}\n"
                                 + (log_dir / "stderr").read_text()[-3000:])
        os.kill(proc.pid, signal.SIGKILL)
        code = proc.wait()
    return code, (log_dir / "stderr").read_text()


def _pids_with_args(*needles: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if all(n in args for n in needles):
            pids.append(int(entry.name))
    return pids


class KillDescendantWhen(threading.Thread):
    """Watch in the background; when ``ready()`` holds, SIGKILL every process whose
    command line contains all ``needles`` (e.g. the training stage a DAG task
    started). ``killed`` lists the pids."""

    def __init__(self, ready: Callable[[], bool], *needles: str, timeout: float = 900, poll_s: float = 0.005):
        super().__init__(daemon=True)
        self.ready, self.needles, self.timeout, self.poll_s = ready, needles, timeout, poll_s
        self.killed: list[int] = []
        self._done = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout
        while not self._done.is_set() and time.monotonic() < deadline:
            if self.ready():
                for pid in _pids_with_args(*self.needles):
                    try:
                        os.kill(pid, signal.SIGKILL)
                        self.killed.append(pid)
                    except ProcessLookupError:
                        pass
                return
            time.sleep(self.poll_s)

    def stop(self) -> None:
        self._done.set()


def kill_at_fault_point(target: Callable[[], object], point: str, ready_file: Path, timeout: float = 60) -> int:
    """Run ``target`` in a forked child with the fault hook armed at ``point``
    (``writer:step``, :mod:`notellm.faults`); SIGKILL the child once it blocks there.

    Fork, not a new interpreter: the child inherits the parent's imports, so a
    trial costs milliseconds and 20 trials per step stay fast. The death is real
    (SIGKILL: no ``finally``, no ``atexit``, no flush). Returns the child's exit
    status; fails when the child ends before reaching the point."""
    from notellm.faults import FAULT_ENV, READY_ENV

    ready_file = Path(ready_file)
    ready_file.unlink(missing_ok=True)
    pid = os.fork()
    if pid == 0:   # the child: arm the hook, run, never return into pytest
        code = 0
        try:
            os.environ[FAULT_ENV], os.environ[READY_ENV] = point, str(ready_file)
            target()
        except BaseException:  # noqa: BLE001 - reported through the exit code
            import traceback
            traceback.print_exc()
            code = 3
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while not ready_file.exists():
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            raise AssertionError(f"{point}: the writer ended (status {status}) without reaching the fault point")
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise TimeoutError(f"{point}: not reached within {timeout} s")
        time.sleep(0.002)
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    return status
