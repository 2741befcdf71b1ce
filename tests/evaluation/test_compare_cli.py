"""``python -m evaluation.compare`` keeps the command contract: --help from its config
dataclass, the flag spellings ``make report`` passes, one JSON result line and exit 2
on a bad setting (before any work)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from evaluation import compare
from evaluation.registry import SYSTEMS
from notellm import cli
from notellm.config import ConfigError, build
from tests.support.paths import REPO


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evaluation.compare", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_help_lists_every_setting_with_its_help():
    proc = _run("--help")
    assert proc.returncode == 0, proc.stderr
    for flag in ("--steps", "--batch-pairs", "--lr", "--warmup", "--eval-pairs", "--pool-size", "--gen-notes",
                 "--cases", "--seed", "--backbone", "--systems", "--data", "--work", "--out", "--date",
                 "--discussion", "--config", "--set"):
        assert flag in proc.stdout
    assert "training steps of every trained system" in proc.stdout


@pytest.mark.parametrize("args", [("--set", "nope=1"), ("--systems", "bm25,nope"), ("--steps", "0")])
def test_a_bad_setting_exits_2_with_one_json_line(args, tmp_path):
    proc = _run(*args, "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"))
    assert proc.returncode == cli.EXIT_BAD_INPUT, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["status"] == "bad_input" and "timings_s" in result
    assert not (tmp_path / "work").exists()           # refused before any work


def test_absent_data_is_bad_input(tmp_path, capsys):
    code = compare.main(["--data", str(tmp_path / "absent"), "--work", str(tmp_path / "work"),
                         "--out", str(tmp_path / "out")])
    assert code == cli.EXIT_BAD_INPUT
    result = cli.result_line(capsys.readouterr().out)
    assert result["status"] == "bad_input" and "absent" in result["error"]


def test_report_args_spellings_and_defaults():
    cfg = build(compare.CompareConfig, {"steps": 120, "pool_size": 1200})
    assert (cfg.steps, cfg.pool_size, cfg.batch_pairs, cfg.eval_pairs, cfg.gen_notes) == (120, 1200, 8, 150, 24)
    assert cfg.system_names() == list(SYSTEMS)
    with pytest.raises(ConfigError, match="unknown"):
        build(compare.CompareConfig, {"systems": "bm25,nope"})


def test_registry_one_class_per_system():
    assert list(SYSTEMS) == ["bm25", "minilm", "minilm_ft", "smollm_prompteol", "notellm_no_csft", "notellm",
                             "notellm_short"]
    assert {k for k, s in SYSTEMS.items() if s.group == "notellm"} == {"notellm_no_csft", "notellm",
                                                                       "notellm_short"}
    assert {k for k, s in SYSTEMS.items() if s.trained} == {"minilm_ft", "notellm_no_csft", "notellm",
                                                           "notellm_short"}
    assert all(s.key == k and s.label for k, s in SYSTEMS.items())
    assert len({type(s) for s in SYSTEMS.values()}) == len(SYSTEMS)
