"""The command contract every stage CLI keeps (the DAGs rely on it).

* Settings come from one config dataclass (:mod:`notellm.config`):
  ``python -m <stage> --help`` is generated from it.
* Logging is configured once, to stderr (level from ``NOTELLM_LOG_LEVEL``);
  while the command runs, file descriptor 1 points at stderr too, so library
  and JVM chatter cannot reach stdout.
* Stdout carries exactly one line: the JSON result object, with the phase
  timings of :class:`Timer` under ``"timings_s"`` and ``"status"``.
* Exit codes come from typed exceptions, never from literals:

  ===  =================  ==========================================  ===========
  0    ``ok``             done
  1    ``error``          a bug or an environment failure             retry
  2    ``bad_input``      :class:`BadInput` (also ConfigError,         no retry
                          ContractError): the data or settings are
                          wrong; the same input fails again
  3    ``gate_refused``   :class:`GateRefused`: a quality gate kept     no retry
                          the live model / snapshot
  4    ``diverged``       :class:`Diverged`: training produced a      no retry
                          non-finite loss, weights or embeddings
  5    ``conflict``       :class:`Conflict`: another writer moved     retry
                          the pointer this one meant to replace
                          (compare-and-swap lost) or held its lock
  ===  =================  ==========================================  ===========

Standard library only (the DAGs import the exit codes at parse time).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import sys
import time
import traceback
from typing import Any, Callable, Iterator, Mapping

from notellm import config as configs

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BAD_INPUT = 2
EXIT_GATE_FAILED = 3
EXIT_DIVERGED = 4
EXIT_CONFLICT = 5

log = logging.getLogger("notellm")


class StageError(Exception):
    """Base of the typed failures; ``result`` is reported on the JSON line."""

    exit_code = EXIT_ERROR
    status = "error"

    def __init__(self, message: str, result: Mapping[str, Any] | None = None):
        super().__init__(message)
        self.result = dict(result or {})


class BadInput(StageError):
    """The input data or settings are wrong (name the file, field and problem)."""

    exit_code = EXIT_BAD_INPUT
    status = "bad_input"


class GateRefused(StageError):
    """A quality gate refused; the live state is kept."""

    exit_code = EXIT_GATE_FAILED
    status = "gate_refused"


class Diverged(StageError):
    """Training produced non-finite values."""

    exit_code = EXIT_DIVERGED
    status = "diverged"


class Conflict(StageError):
    """Another writer changed the state this one expected to replace (compare-and-swap
    failed, or its lock was held too long); nothing was changed. A rerun re-reads the state."""

    exit_code = EXIT_CONFLICT
    status = "conflict"


class Timer:
    """Phase timings (autofaiss's Timeit idea): ``with timer.phase("build"): ...``.

    Each phase is logged when it ends; repeated phases add up. ``as_dict``
    goes into the result line as ``timings_s``.
    """

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}
        self._start = time.perf_counter()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        log.info("%s ...", name)
        try:
            yield
        finally:
            took = time.perf_counter() - start
            self._seconds[name] = self._seconds.get(name, 0.0) + took
            log.info("%s took %.2f s", name, took)

    def add(self, name: str, seconds: float) -> None:
        self._seconds[name] = self._seconds.get(name, 0.0) + seconds

    def as_dict(self) -> dict[str, float]:
        return {**{k: round(v, 3) for k, v in self._seconds.items()},
                "total": round(time.perf_counter() - self._start, 3)}


_LOGGING_DONE = False


def configure_logging(level: str | None = None) -> None:
    """Once per process: one stderr handler with time, level and logger name."""
    global _LOGGING_DONE
    if _LOGGING_DONE:
        return
    _LOGGING_DONE = True
    level = (level or os.environ.get("NOTELLM_LOG_LEVEL") or "INFO").upper()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("py4j", "urllib3", "filelock", "matplotlib", "PIL", "numexpr"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Point fd 1 (and sys.stdout) at stderr until the block ends."""
    sys.stdout.flush()
    real = os.dup(1)
    saved_stdout = sys.stdout
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stdout = saved_stdout
        os.dup2(real, 1)
        os.close(real)


def _classify(exc: BaseException) -> tuple[int, str]:
    if isinstance(exc, StageError):
        return exc.exit_code, exc.status
    if isinstance(exc, configs.ConfigError) or type(exc).__name__ == "ContractError":
        return EXIT_BAD_INPUT, "bad_input"
    return EXIT_ERROR, "error"


Command = Callable[[Any, Timer], "Mapping[str, Any] | None"]


@dataclasses.dataclass
class Subcommand:
    """One subcommand of a multi-command CLI: its config class and function."""

    config: type
    run: Command
    help: str = ""


def main(command: Command | Mapping[str, Subcommand], config_cls: type | None = None,
         argv: list[str] | None = None, prog: str | None = None, description: str | None = None) -> int:
    """Parse, run, print the one JSON result line and return the exit code.

    ``command(cfg, timer)`` returns the result mapping, or None on a process
    that must stay silent (a non-zero rank of a multi-process launch).
    """
    configure_logging()
    parser = argparse.ArgumentParser(prog=prog, description=description)
    if isinstance(command, Mapping):
        sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
        for name, spec in command.items():
            p = sub.add_parser(name, help=spec.help, description=spec.help or (spec.config.__doc__ or "").strip())
            configs.add_arguments(p, spec.config)
    else:
        assert config_cls is not None, "a single command needs its config class"
        parser.description = description or (config_cls.__doc__ or "").strip()
        configs.add_arguments(parser, config_cls)
    ns = parser.parse_args(argv)   # --help and usage errors exit here (0 / 2), before any work
    if isinstance(command, Mapping):
        spec = command[ns.command]
        config_cls, run = spec.config, spec.run
        head: dict[str, Any] = {"command": ns.command}
    else:
        run, head = command, {}
    timer = Timer()
    with _stdout_to_stderr():
        try:
            cfg = configs.from_namespace(config_cls, ns)
            result = run(cfg, timer)
            code, status = EXIT_OK, "ok"
            if result is None:
                return EXIT_OK
            result = dict(result)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes a result line and an exit code
            code, status = _classify(exc)
            if code == EXIT_ERROR:
                traceback.print_exc(file=sys.stderr)
            log.error("%s: %s", status, exc)
            result = {**getattr(exc, "result", {}), "error": f"{type(exc).__name__}: {exc}"}
    line = json.dumps({**head, **result, "status": status, "timings_s": timer.as_dict()},
                      sort_keys=True, default=str, ensure_ascii=False)
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    return code


def result_line(output: str) -> dict:
    """The JSON result of a command's stdout (its last line that is a JSON object)."""
    for line in reversed(output.strip().splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            return json.loads(line)
    raise ValueError("the command printed no JSON result line")
