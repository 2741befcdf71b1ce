"""Last step of `make demo`: what a user should see after the pipeline ran.

Prints the published snapshot's manifest summary (through the consumer API,
checksums verified), Recall@K of the trained model versus the untrained
backbone on the sample's test pairs (from the retraining DAG's evaluation),
and a few notes with their nearest neighbours.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from indexing.snapshot import Snapshot
from notellm.contracts import NOTES, read_table
from notellm.registry import current_approved


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", required=True, type=Path, help="pipeline data root (NOTELLM_ROOT)")
    p.add_argument("--test-date", required=True)
    p.add_argument("--examples", type=int, default=4)
    args = p.parse_args(argv)

    snap = Snapshot.open(args.root / "index")
    info = snap.info()
    print("Published snapshot (indexing.cli info):")
    print(json.dumps({k: info[k] for k in ("snapshot_id", "created_at", "num_vectors", "dim", "index", "model")
                      if k in info}, indent=2, default=str))

    approved = current_approved(args.root / "models")
    eval_path = Path(approved["model_dir"]).parent / "eval.json"
    ev = json.loads(eval_path.read_text()) if eval_path.exists() else approved.get("metrics", {})
    print(f"\nRecall@K on the test pairs of {args.test_date}: {ev.get('test_pairs', '?')} pairs between notes "
          f"unseen in training, pool of {ev.get('pool_size', '?')} notes (query excluded):")
    rows = [(name, ev[name]) for name in ("model", "backbone") if name in ev]
    # Only K with at least 3 candidates per slot: at K near the pool size every target is a hit.
    pool_size = int(ev.get("pool_size") or 0)
    all_ks = list(rows[0][1]["recall"]) if rows else []
    ks = [k for k in all_ks if 3 * int(k) <= pool_size] or all_ks[:1]
    print(f"  {'system':<28}" + "".join(f"R@{k:<7}" for k in ks) + "in-batch acc")
    for name, res in rows:
        label = "NoteLLM (trained)" if name == "model" else "untrained backbone"
        acc = res.get("in_batch_accuracy")
        # In-batch accuracy needs at least one full batch of held-out pairs with distinct notes.
        acc_text = "n/a (too few test pairs)" if acc is None or acc != acc else f"{acc:.3f}"
        print(f"  {label:<28}" + "".join(f"{res['recall'][k]:<9.3f}" for k in ks) + acc_text)
    gain = ev.get("gain_over_backbone")
    if gain:
        cells = "; ".join(f"R@{k} {100 * gain[k]['diff']:+.1f} ({100 * gain[k]['ci'][0]:+.1f} to "
                          f"{100 * gain[k]['ci'][1]:+.1f})" for k in ks if k in gain)
        print(f"  gain of the trained model, points (95% CI): {cells}")
        g10 = gain.get(ks[0]) if ks else None
        if g10:
            lo, hi = 100 * g10["ci"][0], 100 * g10["ci"][1]
            verdict = ("so training on co-clicked pairs taught the model which notes are read together, "
                       "beyond what their text similarity shows" if lo > 0 else
                       "an interval that includes 0: on this test set training did not measurably help")
            print(f"\nTraining moved the co-clicked note into the top {ks[0]} for {100 * g10['diff']:+.1f} points "
                  f"more of the test pairs than the untrained backbone (95% CI {lo:+.1f} to {hi:+.1f}, "
                  f"paired bootstrap over query notes), {verdict}.")

    notes = read_table(args.root / "notes" / "notes.parquet", NOTES,
                       columns=["note_id", "title", "category"]).to_pylist()
    by_id = {n["note_id"]: n for n in notes}
    rng = random.Random(0)
    print("\nA few notes and their neighbours in the snapshot:")
    for note in rng.sample(notes, min(args.examples, len(notes))):
        print(f"\n  [{note['category']}] {note['title']}")
        for nid, score in snap.neighbors(note["note_id"], 3):
            other = by_id.get(nid, {"title": "?", "category": "?"})
            print(f"      {score:6.3f}  [{other['category']}] {other['title']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
