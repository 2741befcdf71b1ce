"""Every training CLI keeps notellm.cli's contract: --help generated from its
dataclass, one JSON result line on stdout, exit 2 for a bad setting or input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from notellm.config import help_of
from tests.support.paths import REPO
from training.config import EvaluateConfig, GenerateConfig, RegisterConfig, TrainConfig

CLIS = {"training.train": (TrainConfig, "alpha"), "training.evaluate": (EvaluateConfig, "backbone_baseline"),
        "training.register": (RegisterConfig, "max_regression"), "training.generate": (GenerateConfig, "constrained")}


def _run(module, *args):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("module", sorted(CLIS))
def test_help_is_the_dataclass(module):
    cls, field = CLIS[module]
    proc = _run(module, "--help")
    assert proc.returncode == 0, proc.stderr
    flat = " ".join(proc.stdout.split())
    assert " ".join(help_of(cls, field).split()) in flat and "--config FILE" in flat and "--set KEY=VALUE" in flat


@pytest.mark.parametrize("module", sorted(CLIS))
def test_bad_setting_is_bad_input_with_one_line(module):
    proc = _run(module, "--set", "nope=1")
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stdout.splitlines()
    result = json.loads(line)
    assert result["status"] == "bad_input" and "unknown setting(s) ['nope']" in result["error"]


def test_register_refuses_an_evaluation_of_another_model_as_bad_input(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "notellm.json").write_text(json.dumps({"model_id": "aaaa"}))
    (tmp_path / "eval.json").write_text(json.dumps({"model": {"model_id": "bbbb", "recall": {"100": 0.5}}}))
    proc = _run("training.register", "--model", str(model), "--metrics", str(tmp_path / "eval.json"),
                "--models-root", str(tmp_path / "models"))
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stdout.splitlines()
    assert "evaluates model bbbb" in json.loads(line)["error"]
    assert not (tmp_path / "models" / "APPROVED.json").exists()
