"""Every bench/ and scripts/ command keeps the notellm.cli contract, run as the
docs run them (``python bench/x.py``, from the repository root): ``--help`` is
generated from the command's config dataclass, and a bad setting exits 2 with
one JSON line on stdout, status bad_input, before any work. No real runs here
(they are benchmarks); the help texts are read from the source with ``ast``,
so this test imports neither torch nor faiss."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import pytest

from notellm.cli import EXIT_BAD_INPUT
from tests.support.paths import REPO

# (script, leading arguments, config class, a field whose help must show in --help)
COMMANDS = [
    ("bench/bench_index.py", [], "BenchIndexConfig", "queries"),
    ("bench/bench_embedding.py", [], "BenchEmbeddingConfig", "naive"),
    ("bench/bench_embed_incremental.py", [], "BenchIncrementalConfig", "notes"),
    ("bench/bench_training.py", [], "BenchTrainingConfig", "bf16_batch_pairs"),
    ("bench/bench_training_real.py", [], "BenchTrainingRealConfig", "pool_sample"),
    ("bench/bench_training_memory.py", [], "BenchConfig", "configs"),
    ("bench/bench_epoch_plan.py", [], "BenchEpochPlanConfig", "pairs_per_note"),
    ("bench/bench_sample.py", [], "BenchSampleConfig", "days"),
    ("bench/bench_cooccurrence.py", [], "BenchCooccurrenceConfig", "straightforward"),
    ("bench/bench_cooccurrence.py", ["child"], "ChildConfig", "engine"),
    ("bench/bench_serving_load.py", [], "LoadConfig", "corrupt_at_s"),
    ("bench/bench_snapshot_open.py", [], "BenchSnapshotOpenConfig", "repeats"),
    ("scripts/demo_report.py", [], "DemoReportConfig", "test_date"),
    ("scripts/lock_constraints.py", [], "LockConfig", "keep"),
]
IDS = [" ".join([c[0], *c[1]]) for c in COMMANDS]

# Runs before anything is installed: the standard library and the repository only (-S: no site-packages).
STDLIB_ONLY = {"scripts/lock_constraints.py"}


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    python = [sys.executable, "-S", "-I"] if script in STDLIB_ONLY else [sys.executable]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([*python, script, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def help_in_source(script: str, cls: str, field: str) -> str:
    """The ``help=`` text of ``cls.field`` as written in the script."""
    tree = ast.parse((REPO / script).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and getattr(stmt.target, "id", None) == field:
                    for kw in stmt.value.keywords:
                        if kw.arg == "help":
                            return ast.literal_eval(kw.value)
    raise AssertionError(f"{script}: no {cls}.{field} with a help text")


def _flat(text: str) -> str:
    return "".join(text.split())   # argparse re-wraps lines (also after hyphens)


def test_every_script_is_listed():
    listed = {c[0] for c in COMMANDS}
    present = {str(p.relative_to(REPO)) for d in ("bench", "scripts") for p in (REPO / d).glob("*.py")}
    assert present == listed


@pytest.mark.parametrize("script,lead,cls,field", COMMANDS, ids=IDS)
def test_help_is_generated_from_the_config(script, lead, cls, field):
    res = run(script, *lead, "--help")
    assert res.returncode == 0, res.stderr
    assert _flat(help_in_source(script, cls, field)) in _flat(res.stdout)
    assert "--" + field.replace("_", "-") in res.stdout and "--set KEY=VALUE" in res.stdout


@pytest.mark.parametrize("script,lead,cls,field", COMMANDS, ids=IDS)
def test_unknown_setting_is_bad_input(script, lead, cls, field):
    res = run(script, *lead, "--set", "nope=1")
    assert res.returncode == EXIT_BAD_INPUT, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 1, f"stdout must be one JSON line, got:\n{res.stdout}\n{res.stderr[-2000:]}"
    result = json.loads(lines[0])
    assert result["status"] == "bad_input" and "nope" in result["error"]


@pytest.mark.parametrize("script", sorted({c[0] for c in COMMANDS}))
def test_no_hand_built_argparse(script):
    tree = ast.parse((REPO / script).read_text())
    roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    roots |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert "argparse" not in roots, f"{script}: build the command line from a dataclass with notellm.config"
