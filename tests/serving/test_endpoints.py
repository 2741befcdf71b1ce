"""The service's endpoints and error matrix through FastAPI's TestClient, on real
published FAISS snapshots and the real SnapshotWatcher (polling is left slow and
``check_now`` is called instead, so every swap here happens at a known moment)."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.config import ServeConfig
from tests.serving.snapshots import DIM, note_ids, publish_corrupted, publish_snapshot, vectors

MAX_BATCH, MAX_K = 8, 50


def make_client(root, **overrides) -> TestClient:
    cfg = ServeConfig(snapshot_root=root, poll_s=3600.0, max_batch=MAX_BATCH, max_k=MAX_K, **overrides)
    return TestClient(create_app(cfg), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("index")
    publish_snapshot(root, seed=1, date="2026-11-24")
    return root


@pytest.fixture(scope="module")
def client(root):
    with make_client(root) as c:
        yield c


@pytest.fixture(scope="module")
def served(client):
    return client.get("/healthz").json()["snapshot"]


def test_healthz_and_info(client, served):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok", "snapshot": served}
    info = client.get("/info").json()
    assert info["snapshot"] == served == info["manifest"]["snapshot_id"] == info["watcher"]["serving"]
    assert info["manifest"]["num_vectors"] == 200 and info["limits"]["max_k"] == MAX_K


def test_neighbors_of_one_note(client, served):
    r = client.get("/neighbors/note-0003", params={"k": 5})
    body = r.json()
    assert r.status_code == 200 and body["snapshot"] == served and body["k"] == 5
    hits = body["results"]
    assert len(hits) == 5 and "note-0003" not in [h["note_id"] for h in hits]
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    # Same answer as brute force over the stored vectors.
    x = vectors(1)
    sims = x @ x[3]
    sims[3] = -np.inf
    assert [h["note_id"] for h in hits] == [note_ids()[i] for i in np.argsort(-sims)[:5]]
    assert len(client.get("/neighbors/note-0003").json()["results"]) == 10   # default_k


def test_neighbors_batch(client, served):
    r = client.post("/neighbors", json={"note_ids": ["note-0001", "note-0002", "note-0001"], "k": 3})
    body = r.json()
    assert r.status_code == 200 and body["snapshot"] == served
    assert [row["note_id"] for row in body["results"]] == ["note-0001", "note-0002", "note-0001"]
    single = client.get("/neighbors/note-0002", params={"k": 3}).json()["results"]
    assert body["results"][1]["neighbors"] == single


def test_search_by_vector_finds_the_note_itself(client, served):
    x = vectors(1)
    r = client.post("/search", json={"vectors": [x[7].tolist(), (2.5 * x[9]).tolist()], "k": 4})
    body = r.json()
    assert r.status_code == 200 and body["snapshot"] == served
    assert [row[0]["note_id"] for row in body["results"]] == ["note-0007", "note-0009"]
    assert body["results"][1][0]["score"] == pytest.approx(1.0, abs=1e-5)   # queries are normalised
    # k beyond the corpus: every note once, no padding entries.
    assert len(client.post("/search", json={"vectors": [x[0].tolist()], "k": MAX_K}).json()["results"][0]) == MAX_K


BAD_REQUESTS = [
    # (method, path, kwargs, status, text expected in the answer)
    ("get", "/neighbors/nope", {}, 404, "nope"),
    ("get", "/neighbors/note-0001", {"params": {"k": 0}}, 422, "k=0"),
    ("get", "/neighbors/note-0001", {"params": {"k": MAX_K + 1}}, 422, f"1..{MAX_K}"),
    ("get", "/neighbors/note-0001", {"params": {"k": "ten"}}, 422, "integer"),
    ("post", "/neighbors", {"json": {"note_ids": ["note-0001", "ghost-1", "ghost-2"]}}, 404, "ghost-2"),
    ("post", "/neighbors", {"json": {"note_ids": [f"note-{i:04d}" for i in range(MAX_BATCH + 1)]}}, 413,
     "max_batch"),
    ("post", "/neighbors", {"json": {"note_ids": []}}, 422, "no note ids"),
    ("post", "/neighbors", {"json": {"note_ids": "note-0001"}}, 422, "list"),
    ("post", "/neighbors", {"json": {"note_ids": [1, 2]}}, 422, "string"),
    ("post", "/neighbors", {"json": {"note_ids": ["note-0001"], "kk": 3}}, 422, "kk"),
    ("post", "/neighbors", {"json": {"note_ids": ["note-0001"], "k": -1}}, 422, "k=-1"),
    ("post", "/neighbors", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 422,
     "json"),
    ("post", "/search", {"json": {"vectors": [[0.1] * (DIM - 1)]}}, 422, f"dimension {DIM}"),
    ("post", "/search", {"json": {"vectors": [[0.1] * DIM, [0.1] * (DIM + 3)]}}, 422, str(DIM + 3)),
    ("post", "/search", {"json": {"vectors": [[0.0] * DIM]}}, 422, "zero vector"),
    ("post", "/search", {"content": b'{"vectors": [[NaN' + b", 0.5" * (DIM - 1) + b"]]}",
                         "headers": {"content-type": "application/json"}}, 422, "NaN"),
    ("post", "/search", {"json": {"vectors": [[1e39] * DIM]}}, 422, "too large"),
    ("post", "/search", {"json": {"vectors": [[0.1] * DIM] * (MAX_BATCH + 1)}}, 413, "max_batch"),
    ("post", "/search", {"json": {"vectors": []}}, 422, "no vectors"),
    ("post", "/search", {"json": {"vectors": [["a"] * DIM]}}, 422, "number"),
    ("post", "/search", {"json": {"vectors": [[0.1] * DIM], "k": 10_000}}, 422, "k=10000"),
    ("post", "/search/text", {"json": {"texts": ["a"], "notes": [{"title": "b"}]}}, 422, "exactly one"),
    ("post", "/search/text", {"json": {"k": 3}}, 422, "exactly one"),
    ("post", "/search/text", {"json": {"texts": ["  "]}}, 422, "neither title nor content"),
    ("post", "/search/text", {"json": {"texts": ["x"] * (MAX_BATCH + 1)}}, 413, "max_batch"),
]


@pytest.mark.parametrize("method, path, kwargs, status, text", BAD_REQUESTS,
                         ids=[f"{m}-{p}-{s}-{t}" for m, p, _, s, t in BAD_REQUESTS])
def test_bad_input_is_a_4xx_naming_the_problem(client, served, method, path, kwargs, status, text):
    r = getattr(client, method)(path, **kwargs)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["snapshot"] == served
    assert text.lower() in r.text.lower()


def test_unknown_ids_are_listed(client):
    body = client.post("/neighbors", json={"note_ids": ["note-0001", "ghost-1", "ghost-2"]}).json()
    assert sorted(body["missing"]) == ["ghost-1", "ghost-2"]
    assert client.get("/neighbors/nope").json()["missing"] == ["nope"]


def test_text_search_reports_an_unloadable_model_as_503(client, served):
    """The synthetic snapshot's model path does not exist here: the service is unable, the input is fine."""
    r = client.post("/search/text", json={"texts": ["espresso grinder"], "k": 3})
    assert r.status_code == 503 and r.json()["snapshot"] == served and "/models/x" in r.json()["detail"]


def test_metrics_count_requests_by_route_and_status(client, served):
    client.get("/neighbors/nope")
    client.get("/neighbors/note-0001", params={"k": 2})
    text = client.get("/metrics").text
    assert 'notellm_serving_requests_total{endpoint="/neighbors/{note_id}",method="GET",status="404"}' in text
    assert 'notellm_serving_requests_total{endpoint="/neighbors/{note_id}",method="GET",status="200"}' in text
    assert 'notellm_serving_request_seconds_bucket{endpoint="/neighbors/{note_id}",le="+Inf"}' in text
    assert 'notellm_serving_request_seconds_count{endpoint="/search"}' in text
    assert f'notellm_serving_snapshot_info{{snapshot="{served}"}} 1' in text
    assert "notellm_serving_swaps_total" in text and "notellm_serving_refused_total 0" in text
    assert "/neighbors/nope" not in text   # raw paths never become label values


def test_empty_root_is_unhealthy_then_serves_the_first_publish(tmp_path):
    with make_client(tmp_path) as c:
        assert c.get("/healthz").status_code == 503
        info = c.get("/info")
        assert info.status_code == 503 and info.json()["snapshot"] is None and "watcher" in info.json()
        r = c.get("/neighbors/note-0001")
        assert r.status_code == 503 and r.json()["snapshot"] is None
        name = publish_snapshot(tmp_path, seed=5, date="2026-11-20")
        c.app.state.service.watcher.check_now()
        assert c.get("/healthz").json() == {"status": "ok", "snapshot": name}
        assert c.get("/neighbors/note-0001").json()["snapshot"] == name


def test_swap_and_refusal_through_the_api(tmp_path):
    first = publish_snapshot(tmp_path, seed=1, date="2026-11-24")
    with make_client(tmp_path) as c:
        watcher = c.app.state.service.watcher
        assert c.get("/neighbors/note-0001").json()["snapshot"] == first
        second = publish_snapshot(tmp_path, seed=2, date="2026-11-25")
        watcher.check_now()
        assert c.get("/neighbors/note-0001").json()["snapshot"] == second
        bad = publish_corrupted(tmp_path, second, "2026-11-26-abcdef01")
        watcher.check_now()
        assert c.get("/neighbors/note-0001").json()["snapshot"] == second
        info = c.get("/info").json()
        assert info["snapshot"] == second and bad in [r["name"] for r in info["watcher"]["refused"]]
        metrics = c.get("/metrics").text
        assert "notellm_serving_refused_total 1" in metrics and f'snapshot="{second}"' in metrics
