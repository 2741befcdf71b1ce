"""The command contract of every ``jobs`` CLI, run as the DAGs and the demo run
them (subprocesses): ``--help`` is generated from the stage's config dataclass,
stdout carries exactly one JSON result line, bad settings exit 2 with status
bad_input. The Spark jobs' successful runs are in test_cooccurrence.py and
test_split.py; the adapters' in test_adapters.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from jobs import config as jobs_config
from notellm import contracts
from notellm.cli import EXIT_BAD_INPUT
from notellm.config import help_of
from tests.support.paths import REPO

# (command, config class, a field whose help must show in --help)
CLIS = [
    (["jobs.cooccurrence"], jobs_config.CooccurrenceConfig, "max_events_per_user"),
    (["jobs.split"], jobs_config.SplitConfig, "max_pairs_per_category_pair"),
    (["jobs.ingest", "notes"], jobs_config.IngestNotesConfig, "landing"),
    (["jobs.ingest", "events"], jobs_config.IngestEventsConfig, "dt"),
    (["jobs.spark_cds"], jobs_config.SparkCdsConfig, "out"),
    (["jobs.sources.sample"], jobs_config.SampleConfig, "malformed_rate"),
    (["jobs.sources.movielens"], jobs_config.MovieLensConfig, "min_rating"),
    (["jobs.sources.stackexchange"], jobs_config.StackExchangeConfig, "sites"),
]
IDS = [" ".join(c[0]) for c in CLIS]


def run_cli(module: list[str], *args, timeout: int = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", module[0], *module[1:], *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def result_of(res: subprocess.CompletedProcess) -> dict:
    """The one stdout line, parsed: nothing else may reach stdout."""
    lines = res.stdout.splitlines()
    assert len(lines) == 1, (f"stdout must be one JSON line, got {len(lines)}:\n{res.stdout[-2000:]}\n"
                             f"{res.stderr[-2000:]}")
    return json.loads(lines[0])


def _flat(text: str) -> str:
    return "".join(text.split())   # argparse re-wraps lines (also after hyphens)


@pytest.mark.parametrize("module,cls,field", CLIS, ids=IDS)
def test_help_is_generated_from_the_config(module, cls, field):
    res = run_cli(module, "--help")
    assert res.returncode == 0, res.stderr
    assert _flat(help_of(cls, field)) in _flat(res.stdout)
    assert "--" + field.replace("_", "-") in res.stdout and "--set KEY=VALUE" in res.stdout


@pytest.mark.parametrize("module,cls,field", CLIS, ids=IDS)
def test_unknown_setting_is_bad_input(module, cls, field):
    res = run_cli(module, "--set", "nope=1")
    assert res.returncode == EXIT_BAD_INPUT, res.stderr
    result = result_of(res)
    assert result["status"] == "bad_input" and "nope" in result["error"]


def test_sample_then_ingest_print_one_result_line_each(tmp_path):
    res = run_cli(["jobs.sources.sample"], "--out", tmp_path / "s", "--notes", 60, "--users", 40, "--events", 3000,
                  "--days", 3, "--seed", 5, "--format", "landing", "--malformed-rate", 0.01)
    assert res.returncode == 0, res.stderr
    sample = result_of(res)
    assert sample["status"] == "ok" and sample["format"] == "landing" and "generate" in sample["timings_s"]
    assert sample == {**json.loads((tmp_path / "s" / "_generator_stats.json").read_text()),
                      "status": "ok", "timings_s": sample["timings_s"]}

    landing = tmp_path / "s" / "landing"
    notes = result_of(run_cli(["jobs.ingest", "notes"], "--landing", landing, "--out", tmp_path / "root"))
    assert (notes["command"], notes["status"]) == ("notes", "ok")
    assert notes["rows_in"] == notes["rows_accepted"] + notes["rows_quarantined"] and notes["rows_quarantined"] > 0
    assert notes["rows_accepted"] == 60
    events = result_of(run_cli(["jobs.ingest", "events"], "--landing", landing, "--out", tmp_path / "root"))
    assert (events["command"], events["status"]) == ("events", "ok")
    assert events["rows_accepted"] == sample["events"] and set(events["partitions"]) == set(
        sample["rows_per_partition"])
    one_day = sorted(sample["rows_per_partition"])[0]
    again = result_of(run_cli(["jobs.ingest", "events"], "--landing", landing, "--out", tmp_path / "root",
                              "--dt", one_day))
    assert set(again["partitions"]) == {one_day}


def test_bad_values_are_bad_input(tmp_path):
    res = run_cli(["jobs.sources.sample"], "--out", tmp_path, "--notes", 3)     # fewer notes than topics
    assert res.returncode == EXIT_BAD_INPUT and "number of topics" in result_of(res)["error"]
    res = run_cli(["jobs.sources.sample"], "--out", tmp_path, "--malformed-rate", 0.1)   # contract format
    assert res.returncode == EXIT_BAD_INPUT and "landing" in result_of(res)["error"]
    res = run_cli(["jobs.sources.sample"], "--out", tmp_path, "--end-date", "2026-13-01")
    assert res.returncode == EXIT_BAD_INPUT and "YYYY-MM-DD" in result_of(res)["error"]
    res = run_cli(["jobs.split"], "--pairs", tmp_path, "--train-date", "2026-11-13", "--test-date", "2026-11-20",
                  "--notes", tmp_path, "--events", tmp_path, "--out", tmp_path / "o")
    assert res.returncode == EXIT_BAD_INPUT and "_SUCCESS" in result_of(res)["error"]
    res = run_cli(["jobs.spark_cds"], "--out", tmp_path / "a b" / "driver.jsa")   # no JVM: refused first
    assert res.returncode == EXIT_BAD_INPUT and "whitespace" in result_of(res)["error"]


def test_settings_come_from_a_config_file_and_set(tmp_path):
    (tmp_path / "sample.json").write_text(json.dumps({"notes": 40, "users": 20, "events": 500, "days": 2}))
    res = run_cli(["jobs.sources.sample"], "--config", tmp_path / "sample.json", "--set", f"out={tmp_path / 's'}",
                  "--set", "seed=9")
    result = result_of(res)
    assert res.returncode == 0 and result["config"]["notes"] == 40 and result["config"]["seed"] == 9


def test_the_config_module_is_light_and_agrees_with_the_contracts():
    code = ("import sys, jobs.config, notellm.config; "
            "print(sorted(m for m in ('pyarrow', 'pyspark', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert out.stdout.strip() == "[]", out.stderr
    assert jobs_config.EVENT_TYPES == contracts.EVENT_TYPES
    assert set(jobs_config.ENGAGEMENT_TYPES) <= set(contracts.EVENT_TYPES)


def test_type_lists_accept_commas_and_engagement_overrides_them():
    base = dict(events="e", notes="n", out="o", quarantine_out="q", run_date="2026-11-20")
    cfg = jobs_config.CooccurrenceConfig(**base, view_types=("view,click",), click_types="click")
    assert (cfg.view_types, cfg.click_types) == (("view", "click"), ("click",))
    cfg = jobs_config.CooccurrenceConfig(**base, engagement=True)
    assert cfg.view_types == cfg.click_types == jobs_config.ENGAGEMENT_TYPES
    assert cfg.spark_conf() == {}
    assert jobs_config.CooccurrenceConfig(**base, conf=["a.b=1=2"]).spark_conf() == {"a.b": "1=2"}
