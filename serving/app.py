"""The HTTP API (FastAPI): every answer comes from exactly one leased snapshot.

Endpoints (all JSON answers carry ``snapshot``, the snapshot they were answered
from, or the one being served for errors raised before a lease)::

    GET  /healthz                  200 while a snapshot is served, else 503
    GET  /info                     manifest, watcher status, limits, text model
    GET  /neighbors/{note_id}?k=   the k most similar other notes
    POST /neighbors                {"note_ids": [...], "k": 10}
    POST /search                   {"vectors": [[...], ...], "k": 10}   (normalised here)
    POST /search/text              {"texts": [...], "k": 10}  or  {"notes": [{"title", "content", "hashtags"}]}
    GET  /metrics                  Prometheus text (serving.metrics)

Bad input never becomes a 500: unknown note ids 404 (naming them), k outside
1..max_k, a wrong vector dimension, non-finite or zero vectors and malformed
bodies 422, batches over max_batch 413. 503 means nothing is served (yet) or the
text model cannot be loaded here.

Handlers are plain ``def``: FastAPI runs them in its threadpool, so FAISS and the
encoder never block the event loop. Each one holds ``watcher.acquire()`` for its
whole duration, so a swap waits for it before closing the old snapshot.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, Iterator

import numpy as np
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from serving.config import ServeConfig
from serving.metrics import CONTENT_TYPE, Metrics
from serving.text import ModelUnavailable, TextEncoder

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An answer other than 200, with its status, message and extra fields (never a traceback)."""

    def __init__(self, status: int, detail: str, snapshot: str | None = None, **extra: Any):
        super().__init__(detail)
        self.status, self.detail, self.snapshot, self.extra = status, detail, snapshot, extra


class Strict(BaseModel):
    """Request bodies refuse unknown fields, so a typo (``"kk": 5``) is a 422, not a silent default."""

    model_config = ConfigDict(extra="forbid")


class NeighborsBody(Strict):
    note_ids: list[str] = Field(description="note ids to find neighbours for")
    k: int | None = Field(None, description="neighbours per note (default: the service's default_k)")


class SearchBody(Strict):
    vectors: list[list[float]] = Field(description="query vectors, one row each, of the snapshot's dimension")
    k: int | None = None


class NoteQuery(Strict):
    title: str = ""
    content: str = ""
    hashtags: list[str] = Field(default_factory=list)


class TextSearchBody(Strict):
    texts: list[str] | None = Field(None, description="free texts; each is embedded as a note's title")
    notes: list[NoteQuery] | None = Field(None, description="or whole notes: title, content, hashtags")
    k: int | None = None


# --------------------------------------------------------------------------- service state


def make_watcher(cfg: ServeConfig):
    """The snapshot watcher for ``cfg`` (imported here: FAISS loads with it)."""
    from indexing.watcher import SnapshotWatcher

    mmap = {"auto": "auto", "on": True, "off": False}[cfg.mmap]
    return SnapshotWatcher(cfg.snapshot_root, poll_s=cfg.poll_s, verify=cfg.verify, mmap=mmap,
                           verify_in_background=cfg.verify_in_background)


class Service:
    """What the handlers share: settings, the watcher, metrics and the text encoder."""

    def __init__(self, cfg: ServeConfig, watcher):
        self.cfg, self.watcher = cfg, watcher
        self.metrics = Metrics()
        self.text = TextEncoder(cfg.text_device, cfg.text_precision, cfg.text_batch_size)
        self.final_status: dict | None = None

    def serving(self) -> str | None:
        return self.watcher.status().get("serving")

    def start(self) -> None:
        """Serve CURRENT's snapshot and poll for the next one; with nothing usable yet (no CURRENT,
        or a corrupted first snapshot) the service starts unhealthy (503) and the watcher keeps
        polling until a good snapshot is published."""
        self.watcher.start(require_snapshot=False)
        if self.cfg.preload_text_model and self.serving():
            with self.lease() as snap:
                try:
                    self.text.ensure(snap.manifest)
                except ModelUnavailable as exc:
                    log.warning("text model not preloaded: %s", exc)

    def stop(self) -> None:
        """Stop polling and release the snapshot; ``final_status`` keeps what was served last (the result line's)."""
        self.final_status = self.watcher_status()
        self.watcher.stop()

    def watcher_status(self) -> dict:
        """The watcher's status (``refusals`` counts every refusal, for a counter that never goes down)."""
        return self.watcher.status()

    @contextlib.contextmanager
    def lease(self) -> Iterator[Any]:
        """The served snapshot, held for the block (503 when there is none)."""
        with contextlib.ExitStack() as stack:
            try:
                snap = stack.enter_context(self.watcher.acquire())
            except Exception as exc:  # noqa: BLE001 - whatever the watcher raises for "nothing served"
                raise ApiError(503, f"no snapshot is being served: {exc}") from exc
            if snap is None:
                raise ApiError(503, "no snapshot is being served yet")
            import faiss
            faiss.omp_set_num_threads(self.cfg.omp_threads)   # per thread: OpenMP settings are thread-local
            yield snap

    def k(self, k: int | None) -> int:
        k = self.cfg.default_k if k is None else k
        if not 1 <= k <= self.cfg.max_k:
            raise ApiError(422, f"k={k} is outside 1..{self.cfg.max_k}")
        return k

    def batch(self, n: int, what: str) -> None:
        if n == 0:
            raise ApiError(422, f"no {what} given")
        if n > self.cfg.max_batch:
            raise ApiError(413, f"{n} {what} in one request; at most {self.cfg.max_batch} (max_batch)")


def _hits(pairs) -> list[dict]:
    return [{"note_id": nid, "score": round(float(s), 6)} for nid, s in pairs if nid is not None]


def _search_hits(ids: list, scores: np.ndarray) -> list[list[dict]]:
    return [_hits(zip(row_ids, row_scores)) for row_ids, row_scores in zip(ids, scores)]


def _query_matrix(vectors: list[list[float]], dim: int, snapshot: str) -> np.ndarray:
    """Query rows as float32 (q, dim); 422 for ragged, wrong-dimension, non-finite or zero rows."""
    bad_dim = sorted({len(v) for v in vectors if len(v) != dim})
    if bad_dim:
        raise ApiError(422, f"vectors must have dimension {dim} (snapshot {snapshot}); got {bad_dim}", snapshot)
    x64 = np.asarray(vectors, dtype=np.float64)
    if not (np.isfinite(x64).all() and np.abs(x64).max() <= np.finfo(np.float32).max):
        raise ApiError(422, "vectors contain NaN or infinite values (or values too large for float32)", snapshot)
    x = x64.astype(np.float32)
    zero = np.flatnonzero(np.linalg.norm(x, axis=1) == 0).tolist()
    if zero:
        raise ApiError(422, f"zero vector(s) at row(s) {zero[:10]}: no direction to search", snapshot)
    return x


def _text_notes(body: TextSearchBody) -> list[dict]:
    if (body.texts is None) == (body.notes is None):
        raise ApiError(422, "give exactly one of 'texts' (free texts) or 'notes' (title/content/hashtags)")
    if body.texts is not None:
        notes = [{"title": t, "content": "", "hashtags": []} for t in body.texts]
    else:
        notes = [n.model_dump() for n in body.notes]
    empty = [i for i, n in enumerate(notes) if not (n["title"].strip() or n["content"].strip())]
    if empty:
        raise ApiError(422, f"query {empty[:10]} has neither title nor content text")
    return notes


# --------------------------------------------------------------------------- routes


def _add_query_routes(app: FastAPI, svc: Service) -> None:
    @app.get("/neighbors/{note_id}")
    def neighbors_one(note_id: str, k: int | None = None) -> dict:
        k = svc.k(k)
        with svc.lease() as snap:
            if not snap.has(note_id):
                raise ApiError(404, f"unknown note id {note_id!r} in snapshot {snap.name}", snap.name,
                               missing=[note_id])
            return {"snapshot": snap.name, "note_id": note_id, "k": k, "results": _hits(snap.neighbors(note_id, k))}

    @app.post("/neighbors")
    def neighbors_batch(body: NeighborsBody) -> dict:
        k = svc.k(body.k)
        svc.batch(len(body.note_ids), "note ids")
        with svc.lease() as snap:
            try:
                lists = snap.neighbors_batch(body.note_ids, k)
            except KeyError as exc:
                missing = getattr(exc, "missing", None) or (exc.args[1] if len(exc.args) > 1 else list(exc.args))
                raise ApiError(404, f"unknown note id(s) {list(missing)[:20]} in snapshot {snap.name}", snap.name,
                               missing=list(missing)) from None
            return {"snapshot": snap.name, "k": k,
                    "results": [{"note_id": nid, "neighbors": _hits(hits)} for nid, hits in zip(body.note_ids, lists)]}

    @app.post("/search")
    def search(body: SearchBody) -> dict:
        k = svc.k(body.k)
        svc.batch(len(body.vectors), "vectors")
        with svc.lease() as snap:
            x = _query_matrix(body.vectors, int(snap.manifest["dim"]), snap.name)
            ids, scores = snap.search(x, k)
            return {"snapshot": snap.name, "k": k, "results": _search_hits(ids, scores)}

    @app.post("/search/text")
    def search_text(body: TextSearchBody) -> dict:
        k = svc.k(body.k)
        notes = _text_notes(body)
        svc.batch(len(notes), "texts")
        with svc.lease() as snap:
            try:
                x = svc.text.embed(snap.manifest, notes, int(snap.manifest["dim"]))
            except ModelUnavailable as exc:
                raise ApiError(503, str(exc), snap.name) from exc
            ids, scores = snap.search(x, k)
            return {"snapshot": snap.name, "k": k, "model_id": svc.text.model_id,
                    "results": _search_hits(ids, scores)}


def _add_status_routes(app: FastAPI, svc: Service) -> None:
    @app.get("/healthz")
    def healthz() -> JSONResponse:
        name = svc.serving()
        return JSONResponse({"status": "ok" if name else "unavailable", "snapshot": name},
                            status_code=200 if name else 503)

    @app.get("/info")
    def info() -> JSONResponse:
        limits = {"max_k": svc.cfg.max_k, "max_batch": svc.cfg.max_batch, "default_k": svc.cfg.default_k}
        base = {"limits": limits, "text_model": svc.text.model_id}
        if not svc.serving():
            return JSONResponse(jsonable_encoder({**base, "snapshot": None, "manifest": None,
                                                  "watcher": svc.watcher_status()}), 503)
        with svc.lease() as snap:
            return JSONResponse(jsonable_encoder({**base, "snapshot": snap.name, "manifest": snap.manifest,
                                                  "watcher": svc.watcher_status()}))

    @app.get("/metrics")
    def metrics() -> PlainTextResponse:
        status = svc.watcher_status()
        text = svc.metrics.render(status.get("serving"), status.get("swaps", 0), status["refusals"])
        return PlainTextResponse(text, media_type=CONTENT_TYPE)


def _add_error_handlers(app: FastAPI, svc: Service) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        snapshot = exc.snapshot or svc.serving()
        return JSONResponse({"detail": exc.detail, "snapshot": snapshot, **exc.extra}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()]
        return JSONResponse({"detail": errors, "snapshot": svc.serving()}, status_code=422)


class MetricsMiddleware:
    """Pure ASGI: counts and times every HTTP request by its route template, status included."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(endpoint, scope.get("method", ""), status[0], time.perf_counter() - start)


def create_app(cfg: ServeConfig, watcher=None) -> FastAPI:
    """The service for ``cfg``; ``watcher`` defaults to one on ``cfg.snapshot_root`` (tests may pass their own).

    The watcher's first check and its polling thread start in the lifespan, and
    stop with it, so importing or building the app touches no snapshot.
    """
    cfg.validate()
    svc = Service(cfg, watcher if watcher is not None else make_watcher(cfg))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await run_in_threadpool(svc.start)
        log.info("serving %s from %s", svc.serving() or "nothing yet", cfg.snapshot_root)
        try:
            yield
        finally:
            await run_in_threadpool(svc.stop)

    app = FastAPI(title="NoteLLM related-notes service", lifespan=lifespan,
                  description=(__doc__ or "").split("\n\n")[0])
    app.state.service = svc
    _add_status_routes(app, svc)
    _add_query_routes(app, svc)
    _add_error_handlers(app, svc)
    app.add_middleware(MetricsMiddleware, metrics=svc.metrics)
    return app
