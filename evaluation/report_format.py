"""Formatting and schema access shared by the quality report's Markdown (:mod:`evaluation.report_markdown`,
:mod:`evaluation.report_sections`) and plots (:mod:`evaluation.report_plots`).

Percentages are shown with one decimal; :func:`pct_value` is the displayed
number, so every comparison a sentence makes is computed from what the tables
show. Schema ``notellm-quality-report/1``: see :mod:`evaluation.report`.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

SCHEMA = "notellm-quality-report/1"
HEADLINE_K = "100"
TITLE_CHARS = 60
MAX_CASE_TAGS = 4
BUCKET_ORDER = ("low", "high")


# ------------------------------------------------------------------ formatting helpers

def escape_cell(text: Any, limit: int | None = TITLE_CHARS) -> str:
    """User text made safe for one Markdown table cell: newlines/tabs become
    spaces, whitespace collapsed, cut to ``limit`` characters (with an
    ellipsis), then Markdown/HTML specials escaped (``|`` -> ``\\|``)."""
    s = " ".join(str("" if text is None else text).split())
    if limit is not None and len(s) > limit:
        s = s[:limit - 1].rstrip() + "…"
    s = s.replace("\\", "\\\\")
    for ch in "|*_`[]":
        s = s.replace(ch, "\\" + ch)
    return s.replace("<", "&lt;").replace(">", "&gt;")


def pct(x: Any) -> str:
    """Fraction -> percent with one decimal; None/NaN -> n/a."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{100 * x:.1f}"


def pct_value(x: Any) -> float | None:
    """The displayed percentage as a number (rounded like :func:`pct`)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return round(100 * x, 1)


def duration(seconds: Any) -> str:
    if seconds is None:
        return "—"
    s = float(seconds)
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(round(s % 60)):02d} s"
    return f"{int(s // 3600)} h {int(round(s % 3600 / 60)):02d} min"


def rate(x: Any) -> str:
    if x is None:
        return "—"
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}" if x >= 1 else f"{x:.2f}"


def row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], align: Sequence[str] | None = None) -> list[str]:
    align = align or ["---"] + ["---:"] * (len(header) - 1)
    return [row(header), row(align), *(row(r) for r in rows)]


def bold_best(values: Sequence[float | None], lower_is_better: bool = False) -> list[bool]:
    """Mark every entry equal to the best displayed value (ties all bold)."""
    present = [v for v in values if v is not None]
    if len(present) < 2:
        return [False] * len(values)
    best = min(present) if lower_is_better else max(present)
    return [v is not None and v == best for v in values]


def cells(raw: Sequence[Any], lower_is_better: bool = False) -> list[str]:
    shown = [pct_value(x) for x in raw]
    bold = bold_best(shown, lower_is_better)
    return [f"**{pct(x)}**" if b else pct(x) for x, b in zip(raw, bold)]


def k_sort(keys) -> list[str]:
    return sorted({str(k) for k in keys}, key=lambda k: int(k))


def label_of(system: Mapping) -> str:
    return system.get("label") or system["name"]


def hashtag_cells(tags: Sequence[str] | None, limit: int = MAX_CASE_TAGS, highlight: set[str] = frozenset()) -> str:
    tags = list(tags or [])
    shown = []
    for t in tags[:limit]:
        cell = "#" + escape_cell(t, 30)
        shown.append(f"**{cell}**" if t.strip().lower() in highlight else cell)
    return " ".join(shown) + (" …" if len(tags) > limit else "")


def note_cell(note: Mapping | None) -> str:
    if not note:
        return "—"
    mark = "✓ " if note.get("is_truth") else ""
    cat = f" [{escape_cell(note.get('category'), 40)}]" if note.get("category") else ""
    tags = hashtag_cells(note.get("hashtags"))
    return f"{mark}{escape_cell(note.get('title'))}{cat}" + (f" {tags}" if tags else "")


# ------------------------------------------------------------------ schema access

def validate(results: Mapping) -> None:
    schema = results.get("schema")
    if schema is not None and schema != SCHEMA:
        raise ValueError(f"results: schema is {schema!r}, this renderer reads {SCHEMA!r}")
    systems = results.get("systems")
    if not isinstance(systems, list) or not systems:
        raise ValueError("results: 'systems' must be a non-empty list")
    for i, s in enumerate(systems):
        if not isinstance(s, Mapping) or not s.get("name"):
            raise ValueError(f"results: systems[{i}] has no 'name'")
    names = [s["name"] for s in systems]
    if len(set(names)) != len(names):
        raise ValueError(f"results: duplicate system names in {names}")


def signals_of(results: Mapping) -> list[str]:
    """Signal order: as in ``results['signals']``, then any other signal a system reports."""
    order = list((results.get("signals") or {}).keys())
    for s in results["systems"]:
        for sig in (s.get("recall") or {}):
            if sig not in order:
                order.append(sig)
    return order


def signal_label(results: Mapping, sig: str) -> str:
    return (results.get("signals") or {}).get(sig) or sig


def recall_of(system: Mapping, sig: str, k: str) -> float | None:
    return ((system.get("recall") or {}).get(sig) or {}).get(k)


def flat_recall(block: Mapping | None, signal: str = "cooccurrence") -> dict:
    """A bucket's recall dict {K: value}; accepts a per-signal nesting too."""
    rec = (block or {}).get("recall") or {}
    if any(isinstance(v, Mapping) for v in rec.values()):
        rec = rec.get(signal) or next(iter(rec.values()))
    return dict(rec)


def floor_of(results: Mapping) -> Mapping:
    return results.get("random_within_category") or {}


def reference_system(results: Mapping) -> Mapping | None:
    """The zero-shot MiniLM (SentenceBERT) baseline the winner is compared with."""
    systems = results["systems"]
    wanted = results.get("reference_system")
    for s in systems:
        if wanted and s["name"] == wanted:
            return s
    if wanted:
        return None
    for s in systems:
        if s["name"] == "minilm":
            return s
    for s in systems:
        text = (s["name"] + " " + (s.get("label") or "")).lower()
        if "minilm" in text and "zero" in text:
            return s
    return None


def k_capped_note(results: Mapping, ks: Sequence[str]) -> str:
    capped = {}
    for s in results["systems"]:
        for k, v in (s.get("k_capped") or {}).items():
            if str(k) in ks and v is not None and int(v) != int(k):
                capped[str(k)] = int(v)
    if not capped:
        return ""
    parts = ", ".join(f"R@{k} is R@{v}" for k, v in sorted(capped.items(), key=lambda kv: int(kv[0])))
    return f"K is capped at the pool size minus the query: {parts}."


def paired_of(results: Mapping, sig: str, a: str, b: str) -> Mapping | None:
    """The paired comparison of systems a and b on a signal, oriented as a - b."""
    for c in (results.get("paired") or {}).get(sig) or []:
        if c.get("a") == a and c.get("b") == b:
            return c
        if c.get("a") == b and c.get("b") == a:
            lo, hi = c["ci"]
            return {**c, "a": a, "b": b, "diff": -c["diff"], "ci": [-hi, -lo],
                    "a_only": c["b_only"], "b_only": c["a_only"]}
    return None


def paired_text(c: Mapping, shown_diff: float | None = None) -> str:
    """'+2.0 points (95% CI -4.7 to +8.7; McNemar p = 0.62, 12 vs 9 discordant pairs)'.

    ``shown_diff`` (points) replaces the exact difference where the sentence
    already shows both rounded recalls, so the numbers a reader subtracts agree."""
    lo, hi = c["ci"]
    diff = 100 * c["diff"] if shown_diff is None else shown_diff
    return (f"{diff:+.1f} points (95% CI {100 * lo:+.1f} to {100 * hi:+.1f}; McNemar p = "
            f"{c['p_mcnemar']:.2g}, {c['a_only']} vs {c['b_only']} discordant pairs)")
