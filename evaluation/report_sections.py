"""The quality report's Markdown sections, each a pure function of the results dict
returning its lines: the at-a-glance sentences, Recall@K, significance, exposure,
new notes, generation, cost, the paper's Table 2 and the data/configuration."""

from __future__ import annotations

import json
from typing import Any, Mapping

from evaluation.paper import PAPER_COUNTERPART, PAPER_TABLE2
from evaluation.report_format import (
    BUCKET_ORDER,
    HEADLINE_K,
    cells,
    duration,
    escape_cell,
    flat_recall,
    floor_of,
    k_capped_note,
    k_sort,
    label_of,
    paired_of,
    paired_text,
    pct,
    pct_value,
    rate,
    recall_of,
    reference_system,
    signal_label,
    signals_of,
    table,
)


def _ranking(results: Mapping, sig: str, k: str) -> list[tuple[float, Mapping]]:
    ranked = [(pct_value(recall_of(s, sig, k)), i, s) for i, s in enumerate(results["systems"])]
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
            ref_val = pct_value(recall_of(ref, sig, HEADLINE_K))
            if ref is w or any(ref is s for s in ties):
                text += " The zero-shot MiniLM (SentenceBERT) baseline itself is on top."
            elif rest and ref is rest[0][1]:
                text += " The runner-up is the zero-shot MiniLM (SentenceBERT) baseline."
            elif ref_val is not None:
                text += (f" Over the zero-shot MiniLM (SentenceBERT) baseline, {label_of(ref)} ({ref_val:.1f}%): "
                         f"{_points(w_val - ref_val)}.")
        floor_val = pct_value(((floor.get("recall") or {}).get(sig) or {}).get(HEADLINE_K))
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
        ks = k_sort(k for s in systems for k in s["recall"][sig])
        pairs = {(s.get("pairs") or {}).get(sig) for s in systems}
        n_pairs = next(iter(pairs)) if len(pairs) == 1 else None
        head = f"### {signal_label(results, sig)}"
        lines += [head + (f" ({n_pairs:,} pairs)" if n_pairs is not None else ""), ""]
        if len(pairs) > 1:
            lines += ["**Warning: systems were evaluated on different numbers of pairs: "
                      + ", ".join(f"{s['name']} {(s.get('pairs') or {}).get(sig)}" for s in systems) + ".**", ""]
        cols = [cells([recall_of(s, sig, k) for s in systems]) for k in ks]
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
        lines += table(["System", "Group"] + [f"R@{k}" for k in ks] + ([f"R@{HEADLINE_K} 95% CI"] if with_ci else []),
                        rows, ["---", "---"] + ["---:"] * (len(ks) + with_ci))
        note = k_capped_note(results, ks)
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
            body += table(["A", "B", "Contrast", "A - B", "95% CI", "only A / only B hit", "McNemar p"], rows,
                           ["---", "---", "---", "---:", "---:", "---:", "---:"])
            body.append("")
    return lines + body if body else []


def exposure_table(results: Mapping, plots: Mapping[str, str]) -> list[str]:
    systems = [s for s in results["systems"] if s.get("by_exposure")]
    if not systems:
        return []
    buckets = [b for b in BUCKET_ORDER if any(b in s["by_exposure"] for s in systems)]
    buckets += sorted({b for s in systems for b in s["by_exposure"]} - set(buckets))
    ks = k_sort(k for s in systems for b in buckets for k in flat_recall(s["by_exposure"].get(b)))
    threshold = (results.get("data") or {}).get("exposure_threshold")
    pairs = ", ".join(f"{b}: {(systems[0]['by_exposure'].get(b) or {}).get('pairs', 'n/a')} pairs" for b in buckets)
    lines = ["## Recall by exposure", "",
             "Mined test pairs split by the query note's exposure (its behaviour events in the test window"
             + (f"; threshold {threshold}" if threshold is not None else "") + f"). {pairs}.", ""]
    header, cols = ["System"], []
    for b in buckets:
        for k in ks:
            header.append(f"{b} R@{k}")
            cols.append(cells([flat_recall(s["by_exposure"].get(b)).get(k) for s in systems]))
    rows = [[escape_cell(label_of(s), None)] + [c[i] for c in cols] for i, s in enumerate(systems)]
    fb = floor_of(results).get("by_exposure")
    if fb:
        rows.append(["*random within category (floor)*"]
                    + [f"*{pct(flat_recall(fb.get(b)).get(k))}*" for b in buckets for k in ks])
    lines += table(header, rows)
    lines.append("")
    if plots.get("recall_by_exposure"):
        lines += [f"![Recall@{HEADLINE_K} by exposure bucket]({plots['recall_by_exposure']})", ""]
    return lines


def new_notes_table(results: Mapping) -> list[str]:
    systems = results["systems"]
    blocks = [s.get("new_notes") for s in systems]
    if not any(blocks):
        return []
    ks = k_sort(k for b in blocks if b for k in flat_recall(b))
    lines = ["## Notes new in the test period", "",
             "Mined test pairs whose query note was created inside the test window (cold-start notes).", ""]
    cols = [cells([flat_recall(b).get(k) if b else None for b in blocks]) for k in ks]
    rows = [[escape_cell(label_of(s), None), str(b.get("pairs", "n/a")) if b else "n/a"] + [c[i] for c in cols]
            for i, (s, b) in enumerate(zip(systems, blocks))]
    fnew = floor_of(results).get("new_notes")
    if fnew:
        rows.append(["*random within category (floor)*", str(fnew.get("pairs", ""))]
                    + [f"*{pct(flat_recall(fnew).get(k))}*" for k in ks])
    lines += table(["System", "Pairs"] + [f"R@{k}" for k in ks], rows)
    return lines + [""]


def generation_table(results: Mapping) -> list[str]:
    systems = [s for s in results["systems"] if s.get("generation")]
    if not systems:
        return []
    g = [s["generation"] for s in systems]

    def col(part, key, lower=False):
        return cells([(x.get(part) or {}).get(key) for x in g], lower_is_better=lower)

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
             "Held-out notes. Category: exact match after removing surrounding whitespace, quotes and a trailing "
             "full stop, case-folded; *outside* = share of generated "
             "categories that are not a known category (lower is better). Free = greedy generation, constrained = "
             "the known category with the highest likelihood. Hashtags: corpus BLEU-4 (no smoothing) and "
             "macro-averaged ROUGE-1/2/L F1 of the generated against the note's true hashtags"
             + (f" (tokens: {escape_cell(tokens, None)})" if tokens else "") + ". All ×100.", ""]
    lines += table(["System", "Cat. acc. (free)", "Outside (free)", "Cat. acc. (constr.)", "Outside (constr.)",
                     "BLEU-4", "ROUGE-1", "ROUGE-2", "ROUGE-L", "n (cat. / tags)"], rows)
    return lines + [""]


def cost_table(results: Mapping, plots: Mapping[str, str]) -> list[str]:
    with_gen = any(s.get("generation_wall_s") is not None for s in results["systems"])
    rows = []
    for s in results["systems"]:
        c = s.get("cost") or {}
        rows.append([escape_cell(label_of(s), None), duration(c.get("train_wall_s")),
                     rate(c.get("train_samples_per_s")), duration(c.get("embed_wall_s")),
                     rate(c.get("embed_notes_per_s"))]
                    + ([duration(s.get("generation_wall_s"))] if with_gen else []))
    lines = ["## Cost", "",
             "Wall time on the machine above; — = not applicable (no training / no generation). Training samples/s "
             "counts notes (a pair is two); embedding covers the whole evaluation pool (for BM25: indexing and "
             "scoring).", ""]
    lines += table(["System", "Train wall", "Train samples/s", "Embed wall", "Embed notes/s"]
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
    lines += table(["Paper row", "Paper R@100", "Our counterpart", "Our R@100"], rows, ["---", "---:", "---", "---:"])
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
        lines += table(["Key", "Value"], [[_code(k), _value_text(v)] for k, v in flat], ["---", "---"])
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
