"""Quality gate + registration of a trained model (hand-off to indexing).

Usage::

    python -m training.register --model RUN/model --metrics eval.json --models-root MODELS \\
        [--k 100] [--min-recall 0.0] [--max-regression 0.01] [--no-baseline-required]

The gate (all must hold, on the evaluation JSON of ``training.evaluate``):

1. Recall@K(new) >= ``--min-recall`` (an absolute floor);
2. Recall@K(new) >= Recall@K(untrained backbone) (needs ``--backbone-baseline``
   in the evaluation unless ``--no-baseline-required``);
3. when a model is approved already: Recall@K(new) >= Recall@K(approved) -
   ``--max-regression``, both measured on the same test set (the evaluation's
   ``approved`` entry from ``--approved-root``, or the approved record's own
   metrics when its test fingerprint equals this one).

Every decision is recorded with notellm.registry.register (approved or not,
with the reason). Exit code 0 when approved, 2 when the gate fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from notellm.cli import EXIT_GATE_FAILED
from notellm.encoder import SIDECAR
from notellm.registry import current_approved, register

GATE_FAILED = EXIT_GATE_FAILED


def decide(metrics: dict, k: int, min_recall: float, max_regression: float, approved_record: dict | None,
           baseline_required: bool = True) -> tuple[bool, list[str]]:
    """Pure gate: (approved?, reasons). ``metrics`` is the evaluation JSON."""
    key = str(k)
    reasons, ok = [], True
    new = metrics.get("model", {}).get("recall", {}).get(key)
    if new is None:
        return False, [f"evaluation has no Recall@{k} for the model (evaluate with --ks including {k})"]
    if new < min_recall:
        ok = False
        reasons.append(f"Recall@{k}={new:.4f} below the floor {min_recall:.4f}")
    base = metrics.get("backbone", {}).get("recall", {}).get(key)
    if base is None:
        if baseline_required:
            ok = False
            reasons.append("no untrained-backbone baseline in the evaluation (run evaluate --backbone-baseline)")
    elif new < base:
        ok = False
        reasons.append(f"Recall@{k}={new:.4f} below the untrained backbone's {base:.4f}")
    if approved_record is not None:
        prev = None
        if metrics.get("approved", {}).get("model_dir") == approved_record["model_dir"]:
            prev = metrics["approved"]["recall"].get(key)
        elif approved_record.get("metrics", {}).get("test_fingerprint") == metrics.get("test_fingerprint"):
            prev = approved_record["metrics"].get("model", {}).get("recall", {}).get(key)
        if prev is None:
            ok = False
            reasons.append(f"approved model {approved_record['model_dir']} was not measured on this test set "
                           "(run evaluate --approved-root MODELS_ROOT)")
        elif new < prev - max_regression:
            ok = False
            reasons.append(f"Recall@{k}={new:.4f} worse than the approved model's {prev:.4f} by more than "
                           f"{max_regression:.4f}")
        else:
            reasons.append(f"approved model's Recall@{k}={prev:.4f}")
    if ok:
        reasons.insert(0, f"passed: Recall@{k}={new:.4f}" + (f", backbone {base:.4f}" if base is not None else ""))
    return ok, reasons


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.register", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--metrics", required=True, help="evaluation JSON written by training.evaluate --out")
    p.add_argument("--models-root", required=True)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--min-recall", "--min-recall-at", dest="min_recall", type=float, default=0.0)
    p.add_argument("--max-regression", type=float, default=0.01)
    p.add_argument("--no-baseline-required", action="store_true")
    args = p.parse_args(argv)
    model_dir = Path(args.model)
    sidecar = json.loads((model_dir / SIDECAR).read_text())
    metrics = json.loads(Path(args.metrics).read_text())
    if metrics.get("model", {}).get("model_id") not in (None, sidecar["model_id"]):
        print(f"error: {args.metrics} evaluates model {metrics['model']['model_id']}, "
              f"but {model_dir} is {sidecar['model_id']}", file=sys.stderr)
        return GATE_FAILED
    ok, reasons = decide(metrics, args.k, args.min_recall, args.max_regression, current_approved(args.models_root),
                         baseline_required=not args.no_baseline_required)
    reason = "; ".join(reasons)
    record = register(args.models_root, model_dir, sidecar["model_id"], metrics, approved=ok, reason=reason,
                      data_window=sidecar.get("data_window"))
    print(json.dumps({"approved": ok, "reason": reason, "model_id": record["model_id"],
                      "model_dir": record["model_dir"]}))
    if not ok:
        print(f"quality gate FAILED for {model_dir}: {reason}", file=sys.stderr)
        return GATE_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
