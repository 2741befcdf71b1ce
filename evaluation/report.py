"""Renders the quality report (issue 7) from the results dict of ``evaluation.compare``.

``render_report(results, out_dir)`` writes::

    out_dir/report.md        the Markdown report (tables, sentences computed from the numbers, cases)
    out_dir/metrics.json     the results dict exactly as given (json, indent 2, key order kept)
    out_dir/plots/*.png      recall_at_k.png, loss_curves.png (if any system was trained),
                             recall_by_exposure.png (if any system has exposure buckets)

The Markdown is built by the pure function :func:`report_markdown`
(:mod:`evaluation.report_markdown`, sections in :mod:`evaluation.report_sections`,
formatting in :mod:`evaluation.report_format`); plots by :func:`render_plots`
(:mod:`evaluation.report_plots`). Percentages are shown with one decimal; every comparison
sentence ("wins by x points") is computed from the *displayed* (rounded) values
so that the reader can check it against the tables.

Schema ``notellm-quality-report/1`` (see the issue-7 brief): required are
``systems`` (each with ``name``); everything else is optional and a missing part
is left out of the report (or shown as "n/a") instead of failing. Optional
extras understood here: ``reference_system`` (the name the winner is compared
with; default: the zero-shot MiniLM system), ``paper_table2`` ({row: R@100}),
per system ``paper_row`` (which Table-2 row it corresponds to), ``wall_s``.
"""


from __future__ import annotations

import json
from pathlib import Path

from evaluation.report_format import SCHEMA, escape_cell, validate
from evaluation.report_markdown import report_markdown
from evaluation.report_plots import render_plots
from notellm.files import atomic_write_text

__all__ = ["SCHEMA", "escape_cell", "render_plots", "render_report", "report_markdown"]


def render_report(results: dict, out_dir: Path) -> Path:
    """Write ``out_dir/report.md``, ``out_dir/metrics.json`` and ``out_dir/plots/*.png``; return the report path."""
    validate(results)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # key order as given (the sections follow it), non-ASCII titles kept readable
    atomic_write_text(out_dir / "metrics.json", json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    plots = render_plots(results, out_dir / "plots")
    rel = {name: path.relative_to(out_dir).as_posix() for name, path in plots.items()}
    report = out_dir / "report.md"
    atomic_write_text(report, report_markdown(results, rel))
    return report
