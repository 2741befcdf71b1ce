"""The quality report as Markdown: :func:`report_markdown` puts the header, the
sections of :mod:`evaluation.report_sections`, the cases (the paper's Figure 3
style) and the discussion together. A pure function of the results dict."""

from __future__ import annotations

from typing import Mapping

from evaluation.report_format import (
    HEADLINE_K,
    SCHEMA,
    duration,
    escape_cell,
    hashtag_cells,
    label_of,
    note_cell,
    table,
    validate,
)
from evaluation.report_sections import (
    cost_table,
    data_section,
    exposure_table,
    generation_table,
    glance_sentences,
    new_notes_table,
    paper_section,
    recall_tables,
    significance_section,
)


def cases_section(results: Mapping) -> list[str]:
    """The paper's Figure 3 style: query cases with each system's top 3, then the generations."""
    cases = results.get("cases") or {}
    queries, generation = cases.get("queries") or [], cases.get("generation") or []
    if not queries and not generation:
        return []
    label = {s["name"]: label_of(s) for s in results["systems"]}
    order = [s["name"] for s in results["systems"]]
    lines = ["## Cases", "",
             "As in the paper's Figure 3: random query notes, the truth (its test-pair partner) and each "
             "system's top-3 neighbours as *title [category] #hashtags*; ✓ marks the truth.", ""]
    lines += _query_cases(queries, label, order)
    if generation:
        lines += ["### Generated categories and hashtags", "",
                  "Free and constrained category generation and the generated hashtags next to the true ones "
                  "(✓ = category correct, **bold** = hashtag among the true ones).", ""]
    for g in generation:
        lines += _generation_case(g, label, order)
    return lines


def _ordered(names, order: list[str]) -> list[str]:
    """Systems in report order, then any other name sorted."""
    return [n for n in order if n in names] + sorted(set(names) - set(order))


def _query_cases(queries: list, label: Mapping[str, str], order: list[str]) -> list[str]:
    lines: list[str] = []
    if queries:
        names = order + sorted({n for q in queries for n in (q.get("neighbours") or {})} - set(order))
        hits = {n: sum(bool(x.get("is_truth")) for q in queries for x in (q.get("neighbours") or {}).get(n) or [])
                for n in names}
        lines += [f"Truth found in the top 3 over these {len(queries)} queries: "
                  + ", ".join(f"{label.get(n, n)} {hits[n]}" for n in names) + ".", ""]
    for i, q in enumerate(queries, 1):
        neigh = q.get("neighbours") or {}
        names = _ordered(neigh, order)
        qn = q.get("query") or {}
        lines += [f"### Query {i}: {escape_cell(qn.get('title'))}", "",
                  f"- **Query:** {note_cell({**qn, 'is_truth': False})}",
                  f"- **Truth:** {note_cell({**(q.get('truth') or {}), 'is_truth': False})}", ""]
        if names:
            depth = max(len(neigh[n] or []) for n in names)
            rows = [[str(r + 1)] + [note_cell((neigh[n] or [])[r] if r < len(neigh[n] or []) else None)
                                    for n in names] for r in range(depth)]
            lines += table(["#"] + [escape_cell(label.get(n, n), None) for n in names], rows,
                           ["---:"] + ["---"] * len(names))
            lines.append("")
    return lines


def _category_cell(value: str | None, true_cat: str) -> str:
    if value is None:
        return "—"
    ok = value.strip().casefold() == true_cat.strip().casefold()
    return ("✓ " if ok else "") + escape_cell(value, 40)


def _generation_case(g: Mapping, label: Mapping[str, str], order: list[str]) -> list[str]:
    true_cat = g.get("true_category") or ""
    true_tags = list(g.get("true_hashtags") or [])
    truth_set = {t.strip().lower() for t in true_tags}
    lines = [f"#### {escape_cell(g.get('title'))}", "",
             f"True category **{escape_cell(true_cat, None)}**, "
             f"true hashtags {hashtag_cells(true_tags, 10) or '—'}", ""]
    gen = g.get("generated") or {}
    rows = []
    for n in _ordered(gen, order):
        out = gen[n] or {}
        rows.append([escape_cell(label.get(n, n), None), _category_cell(out.get("category_free"), true_cat),
                     _category_cell(out.get("category_constrained"), true_cat),
                     hashtag_cells(out.get("hashtags"), 8, truth_set) or "—"])
    if rows:
        lines += table(["System", "Category (free)", "Category (constrained)", "Hashtags"], rows, ["---"] * 4)
        lines.append("")
    return lines


def report_markdown(results: Mapping, plots: Mapping[str, str] | None = None) -> str:
    """The whole report as Markdown; ``plots`` maps plot name -> relative path."""
    validate(results)
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
