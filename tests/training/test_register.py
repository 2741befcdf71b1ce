"""training.register: the retraining gate cannot be fooled by a diverged model."""

from __future__ import annotations

import json

import pytest

from notellm.cli import EXIT_BAD_INPUT, EXIT_GATE_FAILED
from notellm.registry import current_approved, history
from tests.support.models import diverged_model
from training import register
from training.register import decide


def _eval(model_dir, recall, backbone=0.1):
    sidecar = json.loads((model_dir / "notellm.json").read_text())
    return {"model": {"model_id": sidecar["model_id"], "recall": {"10": recall}},
            "backbone": {"recall": {"10": backbone}}, "test_fingerprint": "t1"}


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), None, "0.9"])
def test_decide_refuses_a_metric_that_is_not_a_finite_number(bad):
    metrics = {"model": {"recall": {"10": bad}}, "backbone": {"recall": {"10": 0.1}}}
    ok, reasons = decide(metrics, 10, 0.0, 0.01, None)
    assert not ok, reasons


def test_decide_refuses_a_nan_baseline_or_approved_value():
    metrics = {"model": {"recall": {"10": 0.5}}, "backbone": {"recall": {"10": float("nan")}},
               "test_fingerprint": "t"}
    assert not decide(metrics, 10, 0.0, 0.01, None)[0]
    metrics["backbone"]["recall"]["10"] = 0.1
    assert decide(metrics, 10, 0.0, 0.01, None)[0]
    approved = {"model_dir": "/m", "metrics": {"test_fingerprint": "t", "model": {"recall": {"10": float("nan")}}}}
    ok, reasons = decide(metrics, 10, 0.0, 0.01, approved)
    assert not ok and "not a finite number" in reasons[-1]


def test_nan_model_is_refused_and_the_approved_model_stays(tmp_path, tiny_encoder_dir):
    models = tmp_path / "models"
    good = tiny_encoder_dir
    (tmp_path / "good.json").write_text(json.dumps(_eval(good, 0.4)))
    assert register.main(["--model", str(good), "--metrics", str(tmp_path / "good.json"),
                          "--models-root", str(models), "--k", "10"]) == 0
    approved = current_approved(models)
    # A diverged export, with the perfect Recall@K the old metrics gave NaN vectors.
    nan = diverged_model(good, tmp_path / "nan-model")
    (tmp_path / "nan.json").write_text(json.dumps(_eval(nan, 1.0)))
    assert register.main(["--model", str(nan), "--metrics", str(tmp_path / "nan.json"),
                          "--models-root", str(models), "--k", "10", "--max-regression", "0.5"]) == EXIT_GATE_FAILED
    assert current_approved(models) == approved
    last = history(models)[-1]
    assert last["approved"] is False and "non-finite values" in last["reason"] and "projection" in last["reason"]


@pytest.mark.parametrize("flag,value", [("--min-recall", "nan"), ("--max-regression", "inf"),
                                        ("--max-regression", "-0.1"), ("--min-recall", "-1")])
def test_thresholds_are_validated_when_read(tmp_path, flag, value, capsys):
    try:   # argparse refuses a flag of the wrong type itself (exit 2), validate() a wrong range
        code = register.main(["--model", str(tmp_path), "--metrics", str(tmp_path / "m.json"),
                              "--models-root", str(tmp_path / "models"), flag, value])
    except SystemExit as exc:
        code = exc.code
        assert "not a finite number" in capsys.readouterr().err
    assert code == EXIT_BAD_INPUT
    assert not (tmp_path / "models").exists()
