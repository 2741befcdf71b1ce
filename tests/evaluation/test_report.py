"""The quality-report renderer on a small synthetic results dict: the sentences
and bold cells must follow the numbers, user text must not break the tables,
and the files (Markdown, JSON, PNG) must be real."""

from __future__ import annotations

import copy
import json

import pytest

from evaluation.report import SCHEMA, escape_cell, render_report, report_markdown

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
KS = ["10", "50", "100", "1000"]
CURVE_K = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]


def _recall(r100: float) -> dict:
    return {"10": round(r100 * 0.4, 4), "50": round(r100 * 0.8, 4), "100": r100, "1000": min(1.0, r100 * 2)}


def _curve(r100: float) -> dict:
    return {"k": CURVE_K, "recall": [min(1.0, r100 * (k / 100) ** 0.3) for k in CURVE_K]}


def _system(name, label, group, cooc100, post100, generation=None, loss=False):
    return {
        "name": name, "label": label, "group": group,
        "recall": {"cooccurrence": _recall(cooc100), "postlinks": _recall(post100)},
        "k_capped": {"10": 10, "50": 50, "100": 100, "1000": 999},
        "pairs": {"cooccurrence": 400, "postlinks": 60},
        "recall_curve": {"cooccurrence": _curve(cooc100), "postlinks": _curve(post100)},
        "by_exposure": {"low": {"recall": {"10": cooc100 * 0.3, "100": cooc100 * 0.9}, "pairs": 200},
                        "high": {"recall": {"10": cooc100 * 0.5, "100": cooc100 * 1.1}, "pairs": 200}},
        "new_notes": {"recall": {"10": cooc100 * 0.2, "100": cooc100 * 0.7}, "pairs": 120},
        "cost": {"train_wall_s": 3725.0 if loss else None, "train_samples_per_s": 4.4 if loss else None,
                 "embed_wall_s": 95.5, "embed_notes_per_s": 10.5},
        "loss_curve": ({"step": list(range(0, 200, 5)),
                        "l_cl": [4.0 - 0.01 * s for s in range(0, 200, 5)],
                        "l_gen": [2.5 - 0.005 * s for s in range(0, 200, 5)]} if loss else None),
        "generation": generation,
    }


def _note(nid, title, cat, tags, is_truth=None):
    n = {"note_id": nid, "title": title, "category": cat, "hashtags": tags}
    if is_truth is not None:
        n["is_truth"] = is_truth
    return n


PIPE_TITLE = "Pipes | in titles\nand newlines"
LONG_TITLE = "A very long question title " * 6


def make_results() -> dict:
    gen = {"category_free": {"accuracy": 0.5, "outside_known": 0.25, "n": 24},
           "category_constrained": {"accuracy": 0.75, "outside_known": 0.0, "n": 24},
           "hashtags": {"bleu4": 0.031, "rouge1": 0.22, "rouge2": 0.05, "rougeL": 0.2, "n": 24}}
    systems = [
        # R@100 cooccurrence: NoteLLM 35.649 -> 35.6, BM25 33.051 -> 33.1, MiniLM 30.2; displayed margin 2.5
        # (the raw margin 2.598 would round to 2.6: the sentence must use the displayed values)
        _system("bm25", "BM25 (title + content)", "baseline", 0.33051, 0.62),
        _system("minilm", "all-MiniLM-L6-v2 zero-shot", "baseline", 0.302, 0.58),
        _system("notellm", "NoteLLM", "notellm", 0.35649, 0.55, generation=gen, loss=True),
    ]
    neighbours = lambda hit_rank: {  # noqa: E731
        "bm25": [_note("n1", "First neighbour", "beer", ["ipa"], hit_rank == 0),
                 _note("n2", PIPE_TITLE, "beer", ["stout"], False),
                 _note("n3", "Third", "coffee", ["espresso"], False)],
        "minilm": [_note("n4", "Other", "beer", [], False)] * 3,
        "notellm": [_note("n5", LONG_TITLE, "beer", ["ipa", "hops", "a", "b", "c"], False),
                    _note("n6", "Truth note", "beer", ["ipa"], True),
                    _note("n7", "x*y_z", "beer", [], False)],
    }
    return {
        "schema": SCHEMA, "date": "2026-11-25", "machine": "x86_64 CPU, 2 cores, no GPU",
        "command": "python -m evaluation.compare --steps 200",
        "config": {"budget_steps": 200, "batch_pairs": 8, "lr": 1e-4, "template": "v1-paper"},
        "data": {"train_pairs": 5000, "test_pairs": 400, "pool": 1000, "exposure_threshold": 7,
                 "stages": {"adapter": {"wall_s": 3.2}}},
        "signals": {"cooccurrence": "mined co-click pairs (test window)",
                    "postlinks": "human PostLinks between pool notes"},
        "systems": systems,
        "random_within_category": {
            "recall": {"cooccurrence": _recall(0.26), "postlinks": _recall(0.4)},
            "by_exposure": {"low": {"recall": {"10": 0.1, "100": 0.24}, "pairs": 200},
                            "high": {"recall": {"10": 0.12, "100": 0.28}, "pairs": 200}},
            "new_notes": {"recall": {"10": 0.05, "100": 0.2}, "pairs": 120},
            "trials": 20},
        "cases": {
            "queries": [
                {"query": _note("q1", PIPE_TITLE, "beer", ["ipa", "hops"]),
                 "truth": _note("t1", "Truth note", "beer", ["ipa"]), "neighbours": neighbours(1)},
                {"query": _note("q2", "Second query", "coffee", ["espresso"]),
                 "truth": _note("n1", "First neighbour", "beer", ["ipa"]), "neighbours": neighbours(0)},
            ],
            "generation": [
                {"note_id": "g1", "title": "How hoppy is an IPA?", "true_category": "beer",
                 "true_hashtags": ["ipa", "hops"],
                 "generated": {"notellm": {"category_free": "Beer ", "category_constrained": "beer",
                                           "hashtags": ["ipa", "lager"]}}},
            ]},
        "discussion_md": "Hand-written discussion: **NoteLLM** wins on mined pairs.",
    }


def _section(md: str, heading: str) -> str:
    start = md.index(heading)
    end = md.find("\n## ", start + len(heading))
    return md[start:end if end >= 0 else None]


def _table_rows(text: str) -> dict[str, list[str]]:
    """First Markdown table in ``text`` as {first cell: cells}."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| ---"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            rows.setdefault(cells[0], cells)
        elif rows and not line.startswith("|"):
            break
    return rows


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    results = make_results()
    path = render_report(copy.deepcopy(results), out)
    return results, out, path, path.read_text(encoding="utf-8")


def test_at_a_glance_names_winner_and_margins_from_displayed_numbers(rendered):
    _, _, _, md = rendered
    glance = _section(md, "## At a glance")
    assert ("On *mined co-click pairs (test window)*, **NoteLLM** wins with Recall@100 = 35.6%, "
            "+2.5 points over the runner-up BM25 (title + content) (33.1%") in glance
    assert ("Over the zero-shot MiniLM (SentenceBERT) baseline, all-MiniLM-L6-v2 zero-shot (30.2%): +5.4 points."
            in glance)
    assert "Floor (a random note of the query's own category): 26.0%, so the winner is +9.6 points above it." \
        in glance
    # postlinks: BM25 62.0 > MiniLM 58.0 > NoteLLM 55.0
    assert ("On *human PostLinks between pool notes*, **BM25 (title + content)** wins with Recall@100 = 62.0%, "
            "+4.0 points over the runner-up all-MiniLM-L6-v2 zero-shot (58.0%") in glance
    assert "The runner-up is the zero-shot MiniLM (SentenceBERT) baseline." in glance
    assert "Best NoteLLM variant (NoteLLM, 55.0%) vs best baseline (BM25 (title + content), 62.0%): -7.0 points." \
        in glance
    assert "NoteLLM 35.6 > BM25 (title + content) 33.1 > all-MiniLM-L6-v2 zero-shot 30.2" in glance


def test_bold_marks_the_best_value_and_floor_row_is_shown(rendered):
    _, _, _, md = rendered
    recall = _section(md, "## Recall@K")
    cooc = _table_rows(recall[recall.index("### mined co-click"):])
    header = cooc["System"]
    i100 = header.index("R@100")
    assert cooc["NoteLLM"][i100] == "**35.6**"
    assert cooc["BM25 (title + content)"][i100] == "33.1"
    assert sum("**" in row[i100] for row in cooc.values()) == 1
    floor = cooc["*random within category (floor)*"]
    assert floor[i100] == "*26.0*" and not any(c.startswith("**") for c in floor)
    post = _table_rows(recall[recall.index("### human PostLinks"):])
    assert post["BM25 (title + content)"][i100] == "**62.0**"
    assert "(400 pairs)" in recall and "(60 pairs)" in recall
    assert "R@1000 is R@999" in recall          # K capped at the pool size
    assert "![Recall@K" in recall and "(plots/recall_at_k.png)" in recall


def test_other_tables(rendered):
    _, _, _, md = rendered
    expo = _table_rows(_section(md, "## Recall by exposure"))
    assert expo["System"] == ["System", "low R@10", "low R@100", "high R@10", "high R@100"]
    assert expo["NoteLLM"][2] == "**32.1**"            # 0.35649 * 0.9
    assert expo["*random within category (floor)*"][2] == "*24.0*"
    assert "threshold 7" in md
    new = _table_rows(_section(md, "## Notes new in the test period"))
    assert new["NoteLLM"][1] == "120" and new["*random within category (floor)*"][3] == "*20.0*"
    gen = _table_rows(_section(md, "## Category and hashtag generation"))
    assert list(gen) == ["System", "NoteLLM"]          # only systems with generation
    assert gen["NoteLLM"][1:6] == ["50.0", "25.0", "75.0", "0.0", "3.1"]
    cost = _table_rows(_section(md, "## Cost"))
    assert cost["NoteLLM"][1:] == ["1 h 02 min", "4.4", "1 min 36 s", "10.5"]
    assert cost["BM25 (title + content)"][1] == "—"
    paper = _section(md, "## Orientation")
    assert "84.02" in paper and "70.72" in paper and "LLaMA-2 7B" in paper and "SmolLM2-135M" in paper
    assert _table_rows(paper)["NoteLLM"][2:] == ["NoteLLM", "35.6"]
    data = _section(md, "## Data and configuration")
    assert "| `train_pairs` | 5,000 |" in data and "<summary>stages</summary>" in data
    assert md.rstrip().split("\n## Discussion\n")[1].strip().startswith(
        "Hand-written discussion: **NoteLLM** wins on mined pairs.")


def test_cases_escape_user_text_and_mark_hits(rendered):
    _, _, _, md = rendered
    cases = _section(md, "## Cases")
    assert "Pipes \\| in titles and newlines" in cases
    assert PIPE_TITLE not in md
    assert "x\\*y\\_z" in cases
    assert LONG_TITLE.strip() not in md and "A very long question title A very long question title A ver…" in cases
    for line in cases.splitlines():
        if line.startswith("| "):   # every row has as many cells as the header (pipes escaped)
            assert line.replace("\\|", "").count("|") == 5
    q1 = _table_rows(cases[cases.index("### Query 1"):])
    assert q1["#"] == ["#", "BM25 (title + content)", "all-MiniLM-L6-v2 zero-shot", "NoteLLM"]
    assert q1["2"][3].startswith("✓ Truth note [beer] #ipa")
    assert not q1["1"][1].startswith("✓")
    assert "#hops #a #b …" in q1["1"][3]             # at most 4 hashtags per cell
    assert "Truth found in the top 3 over these 2 queries: BM25 (title + content) 1, " \
           "all-MiniLM-L6-v2 zero-shot 0, NoteLLM 2." in cases
    gen = _table_rows(cases[cases.index("#### How hoppy"):])
    assert gen["NoteLLM"][1:] == ["✓ Beer", "✓ beer", "**#ipa** #lager"]


def test_files_are_real(rendered):
    results, out, path, _ = rendered
    assert path == out / "report.md"
    assert json.loads((out / "metrics.json").read_text(encoding="utf-8")) == results
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert pngs == ["loss_curves.png", "recall_at_k.png", "recall_by_exposure.png"]
    for name in pngs:
        data = (out / "plots" / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 5000
        assert f"(plots/{name})" in path.read_text(encoding="utf-8")


def test_rendering_is_deterministic(rendered, tmp_path):
    results, out, _, md = rendered
    render_report(copy.deepcopy(results), tmp_path)
    assert (tmp_path / "report.md").read_text(encoding="utf-8") == md
    for name in ("recall_at_k.png", "loss_curves.png", "recall_by_exposure.png"):
        assert (tmp_path / "plots" / name).read_bytes() == (out / "plots" / name).read_bytes()


def test_missing_optional_parts_still_render(tmp_path):
    results = make_results()
    for s in results["systems"]:
        s["recall"].pop("postlinks")
        s["recall_curve"].pop("postlinks")
        s["pairs"].pop("postlinks")
        s["generation"] = None
        s["loss_curve"] = None
        s.pop("by_exposure")
        s["new_notes"] = None
        s.pop("cost")
    results["systems"][1].pop("recall_curve")     # falls back to the recall points
    for key in ("random_within_category", "cases", "discussion_md", "config", "machine"):
        results.pop(key)
    results["signals"].pop("postlinks")
    path = render_report(results, tmp_path)
    md = path.read_text(encoding="utf-8")
    assert "**NoteLLM** wins with Recall@100 = 35.6%" in md
    assert "PostLinks" not in md
    for absent in ("## Category and hashtag generation", "## Recall by exposure", "## Notes new", "## Cases",
                   "## Discussion", "floor"):
        assert absent not in md
    assert sorted(p.name for p in (tmp_path / "plots").glob("*.png")) == ["recall_at_k.png"]
    assert (tmp_path / "plots" / "recall_at_k.png").read_bytes().startswith(PNG_SIGNATURE)
    # a system without postlinks next to one with them: only the one that has them is listed there
    results = make_results()
    results["systems"][0]["recall"].pop("postlinks")
    md = report_markdown(results)
    post = _table_rows(md[md.index("### human PostLinks"):])
    assert "BM25 (title + content)" not in post and post["all-MiniLM-L6-v2 zero-shot"][4] == "**58.0**"


def test_undefined_values_show_as_na(tmp_path):
    results = make_results()
    results["systems"][2]["recall"]["postlinks"]["100"] = None           # e.g. no pairs for this signal
    results["systems"][1]["recall"]["postlinks"]["50"] = float("nan")
    results["systems"][1]["recall_curve"]["postlinks"]["recall"][3] = None
    md = render_report(results, tmp_path).read_text(encoding="utf-8")
    post = _table_rows(md[md.index("### human PostLinks"):])
    assert post["NoteLLM"][4] == "n/a" and post["all-MiniLM-L6-v2 zero-shot"][3] == "n/a"
    assert post["BM25 (title + content)"][3] == "**49.6**"
    assert "BM25 (title + content) 62.0 > all-MiniLM-L6-v2 zero-shot 58.0." in md   # NoteLLM left out of the ranking
    assert (tmp_path / "plots" / "recall_at_k.png").read_bytes().startswith(PNG_SIGNATURE)


def test_bad_input_is_named():
    results = make_results()
    results["schema"] = "notellm-quality-report/0"
    with pytest.raises(ValueError, match="schema"):
        report_markdown(results)
    with pytest.raises(ValueError, match="systems"):
        report_markdown({"schema": SCHEMA, "systems": []})
    with pytest.raises(ValueError, match=r"systems\[0\] has no 'name'"):
        report_markdown({"systems": [{"label": "x"}]})


def test_escape_cell():
    assert escape_cell("a|b\nc") == "a\\|b c"
    assert escape_cell("<b>x</b>") == "&lt;b&gt;x&lt;/b&gt;"
    assert escape_cell("x" * 100, 10) == "x" * 9 + "…"
    assert escape_cell(None) == ""


def test_intervals_and_paired_tests_are_shown_and_oriented(tmp_path):
    results = make_results()
    results["systems"][2]["recall_ci"] = {"cooccurrence": {"100": [0.31, 0.40]}}
    results["paired"] = {
        "cooccurrence": [{"a": "notellm", "b": "bm25", "k": 100, "diff": 0.026, "ci": [-0.031, 0.084],
                          "a_only": 21, "b_only": 11, "p_mcnemar": 0.11, "pairs": 400},
                         {"a": "notellm", "b": "minilm", "k": 100, "diff": 0.054, "ci": [-0.02, 0.13],
                          "a_only": 30, "b_only": 8, "p_mcnemar": 0.00042, "pairs": 400}],
        # stored the other way round: the report must flip it to NoteLLM - MiniLM
        "postlinks": [{"a": "minilm", "b": "notellm", "k": 100, "diff": 0.03, "ci": [0.01, 0.05],
                       "a_only": 5, "b_only": 2, "p_mcnemar": 0.45, "pairs": 80}],
    }
    md = render_report(results, tmp_path).read_text(encoding="utf-8")
    glance = _section(md, "## At a glance")
    assert "+2.5 points (95% CI -3.1 to +8.4; McNemar p = 0.11, 21 vs 11 discordant pairs)" in glance
    rec = _table_rows(_section(md, "### mined co-click pairs"))
    assert rec["NoteLLM"][-1] == "31.0-40.0" and rec["BM25 (title + content)"][-1] == ""
    sig = _section(md, "## Are the differences real?")
    post = sig[sig.index("### human PostLinks"):]
    row = _table_rows(post)["NoteLLM"]
    assert row[3:] == ["-3.0", "-5.0 to -1.0", "2 / 5", "0.45"]
    assert _table_rows(sig)["NoteLLM"][3:] == ["+5.4", "-2.0 to +13.0", "30 / 8", "0.00042"]


def test_significance_section_only_with_a_contrast_to_show(rendered, tmp_path):
    assert "## Are the differences real?" not in rendered[3]
    results = make_results()
    # only a contrast the section does not list (BM25 vs MiniLM): no empty heading
    results["paired"] = {"cooccurrence": [{"a": "minilm", "b": "bm25", "k": 100, "diff": -0.03, "ci": [-0.1, 0.04],
                                           "a_only": 3, "b_only": 5, "p_mcnemar": 0.73, "pairs": 400}]}
    assert "## Are the differences real?" not in render_report(results, tmp_path).read_text(encoding="utf-8")
