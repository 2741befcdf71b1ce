"""The quality-report harness (evaluation/): ranking, the random floor, the test-set protocol and one
end-to-end run of ``python -m evaluation.compare`` on a tiny prepared dataset (tiny random Llama,
real BM25, real MiniLM, real DeepSpeed training subprocess)."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import numpy as np
import pytest

from evaluation import protocol, scoring, systems
from evaluation.gpu_dry import TOPICS, write_fixture


# ------------------------------------------------------------------ ranking
def brute_rank(scores, q, t):
    """Sort candidates (pool minus the query) by (-score, row); 1-based position of t."""
    cands = sorted((c for c in range(scores.shape[1]) if c != q), key=lambda c: (-scores[q, c], c))
    return cands.index(t) + 1


def test_ranks_match_brute_force_with_ties():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 4, size=(30, 30)).astype(np.float32)     # many ties
    qs = rng.integers(0, 30, 200)
    ts = [(q + 1 + int(rng.integers(0, 29))) % 30 for q in qs]
    got = scoring.ranks_from_scores(scores, qs, ts)
    assert got.tolist() == [brute_rank(scores, q, t) for q, t in zip(qs, ts)]


def test_hand_computed_ranks_and_recall_at_pool_edges():
    # pool of 4; query row 0 scores [9, 5, 5, 7]: candidates by (-score, row) = 3, 1, 2
    scores = np.array([[9, 5, 5, 7], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=np.float32)
    ranks = scoring.ranks_from_scores(scores, [0, 0, 0], [3, 1, 2])
    assert ranks.tolist() == [1, 2, 3]
    ev = scoring.evaluate_signal(ranks, pool_size=4, ks=(1, 2, 10))
    # K=10 is capped at 3 candidates: every target is found
    assert ev["recall"] == {"1": pytest.approx(1 / 3), "2": pytest.approx(2 / 3), "10": 1.0}
    assert ev["k_capped"] == {"1": 1, "2": 2, "10": 3}


def test_top_neighbours_excludes_query_and_breaks_ties_by_row():
    scores = np.array([[5, 1, 3, 3], [0] * 4, [0] * 4, [0] * 4], dtype=np.float32)
    assert scoring.top_neighbours(scores, 0, 3) == [2, 3, 1]


def test_random_within_category_floor_is_exact():
    cats = ["a", "a", "a", "b", "b", "c"]
    # query 0 (category a): s = 2 same-category candidates, o = 3 others
    # target 1 (same): P(top1) = 1/2, P(top3) = 1; target 3 (other): P(top3) = (3-2)/3 = 1/3
    got = systems.random_within_category_recall(cats, [0, 0], [1, 3], ks=(1, 3, 10))
    assert got[1] == pytest.approx((1 / 2 + 0) / 2)
    assert got[3] == pytest.approx((1 + 1 / 3) / 2)
    assert got[10] == pytest.approx(1.0)                      # K capped at 5 candidates
    # and it is the expectation of the randomised ranking it describes (Monte Carlo)
    rng = random.Random(0)
    trials, hits = 20000, 0
    for _ in range(trials):
        same = [1, 2]
        other = [3, 4, 5]
        rng.shuffle(same)
        rng.shuffle(other)
        hits += 3 in (same + other)[:3]
    assert hits / trials == pytest.approx(1 / 3, abs=0.01)


def test_minilm_batches_never_repeat_a_note():
    # the fine-tuned MiniLM trains on notellm.batching's plan (the NoteLLM trainer's)
    from notellm.batching import first_batches
    pairs = [(f"n{i}", f"n{(i * 7 + 1) % 40}") for i in range(40)] + [("n0", "n1"), ("n0", "n2")]
    batches = first_batches(pairs, batch_pairs=4, steps=8, seed=1)
    assert len(batches) == 8
    for b in batches:
        ids = [n for p in b for n in p]
        assert len(ids) == len(set(ids)) == 8
    with pytest.raises(ValueError, match="full batches"):
        first_batches(pairs[:5], batch_pairs=4, steps=3, seed=1)


# ------------------------------------------------------------------ a tiny prepared dataset
# evaluation.gpu_dry.write_fixture: the data-stage outputs the harness consumes, written through the
# contracts (3 sites x 20 questions, events in both windows, PostLinks, mined pairs, and a split whose
# test notes are disjoint from train notes); the GPU run's dry mode uses the same fixture.


@pytest.fixture(scope="module")
def prepared_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("quality")
    return write_fixture(root)


def test_eval_set_protocol(prepared_root, tmp_path):
    stages = {}
    # every stage is reused from its _SUCCESS marker (the dumps folder is then not needed)
    prepared = protocol.prepare_data(prepared_root, data=tmp_path / "absent", stages=stages)
    assert all(entry.get("reused") for entry in stages.values()) and len(stages) == 4
    es = protocol.build_eval_set(prepared, n_pairs=12, pool_size=28, seed=0)
    assert len(es.cooccurrence) == 12 and len(es.pool) == 28
    assert es.postlinks == sorted((f"{c}:{i}", f"{c}:{i + 4}") for c in TOPICS for i in (10, 11, 12))
    endpoints = {n for p in es.cooccurrence + es.postlinks for n in p}
    assert endpoints <= set(es.pool)
    assert all(not n.split(":")[1].isdigit() or int(n.split(":")[1]) >= 10 for n in es.pool)  # test period only
    assert es.new_queries == {q for q, _ in es.cooccurrence + es.postlinks}                   # all created 2017
    assert set(es.exposure) == {q for q, _ in es.cooccurrence + es.postlinks}
    assert es.exposure_threshold == max(1, int(np.median([es.exposure[q] for q, _ in es.cooccurrence])))
    with pytest.raises(ValueError, match="pool_size"):
        protocol.build_eval_set(prepared, n_pairs=12, pool_size=5, seed=0)
    again = protocol.build_eval_set(prepared, n_pairs=12, pool_size=28, seed=0)
    assert again.to_json() == es.to_json()


@pytest.mark.slow
def test_compare_end_to_end_tiny(prepared_root, tiny_llama_dir, tmp_path):
    from evaluation import compare
    out = tmp_path / "reports"
    argv = ["--work", str(prepared_root), "--out", str(out), "--date", "test",
            "--systems", "bm25,minilm,minilm_ft,smollm_prompteol,notellm",
            "--steps", "2", "--batch-pairs", "4", "--eval-pairs", "12", "--pool-size", "28", "--gen-notes", "2",
            "--cases", "2", "--backbone", str(tiny_llama_dir)]
    assert compare.main(argv) == 0
    metrics = json.loads((out / "test" / "metrics.json").read_text())
    names = [s["name"] for s in metrics["systems"]]
    assert names == ["bm25", "minilm", "minilm_ft", "smollm_prompteol", "notellm"]
    for s in metrics["systems"]:
        assert s["pairs"] == {"cooccurrence": 12, "postlinks": 9}
        r = s["recall"]["cooccurrence"]
        assert 0 <= r["10"] <= r["50"] <= r["100"] <= r["1000"] == 1.0   # K capped at 27 candidates
    nl = metrics["systems"][-1]
    assert nl["loss_curve"]["step"] == [1, 2] and nl["cost"]["train_wall_s"] > 0
    assert nl["generation"]["category_constrained"]["outside_known"] == 0.0      # constrained: known only
    assert len(metrics["cases"]["queries"]) == 2
    lo, hi = nl["recall_ci"]["cooccurrence"]["100"]
    assert lo <= nl["recall"]["cooccurrence"]["100"] <= hi
    assert len(metrics["paired"]["postlinks"]) == 10          # every pair of the 5 systems once
    assert {(c["a"], c["b"]) for c in metrics["paired"]["cooccurrence"]} >= {("notellm", "minilm_ft")}
    assert "## Are the differences real?" in (out / "test" / "report.md").read_text()
    assert (out / "test" / "report.md").read_text().count("BM25") >= 1
    # a rerun reuses every system (nothing retrained)
    before = {p: p.stat().st_mtime_ns for p in (prepared_root / "systems").glob("*/scores.npy")}
    assert compare.main(argv) == 0
    assert before == {p: p.stat().st_mtime_ns for p in (prepared_root / "systems").glob("*/scores.npy")}


def test_mcnemar_exact_p_hand_computed():
    # n = 6 discordant, m = 1: 2 * (C(6,0) + C(6,1)) / 2^6 = 2 * 7 / 64
    assert scoring.mcnemar_exact_p(1, 5) == pytest.approx(14 / 64)
    assert scoring.mcnemar_exact_p(5, 1) == pytest.approx(14 / 64)
    # n = 10, m = 0: 2 / 1024
    assert scoring.mcnemar_exact_p(0, 10) == pytest.approx(2 / 1024)
    assert scoring.mcnemar_exact_p(3, 3) == 1.0 and scoring.mcnemar_exact_p(0, 0) == 1.0
    assert scoring.mcnemar_exact_p(4000, 4050) == pytest.approx(binomtest_p(4000, 8050), rel=1e-9)
    with pytest.raises(ValueError):
        scoring.mcnemar_exact_p(-1, 2)
    for a, b in [(2, 9), (7, 4), (13, 30)]:
        assert scoring.mcnemar_exact_p(a, b) == pytest.approx(binomtest_p(a, a + b))


def binomtest_p(k: int, n: int) -> float:
    """Reference: two-sided exact binomial test at 1/2 with exact integers."""
    from math import comb
    m = min(k, n - k)
    return min(1.0, 2 * sum(comb(n, i) for i in range(m + 1)) / 2 ** n)


def test_bootstrap_interval_agrees_with_the_normal_approximation():
    # n = 2000 pairs, recall 0.3: the 95% interval is p +- 1.96 sqrt(p (1 - p) / n) = 0.3 +- 0.0201
    hits = np.zeros(2000, bool)
    hits[:600] = True
    lo, hi = scoring.bootstrap_interval(hits, n_resamples=2000, seed=1)
    half = 1.96 * np.sqrt(0.3 * 0.7 / 2000)
    assert lo == pytest.approx(0.3 - half, abs=0.004) and hi == pytest.approx(0.3 + half, abs=0.004)
    assert scoring.bootstrap_interval(np.ones(20, bool)) == (1.0, 1.0)     # the percentile bootstrap's limit
    with pytest.raises(ValueError):
        scoring.bootstrap_interval([])


def test_cluster_bootstrap_counts_a_duplicated_pair_once():
    rng = np.random.default_rng(5)
    hits = rng.random(300) < 0.4
    single = scoring.bootstrap_interval(hits, n_resamples=800, seed=2)
    # every pair stored twice (a link in both directions): as clusters, the same draws over the same 300 clusters
    doubled = np.repeat(hits, 2)
    labels = np.repeat(np.arange(300), 2)
    assert scoring.bootstrap_interval(doubled, n_resamples=800, seed=2, clusters=labels) == pytest.approx(single)
    assert scoring.bootstrap_interval(hits, n_resamples=800, seed=2, clusters=list(range(300))) == single
    naive = scoring.bootstrap_interval(doubled, n_resamples=800, seed=2)   # pretends to have 600 independent pairs
    assert naive[1] - naive[0] < 0.8 * (single[1] - single[0])
    d = scoring.paired_comparison(doubled, np.repeat(~hits, 2), n_resamples=800, clusters=labels)
    assert d["pairs"] == 600 and d["a_only"] + d["b_only"] == 600
    with pytest.raises(ValueError, match="cluster labels"):
        scoring.bootstrap_interval(hits, clusters=labels)


def test_paired_comparison_counts_discordant_pairs():
    a = np.array([1, 1, 1, 0, 0, 1, 0, 1], bool)
    b = np.array([1, 0, 0, 0, 1, 1, 0, 0], bool)
    c = scoring.paired_comparison(a, b, n_resamples=300)
    assert c["diff"] == pytest.approx((5 - 3) / 8)
    assert (c["a_only"], c["b_only"], c["pairs"]) == (3, 1, 8)
    assert c["p_mcnemar"] == pytest.approx(scoring.mcnemar_exact_p(3, 1))
    assert c["ci"][0] <= c["diff"] <= c["ci"][1]
    same = scoring.paired_comparison(a, a)
    assert same["diff"] == 0 and same["ci"] == [0.0, 0.0] and same["p_mcnemar"] == 1.0
    with pytest.raises(ValueError, match="same non-zero length"):
        scoring.paired_comparison(a, b[:5])


def test_hits_at_k_caps_k_at_the_pool():
    ranks = np.array([1, 5, 9, 10])
    assert scoring.hits_at_k(ranks, pool_size=100, k=5).tolist() == [True, True, False, False]
    assert scoring.hits_at_k(ranks, pool_size=10, k=100).tolist() == [True, True, True, False]  # K -> 9


def test_run_stage_keeps_the_wall_time_of_the_computing_run(tmp_path):
    import sys as _sys
    done = tmp_path / "_SUCCESS"
    cmd = [_sys.executable, "-c", f"import time; time.sleep(0.2); open({str(done)!r}, 'w').close()"]
    times, first, second = {}, {}, {}
    protocol.run_stage("stage", cmd, done, first, times)
    assert first["stage"]["wall_s"] > 0 and times == {"stage": first["stage"]["wall_s"]}
    protocol.run_stage("stage", cmd, done, second, times)          # cached: not rerun, cost kept
    assert second["stage"] == {**first["stage"], "reused": True}
    third = {}
    protocol.run_stage("stage", cmd, done, third, None)
    assert "wall_s" not in third["stage"] and third["stage"]["reused"]



def test_stage_times_are_persisted_after_each_stage(tmp_path):
    import sys as _sys
    times_file = tmp_path / "stage_times.json"
    times, log = {}, {}
    ok = tmp_path / "a" / "_SUCCESS"
    ok.parent.mkdir()
    protocol.run_stage("a", [_sys.executable, "-c", f"import time; time.sleep(0.2); open({str(ok)!r}, 'w').close()"],
                       ok, log, times, times_file)
    with pytest.raises(subprocess.CalledProcessError):   # the next stage fails: the first one's time is kept
        protocol.run_stage("b", [_sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "b" / "_SUCCESS", log,
                           times, times_file)
    assert json.loads(times_file.read_text()) == {"a": log["a"]["wall_s"]}


def test_commands_are_recorded_without_machine_paths():
    import sys as _sys
    repo = protocol.REPO
    cmd = f"{_sys.executable} -m training.train --set pairs={repo}/var/quality/split/train_pairs --set lr=0.0001 " \
          f"--out {repo}/var/x --data {repo.parent}/shared/data/stackexchange"
    assert protocol.display_command(cmd) == ("python -m training.train --set pairs=var/quality/split/train_pairs "
                                             "--set lr=0.0001 --out var/x --data ../shared/data/stackexchange")


def test_generation_metrics_reparse_cached_rows_and_normalise_both_sides():
    from evaluation.generation import generation_metrics
    notes = [{"note_id": "a", "category": "coffee", "hashtags": ["espresso.", "Milk"]},
             {"note_id": "b", "category": "beer", "hashtags": ["ipa"]}]
    rows = [{"category_free": "Coffee.", "category_constrained": "coffee", "hashtags": ["1.", "espresso", "milk."]},
            {"category_free": "ale", "category_constrained": "beer", "hashtags_text": "1. ipa. 2. hops",
             "hashtags": ["stale parse"]}]
    m = generation_metrics(rows, notes, ["beer", "coffee"])
    assert m["category_free"] == {"accuracy": 0.5, "outside_known": 0.5, "n": 2}
    assert m["category_constrained"]["accuracy"] == 1.0
    # note a: [espresso, milk] vs [espresso, milk]; note b: [ipa, hops] vs [ipa] -> ROUGE-1 F1 = 1 and 2/3
    assert m["hashtags"]["rouge1"] == pytest.approx((1 + 2 / 3) / 2)
