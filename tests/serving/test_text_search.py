"""``POST /search/text`` with a real (tiny) NoteLLM encoder: the snapshot's own model
embeds the query, is loaded once, and is replaced when a swap brings another model."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from notellm.encoder import NoteEncoder
from serving.app import create_app
from serving.config import ServeConfig
from tests.serving.snapshots import publish_snapshot
from tests.support.models import tiny_model
from tests.support.notes import make_notes


def publish_with_model(root, model_dir, notes, date):
    """Embed ``notes`` with the model and publish them, the manifest naming that model (as the nightly job does)."""
    enc = NoteEncoder.load(model_dir)
    x = enc.embed_notes(notes)
    model = {"model_id": enc.config.model_id, "path": str(model_dir), "template_version": enc.config.template_version}
    return publish_snapshot(root, seed=0, date=date, model=model, ids=[n["note_id"] for n in notes], x=x), model


@pytest.fixture(scope="module")
def notes():
    return make_notes(24, seed=4)


def test_text_search_uses_the_snapshots_model_and_follows_model_swaps(tmp_path, tiny_encoder_dir, notes):
    root = tmp_path / "index"
    first, model_a = publish_with_model(root, tiny_encoder_dir, notes, "2026-11-24")
    cfg = ServeConfig(snapshot_root=root, poll_s=3600.0, text_device="cpu", text_precision="fp32")
    with TestClient(create_app(cfg), raise_server_exceptions=False) as c:
        svc = c.app.state.service
        n = notes[9]
        r = c.post("/search/text", json={"notes": [{"title": n["title"], "content": n["content"],
                                                    "hashtags": n["hashtags"]}], "k": 3})
        body = r.json()
        assert r.status_code == 200, r.text
        assert body["snapshot"] == first and body["model_id"] == model_a["model_id"]
        assert len(body["results"][0]) == 3
        assert body["results"][0][0]["note_id"] == n["note_id"]
        assert body["results"][0][0]["score"] == pytest.approx(1.0, abs=1e-4)

        encoder = svc.text._encoder
        texts = c.post("/search/text", json={"texts": [notes[1]["title"], notes[2]["title"]], "k": 2}).json()
        assert len(texts["results"]) == 2 and svc.text._encoder is encoder   # loaded once, reused
        assert c.get("/info").json()["text_model"] == model_a["model_id"]

        other = tiny_model(tmp_path / "other", seed=1)
        second, model_b = publish_with_model(root, other, notes, "2026-11-25")
        assert model_b["model_id"] != model_a["model_id"]
        svc.watcher.check_now()
        again = c.post("/search/text", json={"notes": [{"title": n["title"], "content": n["content"],
                                                        "hashtags": n["hashtags"]}], "k": 1}).json()
        assert again["snapshot"] == second and again["model_id"] == model_b["model_id"]
        assert again["results"][0][0]["note_id"] == n["note_id"]
