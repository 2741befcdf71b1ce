"""The indexing CLI keeps the command contract (notellm.cli): --help generated
from each subcommand's dataclass, exactly one JSON result line on stdout,
typed exit codes. Real subprocesses; synthetic vectors, no model needed."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from indexing import config
from indexing.build import IndexConfig, build_index
from indexing.cli import COMMANDS
from indexing.publish import DEFAULT_KEEP, content_digest, publish
from notellm.config import defaults, help_of, parse
from tests.support.notes import clustered_vectors
from tests.support.paths import REPO

MODEL = {"model_id": "abcdef0123456789", "path": "/models/x", "template_version": "v1-paper"}


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "indexing.cli", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def one_line(proc) -> dict:
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    return json.loads(lines[0])


@pytest.fixture(scope="module")
def snapshot_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("idx")
    ids = [f"n{i:03d}" for i in range(60)]
    x = clustered_vectors(60, 16, clusters=4, seed=5)
    for day in ("2026-11-24", "2026-11-25"):
        built = build_index((ids, x), IndexConfig(index_key="flat"))
        publish(root, built, date=day, model=MODEL, content_sha256=content_digest(ids, x) + day, metrics={})
    return root


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_of_every_subcommand_comes_from_its_dataclass(command):
    proc = run_cli(command, "--help")
    assert proc.returncode == 0, proc.stderr
    cls = COMMANDS[command].config
    shown = "".join(proc.stdout.split())       # argparse wraps lines at whitespace and hyphens
    for f in dataclasses.fields(cls):
        assert "--" + f.name.replace("_", "-") in shown, (command, f.name)
        assert "".join(help_of(cls, f.name).split()) in shown, (command, f.name)


def test_gate_and_retention_defaults_are_defined_once():
    gate = defaults(config.GateConfig)
    assert (gate["min_ann_recall"], gate["max_recall_drop"]) == (0.95, 0.02)
    assert DEFAULT_KEEP == defaults(config.RetentionConfig)["keep"] == 7
    assert defaults(config.PublishArgs)["min_ann_recall"] == gate["min_ann_recall"]
    dag = (REPO / "dags" / "notellm_nightly_index.py").read_text()
    assert "0.95" not in dag and "0.02" not in dag and "Param(7" not in dag


def test_info_prints_one_result_line(snapshot_root):
    proc = run_cli("info", "--snapshot-root", snapshot_root)
    assert proc.returncode == 0, proc.stderr
    info = one_line(proc)
    assert info["command"] == "info" and info["status"] == "ok" and "total" in info["timings_s"]
    assert info["current"] == info["opened"] == info["snapshots"][-1] and len(info["snapshots"]) == 2
    assert info["manifest"]["num_vectors"] == 60


def test_neighbors_lists_the_hits_under_results(snapshot_root):
    proc = run_cli("neighbors", "--snapshot-root", snapshot_root, "--note-id", "n007", "-k", 4)
    assert proc.returncode == 0, proc.stderr
    out = one_line(proc)
    assert out["status"] == "ok" and out["note_id"] == "n007" and out["k"] == 4
    assert [h["rank"] for h in out["results"]] == [1, 2, 3, 4]
    assert "n007" not in [h["note_id"] for h in out["results"]]
    scores = [h["score"] for h in out["results"]]
    assert scores == sorted(scores, reverse=True)


def test_unknown_note_is_bad_input(snapshot_root):
    proc = run_cli("neighbors", "--snapshot-root", snapshot_root, "--note-id", "nothere")
    assert proc.returncode == 2
    out = one_line(proc)
    assert out["status"] == "bad_input" and "nothere" in out["error"]


def test_unknown_setting_is_bad_input(snapshot_root):
    proc = run_cli("info", "--snapshot-root", snapshot_root, "--set", "nope=1")
    assert proc.returncode == 2
    out = one_line(proc)
    assert out["status"] == "bad_input" and "nope" in out["error"]


def test_invalid_value_is_bad_input(tmp_path):
    proc = run_cli("publish", "--notes", tmp_path / "n.parquet", "--emb-root", tmp_path, "--snapshot-root", tmp_path,
                   "--model", tmp_path, "--date", "2026-13-01")
    assert proc.returncode == 2
    out = one_line(proc)
    assert out["status"] == "bad_input" and "YYYY-MM-DD" in out["error"]


def test_config_file_and_legacy_spellings(tmp_path, snapshot_root):
    cfg_file = tmp_path / "q.json"
    cfg_file.write_text(json.dumps({"snapshot_root": str(snapshot_root), "k": 2}))
    out = one_line(run_cli("neighbors", "--config", cfg_file, "--note-id", "n001"))
    assert out["k"] == 2 and len(out["results"]) == 2
    # -k beats the file
    assert one_line(run_cli("neighbors", "--config", cfg_file, "--note-id", "n001", "-k", 3))["k"] == 3


def test_full_is_no_incremental_and_env_rank_is_not_a_default(tmp_path):
    from indexing.cli import canonical_argv
    argv = ["--notes", tmp_path / "n.parquet", "--emb-root", tmp_path, "--model", tmp_path]
    assert parse(config.EmbedArgs, canonical_argv([*argv, "--full"])).incremental is False
    assert parse(config.EmbedArgs, canonical_argv(argv)).incremental is True
    assert parse(config.EmbedArgs, canonical_argv([*argv, "--no-progress"])).progress is False
    assert defaults(config.EmbedArgs)["rank"] is None     # resolved from env RANK at run time
