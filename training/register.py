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
with the reason). A model whose weights hold NaN or Inf, or whose metrics are
not finite numbers, is refused. Exit code 0 when approved, 3 (notellm.cli.EXIT_GATE_FAILED)
when the gate refuses, 2 when the evaluation does not belong to the model.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from notellm import cli
from notellm.encoder import SIDECAR
from notellm.finite import NonFiniteError, at_least, is_number, require_finite
from notellm.integrity import verify_sums
from notellm.registry import current_approved, register
from training.config import RegisterConfig


def decide(metrics: dict, k: int, min_recall: float, max_regression: float, approved_record: dict | None,
           baseline_required: bool = True) -> tuple[bool, list[str]]:
    """Pure gate: (approved?, reasons). ``metrics`` is the evaluation JSON.

    Every comparison is written as ``at_least(new, floor)`` so that a missing,
    NaN or Inf value fails it (``new < floor`` is false for NaN and would pass).
    """
    key = str(k)
    reasons, ok = [], True
    new = metrics.get("model", {}).get("recall", {}).get(key)
    if new is None:
        return False, [f"evaluation has no Recall@{k} for the model (evaluate with --ks including {k})"]
    if not is_number(new):
        return False, [f"Recall@{k} of the model is {new!r}, not a finite number (a diverged model)"]
    if not at_least(new, min_recall):
        ok = False
        reasons.append(f"Recall@{k}={new:.4f} below the floor {min_recall:.4f}")
    base = metrics.get("backbone", {}).get("recall", {}).get(key)
    if base is None:
        if baseline_required:
            ok = False
            reasons.append("no untrained-backbone baseline in the evaluation (run evaluate --backbone-baseline)")
    elif not is_number(base):
        ok = False
        reasons.append(f"the untrained backbone's Recall@{k} is {base!r}, not a finite number")
    elif not at_least(new, base):
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
        elif not is_number(prev):
            ok = False
            reasons.append(f"the approved model's Recall@{k} is {prev!r}, not a finite number")
        elif not at_least(new, prev - max_regression):
            ok = False
            reasons.append(f"Recall@{k}={new:.4f} worse than the approved model's {prev:.4f} by more than "
                           f"{max_regression:.4f}")
        else:
            reasons.append(f"approved model's Recall@{k}={prev:.4f}")
    if ok:
        reasons.insert(0, f"passed: Recall@{k}={new:.4f}" + (f", backbone {base:.4f}" if base is not None else ""))
    return ok, reasons


def check_weights_finite(model_dir: Path) -> None:
    """Refuse a model whose saved weights hold NaN or Inf (a diverged run's export).

    Tensors are read one at a time (``safe_open``), so a 7B model needs one
    tensor's memory, not the model's."""
    import torch
    from safetensors import safe_open

    for path in sorted(Path(model_dir).rglob("*.safetensors")):
        with safe_open(str(path), framework="pt") as fh:
            for name in fh.keys():
                tensor = fh.get_tensor(name)
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                    require_finite(tensor.float().numpy(), f"{path} tensor {name}")


def _run(cfg: RegisterConfig, timer: cli.Timer) -> dict:
    model_dir = Path(cfg.model)
    sidecar = json.loads((model_dir / SIDECAR).read_text())
    metrics = json.loads(Path(cfg.metrics).read_text())
    if metrics.get("model", {}).get("model_id") not in (None, sidecar["model_id"]):
        raise cli.BadInput(f"{cfg.metrics}: evaluates model {metrics['model']['model_id']}, "
                           f"but {model_dir} is {sidecar['model_id']}")
    verify_sums(model_dir)   # the exported files, unchanged, before any of them is read
    previous = current_approved(cfg.models_root)   # what the gate compares against; register checks it
    try:
        check_weights_finite(model_dir)
    except NonFiniteError as exc:
        register(cfg.models_root, model_dir, sidecar["model_id"], metrics, approved=False, reason=str(exc),
                 data_window=sidecar.get("data_window"), expected=previous)
        raise cli.GateRefused(f"quality gate refused {model_dir}: {exc}",
                              {"approved": False, "reason": str(exc)}) from exc
    ok, reasons = decide(metrics, cfg.k, cfg.min_recall, cfg.max_regression, previous,
                         baseline_required=cfg.baseline_required)
    reason = "; ".join(reasons)
    record = register(cfg.models_root, model_dir, sidecar["model_id"], metrics, approved=ok, reason=reason,
                      data_window=sidecar.get("data_window"), expected=previous)
    result = {"approved": ok, "reason": reason, "model_id": record["model_id"], "model_dir": record["model_dir"]}
    if not ok:
        raise cli.GateRefused(f"quality gate refused {model_dir}: {reason}", result)
    return result


def main(argv=None) -> int:
    return cli.main(_run, RegisterConfig, argv, prog="python -m training.register")


if __name__ == "__main__":
    sys.exit(main())
