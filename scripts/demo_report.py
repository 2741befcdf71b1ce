"""Last step of `make demo`: what a user should see after the pipeline ran.

Prints the published snapshot's manifest summary (through the consumer API,
checksums verified), Recall@K of the trained model versus the untrained
backbone on the sample's test pairs (from the retraining DAG's evaluation),
and a few notes with their nearest neighbours.

The human report goes to stderr (scripts/demo.sh lets both streams through to
the terminal, so the demo reads as before); stdout carries the one JSON result
line of the notellm.cli contract, a summary of the same figures for scripts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))   # run as a file: the repository's packages are not installed

from notellm import cli  # noqa: E402
from notellm.config import option  # noqa: E402


def say(*parts: object) -> None:
    """One line of the human report (stderr: stdout is the result line's)."""
    print(*parts, file=sys.stderr, flush=True)


@dataclasses.dataclass
class DemoReportConfig:
    """The demo's closing report: published snapshot, Recall@K trained vs untrained, a few neighbours."""

    root: Path = option(help="pipeline data root (NOTELLM_ROOT)")
    test_date: str = option(help="date of the test pairs the retraining DAG evaluated on (YYYY-MM-DD)")
    examples: int = option(4, help="notes shown with their nearest neighbours")

    def validate(self) -> None:
        if self.examples < 0:
            raise ValueError("--examples must be >= 0")


def run(args: DemoReportConfig, timer: cli.Timer) -> dict:
    from indexing.snapshot import Snapshot
    from notellm.contracts import NOTES, read_table
    from notellm.registry import current_approved

    if not (args.root / "index").is_dir():
        raise cli.BadInput(f"{args.root / 'index'}: no published snapshot (run the pipeline first, make demo)")
    snap = Snapshot.open(args.root / "index")
    info = snap.info()
    summary = {k: info[k] for k in ("snapshot_id", "created_at", "num_vectors", "dim", "index", "model")
               if k in info}
    say("Published snapshot (indexing.cli info):")
    say(json.dumps(summary, indent=2, default=str))

    approved = current_approved(args.root / "models")
    eval_path = Path(approved["model_dir"]).parent / "eval.json"
    ev = json.loads(eval_path.read_text()) if eval_path.exists() else approved.get("metrics", {})
    say(f"\nRecall@K on the test pairs of {args.test_date}: {ev.get('test_pairs', '?')} pairs between notes "
        f"unseen in training, pool of {ev.get('pool_size', '?')} notes (query excluded):")
    rows = [(name, ev[name]) for name in ("model", "backbone") if name in ev]
    # Only K with at least 3 candidates per slot: at K near the pool size every target is a hit.
    pool_size = int(ev.get("pool_size") or 0)
    all_ks = list(rows[0][1]["recall"]) if rows else []
    ks = [k for k in all_ks if 3 * int(k) <= pool_size] or all_ks[:1]
    say(f"  {'system':<28}" + "".join(f"R@{k:<7}" for k in ks) + "in-batch acc")
    recall = {}
    for name, res in rows:
        label = "NoteLLM (trained)" if name == "model" else "untrained backbone"
        acc = res.get("in_batch_accuracy")
        # In-batch accuracy needs at least one full batch of held-out pairs with distinct notes.
        acc_text = "n/a (too few test pairs)" if acc is None or acc != acc else f"{acc:.3f}"
        say(f"  {label:<28}" + "".join(f"{res['recall'][k]:<9.3f}" for k in ks) + acc_text)
        recall[name] = {"recall": {k: res["recall"][k] for k in ks}}
    gain = ev.get("gain_over_backbone")
    if gain:
        cells = "; ".join(f"R@{k} {100 * gain[k]['diff']:+.1f} ({100 * gain[k]['ci'][0]:+.1f} to "
                          f"{100 * gain[k]['ci'][1]:+.1f})" for k in ks if k in gain)
        say(f"  gain of the trained model, points (95% CI): {cells}")
        g10 = gain.get(ks[0]) if ks else None
        if g10:
            lo, hi = 100 * g10["ci"][0], 100 * g10["ci"][1]
            verdict = ("so training on co-clicked pairs taught the model which notes are read together, "
                       "beyond what their text similarity shows" if lo > 0 else
                       "an interval that includes 0: on this test set training did not measurably help")
            say(f"\nTraining moved the co-clicked note into the top {ks[0]} for {100 * g10['diff']:+.1f} points "
                f"more of the test pairs than the untrained backbone (95% CI {lo:+.1f} to {hi:+.1f}, "
                f"paired bootstrap over query notes), {verdict}.")

    notes = read_table(args.root / "notes" / "notes.parquet", NOTES,
                       columns=["note_id", "title", "category"]).to_pylist()
    by_id = {n["note_id"]: n for n in notes}
    rng = random.Random(0)
    say("\nA few notes and their neighbours in the snapshot:")
    shown = rng.sample(notes, min(args.examples, len(notes)))
    for note in shown:
        say(f"\n  [{note['category']}] {note['title']}")
        for nid, score in snap.neighbors(note["note_id"], 3):
            other = by_id.get(nid, {"title": "?", "category": "?"})
            say(f"      {score:6.3f}  [{other['category']}] {other['title']}")
    say("")
    # A short line: it ends the demo's output on the terminal.
    return {"snapshot_id": info.get("snapshot_id"), "num_vectors": info.get("num_vectors"),
            "test_date": args.test_date, "test_pairs": ev.get("test_pairs"), "pool_size": ev.get("pool_size"),
            "recall": {name: {k: _r(v) for k, v in res["recall"].items()} for name, res in recall.items()},
            "gain_points": {k: {"diff": _r(100 * gain[k]["diff"], 1), "ci": [_r(100 * c, 1) for c in gain[k]["ci"]]}
                            for k in ks if k in gain} if gain else None}


def _r(x, digits: int = 3):
    return None if x is None else round(float(x), digits)


def main(argv=None) -> int:
    # The report is for people: library INFO chatter (faiss' loader) would open it; warnings still show.
    cli.configure_logging(os.environ.get("NOTELLM_LOG_LEVEL") or "WARNING")
    return cli.main(run, DemoReportConfig, argv=argv, prog="scripts/demo_report.py")


if __name__ == "__main__":
    sys.exit(main())
