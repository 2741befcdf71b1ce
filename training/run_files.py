"""The files of a training run that outlive the process: the step log and the checkpoint list.

``train_log.jsonl`` is truncated to the resumed step (a restart never duplicates a
row); ``checkpoints/latest`` names the last complete checkpoint tag ``step<N>``,
and older tags are pruned. Both survive a SIGKILL at any point (docs/reliability.md).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

from notellm import cli
from notellm.files import atomic_path

log = logging.getLogger(__name__)


class JsonlLog:
    """train_log.jsonl, truncated to the resumed step so a restart never duplicates rows.

    A last line torn by a kill (no newline, or not JSON) is dropped; a damaged
    line before it is an error naming the file and line."""

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        rows = []
        if path.exists():
            lines = path.read_text(errors="replace").split("\n")
            torn = lines.pop()   # after the last newline: empty, or a torn write
            if torn.strip():
                log.warning("%s: dropping a torn last line (%d chars)", path, len(torn))
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError:
                    if number == len(lines):   # a complete-looking but cut last line
                        log.warning("%s: dropping an unparseable last line", path)
                        continue
                    raise cli.BadInput(f"{path}: line {number} is not JSON; the training log is damaged") from None
                if row["step"] <= resume_step:
                    rows.append(line)
        with atomic_path(path) as tmp:
            tmp.write_text("".join(r + "\n" for r in rows))

    def write(self, row: dict) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row, sort_keys=True) + "\n")

    def rows(self) -> list[dict]:
        return [json.loads(line) for line in self.path.read_text().splitlines()]


LATEST = "latest"
_TAG = re.compile(r"^step(\d+)$")


def latest_checkpoint(ckpt_dir: Path) -> str | None:
    """The tag ``latest`` names (None when there is none yet); refused unless it is ``step<N>``."""
    path = Path(ckpt_dir) / LATEST
    if not path.exists():
        return None
    tag = path.read_text(errors="replace").strip()
    if not _TAG.match(tag):
        raise cli.BadInput(f"{path}: names {tag[:80]!r}, not a checkpoint tag step<N>")
    return tag


def prune_checkpoints(ckpt_dir: Path, keep: int) -> None:
    """Keep the newest ``keep`` tags and always the one ``latest`` names; remove the rest
    (a tag newer than ``latest``, left by a save killed before it was listed, goes too)."""
    live = latest_checkpoint(ckpt_dir)
    tags = sorted((p for p in ckpt_dir.glob("step*") if p.is_dir() and _TAG.match(p.name)),
                  key=lambda p: int(p.name[4:]))
    live_step = int(live[4:]) if live else -1
    unlisted = [p for p in tags if int(p.name[4:]) > live_step]
    listed = [p for p in tags if int(p.name[4:]) <= live_step]
    for old in unlisted + (listed[:-keep] if keep > 0 else []):
        if old.name != live:
            shutil.rmtree(old, ignore_errors=True)
