"""Load test of the reference retrieval service while snapshots change under it.

On 127.0.0.1 only, bounded in time and concurrency: a published snapshot of N
synthetic clustered vectors (d=128) is served by ``python -m serving``; C
concurrent asyncio clients (httpx) send ``GET /neighbors/{id}?k=10`` and
``POST /search`` (one vector, k=10) for ``duration_s`` seconds. During the run:

* at ``swap_at_s`` a new snapshot of the same notes (new vectors, as after a
  retrain) is published with ``indexing.publish.publish``;
* at ``corrupt_at_s`` a corrupted copy of it (one flipped byte in index.faiss)
  is made CURRENT, as a broken writer or bit rot would.

Reported: requests/s, p50/p99 latency per endpoint, failed requests (any
non-200 or transport error), and the swap check: after the first answer from
the new snapshot has arrived, no request sent later is answered from the old one, and
the corrupted snapshot never answers. One JSON result line.

    python bench/bench_serving_load.py [--n 1000000] [--clients 32] [--duration-s 60]
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from notellm import cli  # noqa: E402  (after the repo is on sys.path)
from notellm.config import option  # noqa: E402

MODEL_A = {"model_id": "aaaaaaaa00000000", "path": "/models/a", "template_version": "v1-paper"}
MODEL_B = {"model_id": "bbbbbbbb00000000", "path": "/models/b", "template_version": "v1-paper"}


@dataclasses.dataclass
class LoadConfig:
    """Load-test the retrieval service during a snapshot swap and a corrupted publish."""

    n: int = option(1_000_000, help="vectors in each snapshot")
    d: int = option(128, help="vector dimension")
    index_type: str = option("ivf", choices=("flat", "ivf", "hnsw"), help="index type of both snapshots")
    clients: int = option(32, help="concurrent clients")
    duration_s: float = option(60.0, help="length of the load phase (at most 60 s on shared machines)")
    swap_at_s: float = option(20.0, help="when the new snapshot is published")
    corrupt_at_s: float = option(40.0, help="when a corrupted snapshot is made CURRENT")
    search_share: float = option(0.3, help="share of POST /search among the requests (rest: GET /neighbors)")
    poll_s: float = option(0.5, help="the service's CURRENT polling interval")
    work: Path = option(REPO / "var" / "bench" / "serving", help="work directory (snapshots, logs)")
    seed: int = option(0, help="seed of the vectors and the request mix")

    def validate(self) -> None:
        if not 0 < self.swap_at_s < self.corrupt_at_s < self.duration_s <= 120:
            raise ValueError("need 0 < swap_at_s < corrupt_at_s < duration_s <= 120")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _build(cfg: LoadConfig, seed: int):
    from indexing.build import IndexConfig, build_index
    from indexing.publish import content_digest
    from tests.support.notes import clustered_vectors

    ids = [f"note-{i:08d}" for i in range(cfg.n)]
    x = clustered_vectors(cfg.n, cfg.d, clusters=1000, seed=seed)
    built = build_index((ids, x), IndexConfig(index_key=cfg.index_type))
    return ids, built, content_digest(ids, x)


def _corrupt_copy(root: Path, name: str) -> str:
    """A copy of snapshot ``name`` with one byte of its index flipped, made CURRENT atomically."""
    from indexing.snapshot import snapshots_dir

    snaps = snapshots_dir(root)
    bad = name + ".corrupt"
    shutil.copytree(snaps / name, snaps / bad)
    index = snaps / bad / "index.faiss"
    with open(index, "r+b") as fh:
        fh.seek(index.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0xFF]))
    tmp = snaps / ".CURRENT.corrupt-tmp"
    tmp.write_text(bad + "\n")
    os.replace(tmp, snaps / "CURRENT")
    return bad


async def _client(http, base: str, ids: list[str], cfg: LoadConfig, rng: random.Random, stop_at: float,
                  vectors: np.ndarray, log: list) -> None:
    while time.monotonic() < stop_at:
        start = time.monotonic()
        if rng.random() < cfg.search_share:
            kind = "search"
            req = http.post(f"{base}/search", json={"vectors": [vectors[rng.randrange(len(vectors))].tolist()],
                                                   "k": 10})
        else:
            kind = "neighbors"
            req = http.get(f"{base}/neighbors/{ids[rng.randrange(len(ids))]}", params={"k": 10})
        try:
            resp = await req
            status, snapshot = resp.status_code, resp.json().get("snapshot") if resp.status_code == 200 else None
        except Exception as exc:  # noqa: BLE001 - a transport error is a failed request, recorded
            status, snapshot = f"{type(exc).__name__}", None
        log.append((kind, start, time.monotonic() - start, status, snapshot))


async def _load(base: str, ids: list[str], cfg: LoadConfig, events: dict) -> list:
    import httpx

    rng = random.Random(cfg.seed)
    vectors = np.random.default_rng(cfg.seed).standard_normal((256, cfg.d)).astype(np.float32)
    log: list = []
    t0 = time.monotonic()
    stop_at = t0 + cfg.duration_s
    events["t0"] = t0
    limits = httpx.Limits(max_connections=cfg.clients, max_keepalive_connections=cfg.clients)
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as http:
        await asyncio.gather(*[_client(http, base, ids, cfg, random.Random(rng.random()), stop_at, vectors, log)
                               for _ in range(cfg.clients)])
    return log


def _percentiles(lat: list[float]) -> dict:
    if not lat:
        return {}
    a = np.asarray(lat) * 1000
    return {"requests": len(a), "p50_ms": round(float(np.percentile(a, 50)), 2),
            "p99_ms": round(float(np.percentile(a, 99)), 2), "max_ms": round(float(a.max()), 2)}


def _swap_check(log: list, old: str, new: str, bad: str) -> dict:
    """Client-side order: a request sent after an answer from the new snapshot arrived must be
    answered from the new one (requests sent earlier may still hold a lease on the old one)."""
    first_new = min((start + lat for _, start, lat, _, snap in log if snap == new), default=None)
    late_old = sum(1 for _, start, _, _, snap in log if snap == old and first_new is not None and start > first_new)
    return {"first_new_answer_s": None if first_new is None else round(first_new, 3),
            "old_answers_sent_after_first_new_answer": late_old,
            "answers_from_corrupted": sum(1 for *_, snap in log if snap == bad)}


def run(cfg: LoadConfig, timer: cli.Timer) -> dict:
    import logging

    from indexing.publish import publish

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise

    root = cfg.work / f"{cfg.index_type}-{cfg.n}"
    shutil.rmtree(root, ignore_errors=True)
    with timer.phase("build_a"):
        ids, built_a, digest_a = _build(cfg, cfg.seed + 1)
        old = publish(root, built_a, date="2026-12-01", model=MODEL_A, content_sha256=digest_a, metrics={})["snapshot"]
        del built_a
    with timer.phase("build_b"):
        _, built_b, digest_b = _build(cfg, cfg.seed + 2)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = cfg.work / "serving.log"
    server = subprocess.Popen([sys.executable, "-m", "serving", "--snapshot-root", str(root), "--port", str(port),
                               "--poll-s", str(cfg.poll_s)], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=open(log_path, "w"), text=True)
    events: dict = {}
    try:
        with timer.phase("server_start"):
            _wait_healthy(base, server)
        new_holder: dict = {}

        def publisher():
            while "t0" not in events:
                time.sleep(0.01)
            time.sleep(max(0.0, events["t0"] + cfg.swap_at_s - time.monotonic()))
            t = time.monotonic()
            new_holder["name"] = publish(root, built_b, date="2026-12-02", model=MODEL_B, content_sha256=digest_b,
                                         metrics={})["snapshot"]
            events["published_s"] = round(time.monotonic() - events["t0"], 2)
            events["publish_took_s"] = round(time.monotonic() - t, 2)
            time.sleep(max(0.0, events["t0"] + cfg.corrupt_at_s - time.monotonic()))
            new_holder["bad"] = _corrupt_copy(root, new_holder["name"])
            events["corrupted_s"] = round(time.monotonic() - events["t0"], 2)

        thread = threading.Thread(target=publisher, daemon=True)
        thread.start()
        with timer.phase("load"):
            log = asyncio.run(_load(base, ids, cfg, events))
        thread.join()
        info = _get_json(f"{base}/info")
    finally:
        server.terminate()
        server.wait(timeout=60)
    t0 = events["t0"]
    log = [(k, s - t0, lat, st, snap) for k, s, lat, st, snap in log]
    failed = [row for row in log if row[3] != 200]
    return {
        "n": cfg.n, "d": cfg.d, "index_type": cfg.index_type, "clients": cfg.clients, "duration_s": cfg.duration_s,
        "requests": len(log), "requests_per_s": round(len(log) / cfg.duration_s, 1), "failed": len(failed),
        "failed_examples": [list(r) for r in failed[:5]],
        "neighbors": _percentiles([lat for k, _, lat, st, _ in log if k == "neighbors" and st == 200]),
        "search": _percentiles([lat for k, _, lat, st, _ in log if k == "search" and st == 200]),
        "events": {k: v for k, v in events.items() if k != "t0"},
        "snapshots": {"old": old, "new": new_holder.get("name"), "corrupted": new_holder.get("bad")},
        "swap": _swap_check(log, old, new_holder.get("name"), new_holder.get("bad")),
        "served_at_end": info.get("snapshot"), "refused": info.get("watcher", {}).get("refused"),
        "cpus": os.cpu_count(), "server_log": str(log_path),
    }


def _get_json(url: str) -> dict:
    import httpx

    return httpx.get(url, timeout=30).json()


def _wait_healthy(base: str, server: subprocess.Popen, timeout: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the service exited with {server.returncode} before it was healthy")
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{base}/healthz not ready within {timeout} s")


def main(argv=None) -> int:
    return cli.main(run, LoadConfig, argv, prog="python bench/bench_serving_load.py")


if __name__ == "__main__":
    sys.exit(main())
