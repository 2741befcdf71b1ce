"""The committed quality report is reproduced by the current renderer: re-rendering its
``metrics.json`` gives the same ``report.md`` and the same PNG bytes (the plots are
byte-stable for the same numbers and matplotlib version)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluation.report import render_report

REPORTS = Path(__file__).resolve().parents[2] / "reports"
COMMITTED = sorted(p.parent for p in REPORTS.glob("*/metrics.json"))


@pytest.mark.parametrize("folder", COMMITTED, ids=[p.name for p in COMMITTED])
def test_committed_report_is_reproduced_byte_for_byte(folder, tmp_path):
    results = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    render_report(results, tmp_path)
    assert (tmp_path / "report.md").read_text(encoding="utf-8") == (folder / "report.md").read_text(encoding="utf-8")
    assert (tmp_path / "metrics.json").read_bytes() == (folder / "metrics.json").read_bytes()
    committed = sorted(p.name for p in (folder / "plots").glob("*.png"))
    assert sorted(p.name for p in (tmp_path / "plots").glob("*.png")) == committed
    for name in committed:
        assert (tmp_path / "plots" / name).read_bytes() == (folder / "plots" / name).read_bytes(), name


def test_a_committed_report_exists():
    assert COMMITTED, f"no committed report under {REPORTS}"
