"""The real server (``python -m serving --port 0``) under concurrent HTTP clients while a
new snapshot and then a corrupted one are published: no request fails, answers move
from the old snapshot to the new one and never back, and the corrupted one is never
served (``/info`` lists it as refused). Loopback only, a few seconds."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time

import httpx

from tests.serving.snapshots import publish_corrupted, publish_snapshot, vectors
from tests.support.paths import REPO

CLIENTS = 4


def start_server(root, log_path) -> tuple[subprocess.Popen, str]:
    """Start the service; stderr goes to a file (a full pipe would block the server). Returns (proc, base url)."""
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "serving", "--snapshot-root", str(root), "--port", "0",
                             "--poll-s", "0.1"], cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.search(r"listening on (http://\S+)", log_path.read_text())
        if found:
            url = found.group(1)
            while time.monotonic() < deadline:
                try:
                    if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                        return proc, url
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"server did not come up:\n{log_path.read_text()[-3000:]}")


class Client(threading.Thread):
    """Alternates GET /neighbors/{id} and POST /search; records (start time, status, snapshot) per request."""

    def __init__(self, url: str, seed: int, stop: threading.Event):
        super().__init__(daemon=True)
        self.url, self.seed, self.stop = url, seed, stop
        self.records: list[tuple[float, int | str, str | None]] = []

    def run(self):
        query = vectors(9)[self.seed].tolist()
        with httpx.Client(base_url=self.url, timeout=10) as http:
            i = 0
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    if i % 2:
                        r = http.post("/search", json={"vectors": [query], "k": 5})
                    else:
                        r = http.get(f"/neighbors/note-{(self.seed * 37 + i) % 200:04d}", params={"k": 5})
                    self.records.append((started, r.status_code, r.json().get("snapshot")))
                except Exception as exc:  # noqa: BLE001 - a transport error is a failed request too
                    self.records.append((started, type(exc).__name__, None))
                i += 1


def wait_for(url: str, name: str, timeout: float = 20.0) -> float:
    """Poll /healthz until ``name`` is served; returns the moment it was first seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(url + "/healthz", timeout=5).json().get("snapshot") == name:
            return time.monotonic()
        time.sleep(0.02)
    raise AssertionError(f"{name} was not served within {timeout} s")


def test_swap_under_concurrent_requests(tmp_path):
    root = tmp_path / "index"
    old = publish_snapshot(root, seed=1, date="2026-11-24")
    proc, url = start_server(root, tmp_path / "server.log")
    stop = threading.Event()
    clients = [Client(url, seed, stop) for seed in range(CLIENTS)]
    try:
        for c in clients:
            c.start()
        time.sleep(1.0)
        new = publish_snapshot(root, seed=2, date="2026-11-25")
        swapped_at = wait_for(url, new)
        time.sleep(1.0)
        bad = publish_corrupted(root, new, "2026-11-26-abcdef01")
        deadline = time.monotonic() + 20
        while bad not in [r["name"] for r in httpx.get(url + "/info").json()["watcher"]["refused"]]:
            assert time.monotonic() < deadline, "the corrupted snapshot was never refused"
            time.sleep(0.05)
        time.sleep(1.0)
        info = httpx.get(url + "/info").json()
    finally:
        stop.set()
        for c in clients:
            c.join(timeout=15)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    log = (tmp_path / "server.log").read_text()

    records = [r for c in clients for r in c.records]
    failed = [r for r in records if r[1] != 200]
    assert len(records) > 50 and not failed, (failed[:5], log[-3000:])
    assert {r[2] for r in records} == {old, new}                       # the corrupted one never answered
    assert not [r for r in records if r[0] > swapped_at and r[2] != new]
    for c in clients:                                                  # per client: old ... old new ... new
        seen = [r[2] for r in c.records]
        assert seen == sorted(seen, key=lambda s: s == new), f"client {c.seed} went back to the old snapshot"
    assert info["snapshot"] == new and info["watcher"]["serving"] == new
    assert bad in [r["name"] for r in info["watcher"]["refused"]]

    result = json.loads(out.strip().splitlines()[-1])
    assert proc.returncode == 0 and result["status"] == "ok", log[-3000:]
    assert result["snapshot"] == new and result["swaps"] >= 1 and bad in result["refused"]
    assert result["requests"] >= len(records) and result["port"] == int(url.rsplit(":", 1)[1])
