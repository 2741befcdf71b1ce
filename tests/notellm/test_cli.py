"""notellm.cli: a real subprocess per case; stdout must hold exactly the one
JSON result line (library prints and fd-1 writes go to stderr) and the exit
code must follow the typed exception."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from notellm import cli
from tests.support.paths import REPO

SCRIPT = textwrap.dedent('''
    import dataclasses, os, sys
    from notellm import cli
    from notellm.config import option
    from notellm.contracts import ContractError

    @dataclasses.dataclass
    class Cfg:
        """A tiny command."""
        outcome: str = option("ok", help="what to do")

    def run(cfg, timer):
        print("chatter from a library")
        os.write(1, b"raw fd-1 chatter from a child runtime\\n")
        with timer.phase("work"):
            pass
        if cfg.outcome == "bad":
            raise cli.BadInput("notes.parquet: column 'note_id': 3 nulls", {"rows": 3})
        if cfg.outcome == "contract":
            raise ContractError("notes.parquet", "note_id", "3 nulls")
        if cfg.outcome == "gate":
            raise cli.GateRefused("recall 0.1 < 0.9", {"recall": 0.1})
        if cfg.outcome == "diverged":
            raise cli.Diverged("loss is nan at step 3")
        if cfg.outcome == "bug":
            raise RuntimeError("boom")
        if cfg.outcome == "silent":
            return None
        return {"rows": 7}

    sys.exit(cli.main(run, Cfg))
''')


def _run(*args):
    return subprocess.run([sys.executable, "-c", SCRIPT, *args], cwd=REPO, capture_output=True, text=True)


@pytest.mark.parametrize("outcome, code, status", [
    ("ok", 0, "ok"), ("bad", 2, "bad_input"), ("contract", 2, "bad_input"), ("gate", 3, "gate_refused"),
    ("diverged", 4, "diverged"), ("bug", 1, "error")])
def test_one_json_line_and_typed_exit_codes(outcome, code, status):
    proc = _run("--outcome", outcome)
    assert proc.returncode == code, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    result = json.loads(lines[0])
    assert result["status"] == status and "work" in result["timings_s"] and "total" in result["timings_s"]
    assert "chatter from a library" in proc.stderr and "raw fd-1 chatter" in proc.stderr
    if outcome == "ok":
        assert result["rows"] == 7
    if outcome in ("bad", "gate"):
        assert result["error"] and ("rows" in result or "recall" in result)
    if outcome == "bug":
        assert "Traceback" in proc.stderr and "RuntimeError: boom" in result["error"]


def test_silent_rank_prints_nothing_and_bad_setting_is_bad_input():
    proc = _run("--outcome", "silent")
    assert proc.returncode == 0 and proc.stdout == ""
    proc = _run("--set", "nope=1")
    assert proc.returncode == 2 and json.loads(proc.stdout)["status"] == "bad_input"
    assert "unknown setting(s) ['nope']" in json.loads(proc.stdout)["error"]


def test_result_line_reads_the_last_json_object():
    assert cli.result_line('log\n{"a": 1}\nmore log\n{"b": 2}\n') == {"b": 2}
    with pytest.raises(ValueError):
        cli.result_line("no json here\n")


def test_backbone_cli_prints_its_result_line():
    proc = subprocess.run([sys.executable, "-m", "notellm.backbone", "path", "--name", "minilm"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    [line] = proc.stdout.splitlines()
    result = json.loads(line)
    assert result["command"] == "path" and result["status"] == "ok" and result["backbone_dir"].endswith("model")
