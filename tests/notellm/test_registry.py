"""notellm.registry: compare-and-swap on APPROVED.json, the model digest re-verified,
SIGKILL at each registry step, a torn history line."""

from __future__ import annotations

import functools
import json

import pytest

from notellm.cli import Conflict
from notellm.integrity import IntegrityError, write_sums
from notellm.registry import APPROVED, HISTORY, current_approved, history, register
from tests.support.kill import kill_at_fault_point


def model_folder(root, name):
    d = root / name
    d.mkdir(parents=True)
    (d / "weights.safetensors").write_bytes(name.encode() * 10)
    write_sums(d)
    return d


def test_stale_registrar_fails_with_conflict_and_changes_nothing(tmp_path):
    a, b = model_folder(tmp_path, "a"), model_folder(tmp_path, "b")
    models = tmp_path / "models"
    register(models, a, "aaaaaaaaaaaa", {}, approved=True, expected=None)
    seen = current_approved(models)
    register(models, b, "bbbbbbbbbbbb", {}, approved=True, expected=seen)
    with pytest.raises(Conflict, match="names bbbbbbbbbbbb but this gate compared against aaaaaaaaaaaa"):
        register(models, a, "aaaaaaaaaaaa", {}, approved=True, expected=seen)   # gated against a stale one
    assert current_approved(models)["model_id"] == "bbbbbbbbbbbb" and len(history(models)) == 2


def test_approved_model_is_pinned_by_its_manifest_digest(tmp_path):
    a = model_folder(tmp_path, "a")
    models = tmp_path / "models"
    rec = register(models, a, "aaaaaaaaaaaa", {}, approved=True)
    assert current_approved(models)["model_sha256sums"] == rec["model_sha256sums"]
    (a / "weights.safetensors").write_bytes(b"tampered")
    write_sums(a)      # even a consistent rewrite of the folder is noticed
    with pytest.raises(IntegrityError, match="changed since it was approved"):
        current_approved(models)
    c = tmp_path / "c"
    c.mkdir()
    (c / "w").write_text("no manifest")
    with pytest.raises(IntegrityError, match="SHA256SUMS.json: missing"):
        register(models, c, "cccccccccccc", {}, approved=True)
    with pytest.raises(IntegrityError, match="is not a model id"):
        register(models, a, "../../x", {}, approved=False)


def test_torn_last_history_line_is_skipped_and_cut_by_the_next_append(tmp_path):
    a = model_folder(tmp_path, "a")
    models = tmp_path / "models"
    register(models, a, "aaaaaaaaaaaa", {}, approved=False, reason="first")
    with open(models / HISTORY, "ab") as fh:
        fh.write(b'{"model_id": "torn", "appro')          # a registrar killed mid-append
    assert [r["reason"] for r in history(models)] == ["first"]
    register(models, a, "aaaaaaaaaaaa", {}, approved=False, reason="second")
    assert [r["reason"] for r in history(models)] == ["first", "second"]
    (models / HISTORY).write_text('{"a": 1}\nnot json\n{"b": 2}\n')
    with pytest.raises(IntegrityError, match=r"registry\.jsonl: line 2 is not JSON"):
        history(models)


@pytest.mark.parametrize("step", ["locked", "history_appended", "approved_swapped"])
def test_sigkill_at_each_registry_step_leaves_old_or_new_approved(tmp_path, step):
    a, b = model_folder(tmp_path, "a"), model_folder(tmp_path, "b")
    models = tmp_path / "models"
    register(models, a, "aaaaaaaaaaaa", {}, approved=True)
    for trial in range(5):
        before = (models / APPROVED).read_bytes()
        target = functools.partial(register, models, b if trial % 2 == 0 else a,
                                   "bbbbbbbbbbbb" if trial % 2 == 0 else "aaaaaaaaaaaa", {"trial": trial},
                                   approved=True)
        kill_at_fault_point(target, f"registry:{step}", tmp_path / "ready")
        now = (models / APPROVED).read_bytes()
        assert now == before if step != "approved_swapped" else json.loads(now)["metrics"] == {"trial": trial}
        assert current_approved(models) is not None
        rows = history(models)
        assert all("model_id" in r for r in rows)
        target()     # the rerun completes
        assert current_approved(models)["metrics"] == {"trial": trial}
