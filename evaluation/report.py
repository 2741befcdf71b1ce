"""Renders the quality report (issue 7) from the results dict of ``evaluation.compare``.

``render_report(results, out_dir)`` writes::

    out_dir/report.md        the Markdown report (tables, sentences computed from the numbers, cases)
    out_dir/metrics.json     the results dict exactly as given (json, indent 2, key order kept)
    out_dir/plots/*.png      recall_at_k.png, loss_curves.png (if any system was trained),
                             recall_by_exposure.png (if any system has exposure buckets)

The Markdown is built by the pure function :func:`report_markdown`; plots by
:func:`render_plots`. Percentages are shown with one decimal; every comparison
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
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

SCHEMA = "notellm-quality-report/1"
HEADLINE_K = "100"
TITLE_CHARS = 60
MAX_CASE_TAGS = 4
DPI = 120

# NoteLLM paper (Zhang et al., WWW 2024), Table 2, Recall@100 on Xiaohongshu data.
PAPER_TABLE2 = {"SentenceBERT": 70.72, "PromptEOL+CSE": 83.28, "RepLLaMA": 83.63, "NoteLLM": 84.02}
# Which of our systems plays which paper row (overridable per system with "paper_row").
PAPER_COUNTERPART = {"minilm_ft": "SentenceBERT", "notellm_no_csft": "PromptEOL+CSE", "notellm": "NoteLLM"}
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


def _pct_value(x: Any) -> float | None:
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


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], align: Sequence[str] | None = None) -> list[str]:
    align = align or ["---"] + ["---:"] * (len(header) - 1)
    return [_row(header), _row(align), *(_row(r) for r in rows)]


def _bold_best(values: Sequence[float | None], lower_is_better: bool = False) -> list[bool]:
    """Mark every entry equal to the best displayed value (ties all bold)."""
    present = [v for v in values if v is not None]
    if len(present) < 2:
        return [False] * len(values)
    best = min(present) if lower_is_better else max(present)
    return [v is not None and v == best for v in values]


def _cells(raw: Sequence[Any], lower_is_better: bool = False) -> list[str]:
    shown = [_pct_value(x) for x in raw]
    bold = _bold_best(shown, lower_is_better)
    return [f"**{pct(x)}**" if b else pct(x) for x, b in zip(raw, bold)]


def _k_sort(keys) -> list[str]:
    return sorted({str(k) for k in keys}, key=lambda k: int(k))


def label_of(system: Mapping) -> str:
    return system.get("label") or system["name"]


def _tags(tags: Sequence[str] | None, limit: int = MAX_CASE_TAGS, highlight: set[str] = frozenset()) -> str:
    tags = list(tags or [])
    shown = []
    for t in tags[:limit]:
        cell = "#" + escape_cell(t, 30)
        shown.append(f"**{cell}**" if t.strip().lower() in highlight else cell)
    return " ".join(shown) + (" …" if len(tags) > limit else "")


def _note_cell(note: Mapping | None) -> str:
    if not note:
        return "—"
    mark = "✓ " if note.get("is_truth") else ""
    cat = f" [{escape_cell(note.get('category'), 40)}]" if note.get("category") else ""
    tags = _tags(note.get("hashtags"))
    return f"{mark}{escape_cell(note.get('title'))}{cat}" + (f" {tags}" if tags else "")


# ------------------------------------------------------------------ schema access

def _validate(results: Mapping) -> None:
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


def _flat_recall(block: Mapping | None, signal: str = "cooccurrence") -> dict:
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


def _k_capped_note(results: Mapping, ks: Sequence[str]) -> str:
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


# ------------------------------------------------------------------ sections

def _ranking(results: Mapping, sig: str, k: str) -> list[tuple[float, Mapping]]:
    ranked = [(_pct_value(recall_of(s, sig, k)), i, s) for i, s in enumerate(results["systems"])]
    ranked = [(v, i, s) for v, i, s in ranked if v is not None]
    ranked.sort(key=lambda t: (-t[0], t[1]))
    return [(v, s) for v, _, s in ranked]


def _points(d: float) -> str:
    return f"{d:+.1f} points"


def glance_sentences(results: Mapping) -> list[str]:
    """One paragraph per signal: winner by Recall@100, margin over the runner-up,
    over zero-shot MiniLM and over the random-within-category floor; best
    NoteLLM variant vs best baseline; the full ranking."""
    out = []
    ref = reference_system(results)
    floor = floor_of(results)
    for sig in signals_of(results):
        ranked = _ranking(results, sig, HEADLINE_K)
        if not ranked:
            continue
        label = signal_label(results, sig)
        (w_val, w), rest = ranked[0], ranked[1:]
        ties = [s for v, s in rest if v == w_val]
        if ties:
            names = ", ".join(f"**{label_of(s)}**" for s in [w, *ties])
            text = f"On *{label}*, {names} tie at Recall@{HEADLINE_K} = {w_val:.1f}%"
            rest = [(v, s) for v, s in rest if v != w_val]
            text += (f", {_points(w_val - rest[0][0])} over the next, {label_of(rest[0][1])} "
                     f"({rest[0][0]:.1f}%)." if rest else ".")
        else:
            text = f"On *{label}*, **{label_of(w)}** wins with Recall@{HEADLINE_K} = {w_val:.1f}%"
            if rest:
                r_val, r = rest[0]
                rel = f", {100 * (w_val - r_val) / r_val:.0f}% relative" if r_val > 0 else ""
                text += f", {_points(w_val - r_val)} over the runner-up {label_of(r)} ({r_val:.1f}%{rel})"
            text += "."
        if ref is not None:
            ref_val = _pct_value(recall_of(ref, sig, HEADLINE_K))
            if ref is w or any(ref is s for s in ties):
                text += " The zero-shot MiniLM (SentenceBERT) baseline itself is on top."
            elif rest and ref is rest[0][1]:
                text += " The runner-up is the zero-shot MiniLM (SentenceBERT) baseline."
            elif ref_val is not None:
                text += (f" Over the zero-shot MiniLM (SentenceBERT) baseline, {label_of(ref)} ({ref_val:.1f}%): "
                         f"{_points(w_val - ref_val)}.")
        floor_val = _pct_value(((floor.get("recall") or {}).get(sig) or {}).get(HEADLINE_K))
        if floor_val is not None:
            text += (f" Floor (a random note of the query's own category): {floor_val:.1f}%, "
                     + (f"so the winner is {_points(w_val - floor_val)} above it." if w_val >= floor_val else
                        f"so even the winner is {abs(w_val - floor_val):.1f} points below it: on this signal "
                        f"the category alone explains more than any system's ranking."))
        groups = {}
        for v, s in ranked:
            groups.setdefault(s.get("group"), (v, s))
        if "notellm" in groups and "baseline" in groups:
            (nv, ns), (bv, bs) = groups["notellm"], groups["baseline"]
            c = paired_of(results, sig, ns["name"], bs["name"]) if "name" in ns and "name" in bs else None
            text += (f" Best NoteLLM variant ({label_of(ns)}, {nv:.1f}%) vs best baseline "
                     f"({label_of(bs)}, {bv:.1f}%): " + (paired_text(c, nv - bv) if c else _points(nv - bv)) + ".")
        pairs = (w.get("pairs") or {}).get(sig)
        ranking = " > ".join(f"{label_of(s)} {v:.1f}" for v, s in ranked)
        out.append(text + "\n\n" + f"  Ranking by Recall@{HEADLINE_K} (%)"
                   + (f", {pairs:,} pairs" if pairs else "") + f": {ranking}.")
    return out


def recall_tables(results: Mapping, plots: Mapping[str, str]) -> list[str]:
    floor = floor_of(results)
    lines = ["## Recall@K", "",
             "Each test pair's first note queries the whole test pool (itself excluded); a pair is a hit when "
             "its second note is among the top K. Percent; best system per column in bold."
             + (" The *random within category* row is a floor (what ranking the query's own category first, in "
                "random order, achieves), not a system." if floor.get("recall") else ""), ""]
    for sig in signals_of(results):
        systems = [s for s in results["systems"] if (s.get("recall") or {}).get(sig)]
        if not systems:
            continue
        ks = _k_sort(k for s in systems for k in s["recall"][sig])
        pairs = {(s.get("pairs") or {}).get(sig) for s in systems}
        n_pairs = next(iter(pairs)) if len(pairs) == 1 else None
        head = f"### {signal_label(results, sig)}"
        lines += [head + (f" ({n_pairs:,} pairs)" if n_pairs is not None else ""), ""]
        if len(pairs) > 1:
            lines += ["**Warning: systems were evaluated on different numbers of pairs: "
                      + ", ".join(f"{s['name']} {(s.get('pairs') or {}).get(sig)}" for s in systems) + ".**", ""]
        cols = [_cells([recall_of(s, sig, k) for s in systems]) for k in ks]
        rows = [[escape_cell(label_of(s), None), s.get("group") or ""] + [c[i] for c in cols]
                for i, s in enumerate(systems)]
        with_ci = any(((s.get("recall_ci") or {}).get(sig) or {}).get(HEADLINE_K) for s in systems)
        if with_ci:
            for row, s in zip(rows, systems):
                ci = ((s.get("recall_ci") or {}).get(sig) or {}).get(HEADLINE_K)
                row.append(f"{pct(ci[0])}-{pct(ci[1])}" if ci else "")
        frec = (floor.get("recall") or {}).get(sig)
        if frec:
            rows.append(["*random within category (floor)*", "floor"] + [f"*{pct(frec.get(k))}*" for k in ks]
                        + ([""] if with_ci else []))
        lines += _table(["System", "Group"] + [f"R@{k}" for k in ks] + ([f"R@{HEADLINE_K} 95% CI"] if with_ci else []),
                        rows, ["---", "---"] + ["---:"] * (len(ks) + with_ci))
        note = _k_capped_note(results, ks)
        lines += ["", note] if note else []
        lines.append("")
    if plots.get("recall_at_k"):
        lines += [f"![Recall@K per system, one panel per relevance signal]({plots['recall_at_k']})", ""]
    return lines


SIGNIFICANCE_CONTRASTS = (  # (a, b, why) shown when both systems ran
    ("notellm", "minilm_ft", "the issue's target: NoteLLM vs the fine-tuned SentenceBERT (online baseline)"),
    ("notellm", "minilm", "NoteLLM vs zero-shot SentenceBERT"),
    ("notellm_short", "minilm_ft", "short template vs the fine-tuned SentenceBERT"),
    ("notellm_no_csft", "minilm_ft", "contrastive-only vs the fine-tuned SentenceBERT"),
    ("notellm", "notellm_no_csft", "effect of CSFT (same prompt, same steps)"),
    ("notellm_short", "notellm", "short vs paper template"),
    ("notellm_no_csft", "smollm_prompteol", "effect of contrastive training on the LLM"),
    ("notellm", "smollm_prompteol", "NoteLLM vs its backbone zero-shot"),
    ("minilm_ft", "minilm", "effect of fine-tuning MiniLM on the pairs"),
)


def significance_section(results: Mapping) -> list[str]:
    """Paired differences at the headline K with bootstrap intervals and McNemar p."""
    if not results.get("paired"):
        return []
    unc = results.get("uncertainty") or {}
    names = {s["name"] for s in results["systems"] if "name" in s}
    labels = {s["name"]: label_of(s) for s in results["systems"] if "name" in s}
    both = {k: v for k, v in (unc.get("pairs_in_both_directions") or {}).items() if v}
    lines = ["## Are the differences real?", "",
             f"Differences of Recall@{HEADLINE_K} on the same test pairs (A - B, points), with a "
             f"{100 * unc.get('level', 0.95):.0f}% paired bootstrap interval ({unc.get('bootstrap_resamples', '?')} "
             "resamples; a pair and its reverse are resampled together) and the exact two-sided McNemar p-value "
             "on the pairs only one system hits. Read a difference as real when p < 0.05 *and* the interval "
             "excludes 0: with few discordant pairs the bootstrap interval can exclude 0 while p does not. The "
             "p-values are not corrected for the number of contrasts: at 0.05, about one in twenty true "
             "null contrasts passes by chance."
             + ("" if not both else " Pairs present in both directions (resampled together, but counted twice "
                "by McNemar, which makes its p slightly optimistic): "
                + ", ".join(f"{signal_label(results, k)}: {v}" for k, v in both.items()) + "."), ""]
    body = []
    for sig in signals_of(results):
        rows = []
        for a, b, why in SIGNIFICANCE_CONTRASTS:
            c = paired_of(results, sig, a, b) if a in names and b in names else None
            if c is None:
                continue
            lo, hi = c["ci"]
            rows.append([escape_cell(labels[a], None), escape_cell(labels[b], None), why,
                         f"{100 * c['diff']:+.1f}", f"{100 * lo:+.1f} to {100 * hi:+.1f}",
                         f"{c['a_only']} / {c['b_only']}", f"{c['p_mcnemar']:.2g}"])
        if rows:
            body += [f"### {signal_label(results, sig)}", ""]
            body += _table(["A", "B", "Contrast", "A - B", "95% CI", "only A / only B hit", "McNemar p"], rows,
                           ["---", "---", "---", "---:", "---:", "---:", "---:"])
            body.append("")
    return lines + body if body else []


def exposure_table(results: Mapping, plots: Mapping[str, str]) -> list[str]:
    systems = [s for s in results["systems"] if s.get("by_exposure")]
    if not systems:
        return []
    buckets = [b for b in BUCKET_ORDER if any(b in s["by_exposure"] for s in systems)]
    buckets += sorted({b for s in systems for b in s["by_exposure"]} - set(buckets))
    ks = _k_sort(k for s in systems for b in buckets for k in _flat_recall(s["by_exposure"].get(b)))
    threshold = (results.get("data") or {}).get("exposure_threshold")
    pairs = ", ".join(f"{b}: {(systems[0]['by_exposure'].get(b) or {}).get('pairs', 'n/a')} pairs" for b in buckets)
    lines = ["## Recall by exposure", "",
             "Mined test pairs split by the query note's exposure (its behaviour events in the test window"
             + (f"; threshold {threshold}" if threshold is not None else "") + f"). {pairs}.", ""]
    header, cols = ["System"], []
    for b in buckets:
        for k in ks:
            header.append(f"{b} R@{k}")
            cols.append(_cells([_flat_recall(s["by_exposure"].get(b)).get(k) for s in systems]))
    rows = [[escape_cell(label_of(s), None)] + [c[i] for c in cols] for i, s in enumerate(systems)]
    fb = floor_of(results).get("by_exposure")
    if fb:
        rows.append(["*random within category (floor)*"]
                    + [f"*{pct(_flat_recall(fb.get(b)).get(k))}*" for b in buckets for k in ks])
    lines += _table(header, rows)
    lines.append("")
    if plots.get("recall_by_exposure"):
        lines += [f"![Recall@{HEADLINE_K} by exposure bucket]({plots['recall_by_exposure']})", ""]
    return lines


def new_notes_table(results: Mapping) -> list[str]:
    systems = results["systems"]
    blocks = [s.get("new_notes") for s in systems]
    if not any(blocks):
        return []
    ks = _k_sort(k for b in blocks if b for k in _flat_recall(b))
    lines = ["## Notes new in the test period", "",
             "Mined test pairs whose query note was created inside the test window (cold-start notes).", ""]
    cols = [_cells([_flat_recall(b).get(k) if b else None for b in blocks]) for k in ks]
    rows = [[escape_cell(label_of(s), None), str(b.get("pairs", "n/a")) if b else "n/a"] + [c[i] for c in cols]
            for i, (s, b) in enumerate(zip(systems, blocks))]
    fnew = floor_of(results).get("new_notes")
    if fnew:
        rows.append(["*random within category (floor)*", str(fnew.get("pairs", ""))]
                    + [f"*{pct(_flat_recall(fnew).get(k))}*" for k in ks])
    lines += _table(["System", "Pairs"] + [f"R@{k}" for k in ks], rows)
    return lines + [""]


def generation_table(results: Mapping) -> list[str]:
    systems = [s for s in results["systems"] if s.get("generation")]
    if not systems:
        return []
    g = [s["generation"] for s in systems]

    def col(part, key, lower=False):
        return _cells([(x.get(part) or {}).get(key) for x in g], lower_is_better=lower)

    cols = [col("category_free", "accuracy"), col("category_free", "outside_known", True),
            col("category_constrained", "accuracy"), col("category_constrained", "outside_known", True),
            col("hashtags", "bleu4"), col("hashtags", "rouge1"), col("hashtags", "rouge2"), col("hashtags", "rougeL")]
    rows = []
    for i, (s, x) in enumerate(zip(systems, g)):
        n_cat = (x.get("category_free") or {}).get("n")
        n_tag = (x.get("hashtags") or {}).get("n")
        rows.append([escape_cell(label_of(s), None)] + [c[i] for c in cols]
                    + [f"{n_cat if n_cat is not None else 'n/a'} / {n_tag if n_tag is not None else 'n/a'}"])
    tokens = next(((x.get("hashtags") or {}).get("tokens") for x in g if (x.get("hashtags") or {}).get("tokens")),
                  None)
    lines = ["## Category and hashtag generation", "",
             "Held-out notes. Category: exact match after removing surrounding whitespace, quotes and a trailing full stop, case-folded; *outside* = share of generated "
             "categories that are not a known category (lower is better). Free = greedy generation, constrained = "
             "the known category with the highest likelihood. Hashtags: corpus BLEU-4 (no smoothing) and "
             "macro-averaged ROUGE-1/2/L F1 of the generated against the note's true hashtags"
             + (f" (tokens: {escape_cell(tokens, None)})" if tokens else "") + ". All ×100.", ""]
    lines += _table(["System", "Cat. acc. (free)", "Outside (free)", "Cat. acc. (constr.)", "Outside (constr.)",
                     "BLEU-4", "ROUGE-1", "ROUGE-2", "ROUGE-L", "n (cat. / tags)"], rows)
    return lines + [""]


def cost_table(results: Mapping, plots: Mapping[str, str]) -> list[str]:
    with_gen = any(s.get("generation_wall_s") is not None for s in results["systems"])
    rows = []
    for s in results["systems"]:
        c = s.get("cost") or {}
        rows.append([escape_cell(label_of(s), None), duration(c.get("train_wall_s")), rate(c.get("train_samples_per_s")),
                     duration(c.get("embed_wall_s")), rate(c.get("embed_notes_per_s"))]
                    + ([duration(s.get("generation_wall_s"))] if with_gen else []))
    lines = ["## Cost", "",
             "Wall time on the machine above; — = not applicable (no training / no generation). Training samples/s "
             "counts notes (a pair is two); embedding covers the whole evaluation pool (for BM25: indexing and "
             "scoring).", ""]
    lines += _table(["System", "Train wall", "Train samples/s", "Embed wall", "Embed notes/s"]
                    + (["Generation wall"] if with_gen else []), rows)
    lines.append("")
    if plots.get("loss_curves"):
        lines += [f"![Training losses per trained system]({plots['loss_curves']})", ""]
    return lines


def paper_section(results: Mapping) -> list[str]:
    paper = results.get("paper_table2") or PAPER_TABLE2
    primary = signals_of(results)[0] if signals_of(results) else None
    ours = {}
    for s in results["systems"]:
        row = s.get("paper_row") or PAPER_COUNTERPART.get(s["name"])
        if row and primary:
            ours[row] = s
    rows = []
    for row, value in paper.items():
        s = ours.get(row)
        rows.append([row, f"{value:.2f}", escape_cell(label_of(s), None) if s else "—",
                     pct(recall_of(s, primary, HEADLINE_K)) if s else "—"])
    lines = ["## Orientation: the paper's Table 2", "",
             "Recall@100 reported by Zhang et al. (WWW 2024, Table 2) on Xiaohongshu data, beside our closest "
             f"system on *{signal_label(results, primary) if primary else 'our data'}*. The data (Stack Exchange "
             "questions and their co-engagement vs. Xiaohongshu notes and co-clicks), the backbone (their "
             "LLaMA-2 7B vs our SmolLM2-135M), the test pool size and the training budget all differ, so only the "
             "ordering of the rows is comparable, not the values.", ""]
    lines += _table(["Paper row", "Paper R@100", "Our counterpart", "Our R@100"], rows, ["---", "---:", "---", "---:"])
    return lines + [""]


def _code(key: Any) -> str:
    """A key as inline code (no Markdown escapes needed inside, except the table's pipe)."""
    return "`" + str(key).replace("`", "'").replace("|", "\\|") + "`"


def _value_text(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return escape_cell(v if isinstance(v, str) else json.dumps(v, ensure_ascii=False), None)


def key_value_section(title: str, block: Mapping | None) -> list[str]:
    if not block:
        return []
    flat = [(k, v) for k, v in block.items() if not isinstance(v, (Mapping, list))]
    nested = [(k, v) for k, v in block.items() if isinstance(v, (Mapping, list))]
    lines = [f"### {title}", ""]
    if flat:
        lines += _table(["Key", "Value"], [[_code(k), _value_text(v)] for k, v in flat], ["---", "---"])
        lines.append("")
    for k, v in nested:
        body = json.dumps(v, indent=2, ensure_ascii=False)
        lines += [f"<details><summary>{escape_cell(k, None)}</summary>", "", "```json", body, "```", "",
                  "</details>", ""]
    return lines


def data_section(results: Mapping) -> list[str]:
    lines = ["## Data and configuration", ""]
    signals = results.get("signals") or {}
    if signals:
        lines += ["Relevance signals:", ""] + [f"- **{escape_cell(k, None)}**: {escape_cell(v, None)}"
                                               for k, v in signals.items()] + [""]
    floor = floor_of(results)
    if floor:
        trials = floor.get("trials")
        how = floor.get("definition") or "a random note of the query's own category"
        lines += [f"Random-within-category floor: {escape_cell(how, None)}"
                  + (f" (mean over {trials} random trials)." if trials else "."), ""]
    lines += key_value_section("Data", results.get("data"))
    lines += key_value_section("Configuration", results.get("config"))
    return lines


def cases_section(results: Mapping) -> list[str]:
    cases = results.get("cases") or {}
    queries, generation = cases.get("queries") or [], cases.get("generation") or []
    if not queries and not generation:
        return []
    label = {s["name"]: label_of(s) for s in results["systems"]}
    order = [s["name"] for s in results["systems"]]
    lines = ["## Cases", "",
             "As in the paper's Figure 3: random query notes, the truth (its test-pair partner) and each "
             "system's top-3 neighbours as *title [category] #hashtags*; ✓ marks the truth.", ""]
    if queries:
        names = order + sorted({n for q in queries for n in (q.get("neighbours") or {})} - set(order))
        hits = {n: sum(bool(x.get("is_truth")) for q in queries for x in (q.get("neighbours") or {}).get(n) or [])
                for n in names}
        lines += [f"Truth found in the top 3 over these {len(queries)} queries: "
                  + ", ".join(f"{label.get(n, n)} {hits[n]}" for n in names) + ".", ""]
    for i, q in enumerate(queries, 1):
        neigh = q.get("neighbours") or {}
        names = [n for n in order if n in neigh] + sorted(set(neigh) - set(order))
        qn = q.get("query") or {}
        lines += [f"### Query {i}: {escape_cell(qn.get('title'))}", "",
                  f"- **Query:** {_note_cell({**qn, 'is_truth': False})}",
                  f"- **Truth:** {_note_cell({**(q.get('truth') or {}), 'is_truth': False})}", ""]
        if names:
            depth = max(len(neigh[n] or []) for n in names)
            rows = [[str(r + 1)] + [_note_cell((neigh[n] or [])[r] if r < len(neigh[n] or []) else None)
                                    for n in names] for r in range(depth)]
            lines += _table(["#"] + [escape_cell(label.get(n, n), None) for n in names], rows,
                            ["---:"] + ["---"] * len(names))
            lines.append("")
    if generation:
        lines += ["### Generated categories and hashtags", "",
                  "Free and constrained category generation and the generated hashtags next to the true ones "
                  "(✓ = category correct, **bold** = hashtag among the true ones).", ""]
    for g in generation:
        true_cat = g.get("true_category") or ""
        true_tags = list(g.get("true_hashtags") or [])
        truth_set = {t.strip().lower() for t in true_tags}
        lines += [f"#### {escape_cell(g.get('title'))}", "",
                  f"True category **{escape_cell(true_cat, None)}**, true hashtags {_tags(true_tags, 10) or '—'}", ""]
        gen = g.get("generated") or {}
        names = [n for n in order if n in gen] + sorted(set(gen) - set(order))
        rows = []
        for n in names:
            out = gen[n] or {}

            def cat(key):
                v = out.get(key)
                if v is None:
                    return "—"
                ok = v.strip().casefold() == true_cat.strip().casefold()
                return ("✓ " if ok else "") + escape_cell(v, 40)
            rows.append([escape_cell(label.get(n, n), None), cat("category_free"), cat("category_constrained"),
                         _tags(out.get("hashtags"), 8, truth_set) or "—"])
        if rows:
            lines += _table(["System", "Category (free)", "Category (constrained)", "Hashtags"], rows,
                            ["---"] * 4)
            lines.append("")
    return lines


def report_markdown(results: Mapping, plots: Mapping[str, str] | None = None) -> str:
    """The whole report as Markdown; ``plots`` maps plot name -> relative path."""
    _validate(results)
    plots = plots or {}
    lines = [f"# NoteLLM quality report ({escape_cell(results.get('date') or 'undated', None)})", ""]
    if results.get("machine"):
        lines.append(f"- Machine: {escape_cell(results['machine'], None)}")
    if results.get("compute_s") is not None:
        bound = "" if results.get("compute_s_complete", True) else "at least "
        lines.append(f"- Compute time of the whole comparison from scratch (every stage as first computed): "
                     f"{bound}{duration(results['compute_s'])}"
                     + (f"; this invocation, reusing cached stages: {duration(results['wall_s'])}"
                        if results.get("wall_s") is not None else ""))
    elif results.get("wall_s") is not None:
        lines.append(f"- Total wall time: {duration(results['wall_s'])}")
    if results.get("command"):
        lines += ["- Command:", "", "  ```", f"  {results['command']}", "  ```"]
    lines += ["", "## At a glance", ""]
    sentences = glance_sentences(results)
    lines += [f"- {s}" for s in sentences] if sentences else [f"No system reports Recall@{HEADLINE_K}."]
    lines.append("")
    for section in (recall_tables(results, plots), significance_section(results), exposure_table(results, plots),
                    new_notes_table(results),
                    generation_table(results), cost_table(results, plots), paper_section(results),
                    data_section(results), cases_section(results)):
        lines += section
    if results.get("discussion_md"):
        lines += ["## Discussion", "", results["discussion_md"].rstrip(), ""]
    lines += ["---", "", f"Rendered by `evaluation/report.py` from `metrics.json` (schema `{SCHEMA}`)."]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ plots

def _series(values: Sequence[Any]):
    import numpy as np
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


def _finite_max(y) -> float:
    import numpy as np
    y = np.asarray(y, dtype=float)
    return float(np.nanmax(y)) if np.isfinite(y).any() else 0.0


def _moving_average(y, window: int):
    import numpy as np
    if window <= 1 or len(y) < window:
        return y
    kernel = np.ones(window) / window
    return np.convolve(y, kernel, mode="valid")


def _style(i: int, system: Mapping) -> dict:
    from matplotlib import colormaps
    color = colormaps["tab10"](i % 10)
    if system.get("group") == "notellm":
        return {"color": color, "lw": 2.2, "marker": "o", "ms": 4}
    return {"color": color, "lw": 1.4, "marker": "s", "ms": 3.5}


def _save(fig, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    FigureCanvasAgg(fig)
    # No "Software" metadata: the same numbers give the same bytes across matplotlib patch versions.
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    return path


def plot_recall_at_k(results: Mapping, path: Path) -> Path | None:
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter
    sigs = [sig for sig in signals_of(results) if any(
        (s.get("recall_curve") or {}).get(sig) or (s.get("recall") or {}).get(sig) for s in results["systems"])]
    if not sigs:
        return None
    fig = Figure(figsize=(6.2 * len(sigs), 5.2), layout="constrained")
    axes = fig.subplots(1, len(sigs), squeeze=False)[0]
    floor = floor_of(results)
    for ax, sig in zip(axes, sigs):
        top = 0.0
        for i, s in enumerate(results["systems"]):
            curve = (s.get("recall_curve") or {}).get(sig)
            if curve and curve.get("k"):
                k, r = list(curve["k"]), _series(curve["recall"]) * 100
            elif (s.get("recall") or {}).get(sig):
                ks = _k_sort(s["recall"][sig])
                k, r = [int(x) for x in ks], _series([s["recall"][sig][x] for x in ks]) * 100
            else:
                continue
            ax.plot(k, r, label=label_of(s), **_style(i, s))
            top = max(top, _finite_max(r))
        fcurve = (floor.get("recall_curve") or {}).get(sig)
        frec = (floor.get("recall") or {}).get(sig)
        if fcurve and fcurve.get("k"):
            fk, fr = list(fcurve["k"]), _series(fcurve["recall"]) * 100
        elif frec:
            ks = _k_sort(frec)
            fk, fr = [int(x) for x in ks], _series([frec[x] for x in ks]) * 100
        else:
            fk = None
        if fk:
            ax.plot(fk, fr, ls="--", color="0.45", lw=1.5, label="random within category (floor)")
            top = max(top, _finite_max(fr))
        ax.axvline(int(HEADLINE_K), color="0.85", lw=0.8, zorder=0)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))   # 1, 10, 100 instead of 10^k
        ax.set_ylim(0, min(102.0, top * 1.08 + 1))
        ax.set_xlabel("K (log scale)")
        ax.set_ylabel("Recall@K (%)")
        pairs = next(((s.get("pairs") or {}).get(sig) for s in results["systems"] if (s.get("pairs") or {}).get(sig)),
                     None)
        title = signal_label(results, sig)
        title = title if len(title) <= 60 else title[:59] + "…"
        ax.set_title(title + (f"\n{pairs:,} pairs" if pairs else ""), fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(labels)), fontsize=9, frameon=False)
    return _save(fig, path)


def plot_loss_curves(results: Mapping, path: Path) -> Path | None:
    from matplotlib.figure import Figure
    import numpy as np
    trained = [(i, s) for i, s in enumerate(results["systems"]) if (s.get("loss_curve") or {}).get("step")]
    if not trained:
        return None
    panels = [("l_cl", "L_cl (contrastive)")]
    if any(np.isfinite(_series((s["loss_curve"].get("l_gen") or []))).any() for _, s in trained):
        panels.append(("l_gen", "L_gen (generative, CSFT)"))
    fig = Figure(figsize=(6.2 * len(panels), 4.6), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (key, title) in zip(axes, panels):
        for i, s in trained:
            lc = s["loss_curve"]
            step, y = _series(lc["step"]), _series(lc.get(key) or [])
            if len(y) != len(step) or not np.isfinite(y).any():
                continue
            ok = np.isfinite(y)
            step, y = step[ok], y[ok]
            st = _style(i, s)
            window = max(1, len(y) // 20)
            if window > 1:   # raw losses are noisy: faint raw line + moving average
                ax.plot(step, y, color=st["color"], lw=0.8, alpha=0.25)
                ax.plot(step[window - 1:], _moving_average(y, window), color=st["color"], lw=st["lw"],
                        label=label_of(s))
            else:
                ax.plot(step, y, color=st["color"], lw=st["lw"], label=label_of(s))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training step")
        ax.set_ylabel("loss")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, frameon=False)
    return _save(fig, path)


def plot_recall_by_exposure(results: Mapping, path: Path) -> Path | None:
    from matplotlib.figure import Figure
    import numpy as np
    systems = [s for s in results["systems"] if s.get("by_exposure")]
    if not systems:
        return None
    buckets = [b for b in BUCKET_ORDER if any(b in s["by_exposure"] for s in systems)]
    buckets += sorted({b for s in systems for b in s["by_exposure"]} - set(buckets))
    fig = Figure(figsize=(max(7.0, 1.25 * len(systems) + 2.5), 5.0), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(systems))
    width = 0.8 / len(buckets)
    colors = ["#8fb8de", "#1f5f99", "#c98b2c", "#6a3d9a"]
    fb = floor_of(results).get("by_exposure") or {}
    for j, b in enumerate(buckets):
        vals = _series([_flat_recall(s["by_exposure"].get(b)).get(HEADLINE_K) for s in systems]) * 100
        pairs = (systems[0]["by_exposure"].get(b) or {}).get("pairs")
        bars = ax.bar(x + (j - (len(buckets) - 1) / 2) * width, np.nan_to_num(vals), width,
                      color=colors[j % len(colors)], label=f"{b} exposure" + (f" ({pairs} pairs)" if pairs else ""))
        for rect, v in zip(bars, vals):
            if np.isfinite(v):
                ax.annotate(f"{v:.1f}", (rect.get_x() + rect.get_width() / 2, rect.get_height()),
                            ha="center", va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points",
                            bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8})
        floor_v = _flat_recall(fb.get(b)).get(HEADLINE_K)
        if floor_v is not None:
            ax.axhline(100 * floor_v, ls="--", lw=1.2, color=colors[j % len(colors)],
                       label=f"random within category, {b} (floor)")
    ax.set_xticks(x, [label_of(s) for s in systems], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(f"Recall@{HEADLINE_K} (%)")
    ax.set_title(f"Recall@{HEADLINE_K} on the mined pairs by query exposure", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.08)   # room for the value labels
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    return _save(fig, path)


def render_plots(results: Mapping, plot_dir: Path) -> dict[str, Path]:
    """Write the PNGs; returns {plot name: path} for those that had data."""
    plot_dir.mkdir(parents=True, exist_ok=True)
    made = {}
    for name, fn in (("recall_at_k", plot_recall_at_k), ("loss_curves", plot_loss_curves),
                     ("recall_by_exposure", plot_recall_by_exposure)):
        path = fn(results, plot_dir / f"{name}.png")
        if path is not None:
            made[name] = path
        elif (plot_dir / f"{name}.png").exists():   # stale plot from an earlier run with more data
            (plot_dir / f"{name}.png").unlink()
    return made


def render_report(results: dict, out_dir: Path) -> Path:
    """Write ``out_dir/report.md``, ``out_dir/metrics.json`` and ``out_dir/plots/*.png``; return the report path."""
    _validate(results)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n",
                                          encoding="utf-8")
    plots = render_plots(results, out_dir / "plots")
    rel = {name: path.relative_to(out_dir).as_posix() for name, path in plots.items()}
    report = out_dir / "report.md"
    report.write_text(report_markdown(results, rel), encoding="utf-8")
    return report
