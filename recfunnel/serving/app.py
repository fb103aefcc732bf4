"""The online service: a FastAPI app over the same :class:`Funnel` the offline path uses.

Endpoints (docs at ``/docs`` and ``/redoc``, served from local assets so they work offline,
see :mod:`recfunnel.serving.docs`; the schema at ``/openapi.json``):

* ``POST /recommend`` ``{user_id, k, context, exclude, debug}`` — items with scores,
  the channels that found each, the model version, ``degraded``; with ``debug`` the
  trace of every stage.
* ``POST /events`` ``{events: [...]}`` — acknowledged once durable; idempotent by
  ``event_id``; the next request of the user reflects them.
* ``PUT /items`` ``{items: [...]}`` — new items enter the new-item pools and vector
  indexes at once.
* ``GET /healthz`` (alive), ``GET /readyz`` (model loaded and warmed up), ``GET /metrics``.
* ``GET /admin/models``, ``POST /admin/models/load`` ``{version | path}``,
  ``POST /admin/models/rollback``.

Limits: ``k``, list lengths (422), body size (413), concurrent requests (429 with
``Retry-After``); 503 with ``Retry-After`` until the model is ready, and when a
recommendation has queued so long that less of its budget is left than a request
takes (admission control, :mod:`recfunnel.serving.admission`). Keys: see
:mod:`recfunnel.serving.security`.
"""

# no "from __future__ import annotations": FastAPI reads the endpoints' annotations, and the
# request models are built per app (their limits come from the settings), not module globals.
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from starlette.exceptions import HTTPException as StarletteHTTPException

from recfunnel.errors import RecfunnelError
from recfunnel.pipeline.online.batching import MicroBatcher
from recfunnel.pipeline.online.runners import Budget, BudgetedRun, BudgetedRunner
from recfunnel.serving.admission import Admission
from recfunnel.serving.docs import add_offline_docs
from recfunnel.serving.metrics import CONTENT_TYPE, ServiceMetrics
from recfunnel.serving.models import (
    LoadInProgress,
    ModelRegistry,
    ModelVersion,
    NoPreviousVersion,
    UnsafePath,
    VersionNotFound,
)
from recfunnel.serving.schemas import (
    ErrorResponse,
    EventsResponse,
    HealthResponse,
    ItemsResponse,
    LoadModelRequest,
    LoadVersion,
    ModelActionResponse,
    ModelsResponse,
    ReadyResponse,
    RecommendResponse,
    build_schemas,
)
from recfunnel.serving.security import AuthError, KeyRing, make_authenticator
from recfunnel.serving.settings import ServingSettings
from recfunnel.types import OK, Candidates, StageTrace

log = logging.getLogger("recfunnel.serving")

#: endpoints never refused for concurrency (probes must answer under load)
_PROBES = ("/healthz", "/readyz", "/metrics")


class ServiceError(Exception):
    """An error answered with ``status`` and a one-line ``detail``."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers


def _default_state_factory(funnel, store):
    from recfunnel.pipeline.nearline.state import NearlineState

    return NearlineState(funnel, store)


def _default_store_factory(url: str):
    from recfunnel.storage.stores import open_event_store

    return open_event_store(url)


def _finite(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


class Service:
    """The state of one app: settings, model registry, nearline state, runner, metrics."""

    def __init__(self, settings: ServingSettings, *, state_factory: Callable | None = None,
                 store_factory: Callable | None = None, loader: Callable | None = None):
        self.settings = settings
        self.metrics = ServiceMetrics()
        self.registry = (ModelRegistry(settings.models_root) if loader is None
                         else ModelRegistry(settings.models_root, loader=loader))
        budget = Budget(settings.budget_ms / 1e3, settings.channel_timeout_ms / 1e3,
                        settings.stage_timeout_ms / 1e3, settings.max_late_per_channel)
        self.runner = BudgetedRunner(budget, settings.channel_workers)
        self.admission = Admission(budget.total, enabled=settings.admission_control)
        self._closing = threading.Event()
        self.batcher = None if settings.batch_max <= 1 else MicroBatcher(
            self._recommend_batch, max_batch=settings.batch_max, window_s=settings.batch_window_ms / 1e3,
            workers=settings.batch_workers)
        self._compactor: threading.Thread | None = None
        self.state_factory = state_factory or _default_state_factory
        self.store_factory = store_factory or _default_store_factory
        self.store = None
        self.state = None
        self.ready = False
        self.load_error: str | None = None
        self._start_lock = threading.Lock()

    # ------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Open the event store, load the model, rebuild the nearline state, warm up."""
        with self._start_lock:
            if self.ready:
                return
            try:
                t0 = time.perf_counter()
                version = self.registry.build(self.settings.model_dir)
                self.store = self.store_factory(self.settings.events_url)
                self._compact()  # before the replay: what the retention drops is not replayed
                self.state = self.state_factory(version.funnel, self.store)
                self.registry.activate(version, None, "start")
                self.metrics.set_model(version.version, version.model_id)
                self.metrics.model_swaps.labels(action="start").inc()
                self._warm_up()
                self.ready = True
                self.metrics.ready.set(1)
                log.info("model %s ready in %.1fs", version.model_id, time.perf_counter() - t0)
            except Exception as e:
                self.load_error = f"{type(e).__name__}: {e}"
                log.error("model load failed: %s", self.load_error)
                raise

    def _compact(self) -> None:
        days = self.settings.event_retention_days
        if days is None or self.store is None:
            return
        from recfunnel.storage.events import compact_events

        dropped = compact_events(self.store, days)
        log.info("event log compacted: %d events older than %g days dropped", dropped, days)
        if self._compactor is None:  # then every hour, until close()
            def every_hour() -> None:
                while not self._closing.wait(3600.0):
                    try:
                        self._compact()
                    except Exception:  # noqa: BLE001 - a failed compaction keeps every event; retried
                        log.exception("event log compaction failed")

            self._compactor = threading.Thread(target=every_hour, name="recfunnel-compact", daemon=True)
            self._compactor.start()

    def start_in_background(self) -> threading.Thread:
        def run() -> None:
            try:
                self.start()
            except Exception:  # noqa: BLE001 - reported by /readyz
                pass

        thread = threading.Thread(target=run, name="recfunnel-load", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self.ready = False
        self._closing.set()
        if self.batcher is not None:
            self.batcher.close()
        self.runner.close()
        if self.store is not None:
            self.store.close()

    def _warm_up(self) -> None:
        """One request through the whole service path (nearline request + budgeted run)."""
        version = self.registry.current
        funnel = version.funnel
        user = str(funnel.user_ids.ids[0]) if len(funnel.user_ids) else "warm-up"
        batch = self.state.request([user], funnel=funnel)
        funnel.run(batch, min(10, self.settings.max_k), trace=True,
                   runner=self.runner.start(version.static_fallback))

    def require_ready(self) -> None:
        if not self.ready:
            detail = ("model failed to load: " + self.load_error) if self.load_error else "model is loading"
            raise ServiceError(503, detail, {"Retry-After": str(self.settings.retry_after_s)})

    # -------------------------------------------------------------- handlers
    def recommend(self, body, arrived: float | None = None) -> dict[str, Any]:
        """One recommendation; ``arrived`` (``time.perf_counter()`` when the request came in, set by
        the middleware) starts its budget, so the time it queued for a worker counts.

        With micro-batching (``batch_max`` > 1) the request joins the requests queued with it
        and :meth:`Funnel.run` runs once for all of them (:mod:`recfunnel.pipeline.online.batching`).
        """
        self.require_ready()
        t0 = time.perf_counter()
        arrived = t0 if arrived is None else arrived
        refusal = self.admission.refusal(arrived, t0)
        if refusal is not None:
            self.metrics.rejected.labels(reason="budget").inc()
            raise ServiceError(503, refusal, {"Retry-After": str(self.settings.retry_after_s)})
        if self.batcher is not None:
            out = self.batcher.submit((body, arrived))
        else:
            out = self._recommend_batch([(body, arrived)])[0]
        if isinstance(out, BaseException):
            raise out
        self.admission.observe(time.perf_counter() - t0)
        return out

    def _recommend_batch(self, requests: list[tuple[Any, float]]) -> list[dict[str, Any] | BaseException]:
        """Answers to ``(body, arrived)`` requests, one :meth:`Funnel.run` per set of context keys."""
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, (body, _) in enumerate(requests):
            groups.setdefault(tuple(sorted(body.context)), []).append(i)
        answers: list[dict[str, Any] | BaseException] = [RuntimeError("not run")] * len(requests)
        for keys, rows in groups.items():
            try:
                for i, answer in zip(rows, self._run_batch([requests[i] for i in rows], keys), strict=True):
                    answers[i] = answer
            except Exception as e:  # noqa: BLE001 - each caller of this group gets the error
                for i in rows:
                    answers[i] = e
        return answers

    def _run_batch(self, requests: list[tuple[Any, float]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
        version = self.registry.current  # read once: these requests use this version end to end
        bodies = [body for body, _ in requests]
        context = {}
        for key in keys:
            values = [body.context[key] for body in bodies]
            context[key] = np.array(values, dtype=object if any(isinstance(v, str) for v in values) else None)
        batch = self.state.request([body.user_id for body in bodies], exclude=[list(body.exclude) for body in bodies],
                                   context=context, funnel=version.funnel)
        run = self.runner.start(version.static_fallback, arrived=min(arrived for _, arrived in requests))
        k = max(body.k for body in bodies)
        candidates, traces = version.funnel.run(batch, k, trace=True, runner=run)
        done = time.perf_counter()
        out = []
        for row, (body, arrived) in enumerate(requests):
            self._observe(run, traces, row)
            out.append(self._response(body, version, candidates, traces, run, done - arrived, row))
        return out

    def _observe(self, run: BudgetedRun, traces: list[StageTrace], row: int = 0) -> None:
        m = self.metrics
        if row == 0:  # stage timings are the batch's: counted once per batch
            for s in traces:
                m.stage_latency.labels(stage=s.stage).observe(s.seconds)
                if s.status != OK:
                    m.channel_failures.labels(stage=s.stage, reason=s.status).inc()
            m.stage_latency.labels(stage="funnel").observe(run.seconds)
        degraded = bool(run.degraded[row])
        m.recommendations.labels(degraded=str(degraded).lower()).inc()
        if degraded:
            m.degraded.inc()
        m.fallback_items.inc(int(run.fallback_items[row]))

    def _ids(self, funnel, index: np.ndarray) -> list[str | None]:
        ids = funnel.item_ids.ids
        return [str(ids[i]) if 0 <= i < len(ids) else None for i in index.tolist()]

    def _response(self, body, version: ModelVersion, cand: Candidates, traces: list[StageTrace],
                  run: BudgetedRun, seconds: float, row: int = 0) -> dict:
        funnel = version.funnel
        valid = np.flatnonzero(cand.valid[row])
        ids = self._ids(funnel, cand.item_index[row, valid])
        items = []
        for col, item_id in zip(valid.tolist(), ids, strict=True):
            if item_id is None:
                continue
            if len(items) == body.k:  # the batch ran with its largest k
                break
            channels = {name: _finite(s[row, col]) for name, s in cand.channel_scores.items()
                        if not np.isnan(s[row, col])}
            items.append({"item_id": item_id, "rank": len(items) + 1, "score": _finite(cand.score[row, col]),
                          "channels": channels})
        out = {
            "user_id": body.user_id, "k": body.k, "model_version": version.version,
            "model_id": version.model_id, "degraded": bool(run.degraded[row]),
            "degraded_reasons": run.reasons, "fallback_items": int(run.fallback_items[row]),
            "latency_ms": round(seconds * 1e3, 3), "items": items, "trace": None,
        }
        if body.debug:
            limit = self.settings.trace_items
            trace = []
            for s in traces:
                listed = []
                if s.candidates is not None:
                    c = s.candidates
                    keep = np.flatnonzero(c.valid[row])[:limit]
                    for item_id, score in zip(self._ids(funnel, c.item_index[row, keep]),
                                              c.score[row, keep].tolist(), strict=True):
                        if item_id is not None:
                            listed.append({"item_id": item_id, "score": _finite(score)})
                trace.append({"stage": s.stage, "status": s.status, "latency_ms": round(s.seconds * 1e3, 3),
                              "n_in": int(s.n_in[row]), "n_out": int(s.n_out[row]), "error": s.error,
                              "candidates": listed})
            out["trace"] = trace
        return out

    def ingest(self, body) -> dict[str, Any]:
        from recfunnel.storage.events import Event

        self.require_ready()
        now = int(time.time())
        events = [Event(e.event_id, e.user_id, e.item_id, e.type, now if e.timestamp is None else e.timestamp,
                        e.value) for e in body.events]
        new = [bool(x) for x in self.state.ingest(events)]
        stored = sum(new)
        self.metrics.events.labels(result="new").inc(stored)
        self.metrics.events.labels(result="duplicate").inc(len(new) - stored)
        return {"received": len(new), "stored": stored, "duplicates": len(new) - stored, "new": new}

    def publish(self, body) -> dict[str, Any]:
        import pandas as pd

        from recfunnel.storage.events import StorageError

        self.require_ready()
        now = int(time.time())
        rows = []
        for item in body.items:
            row: dict[str, Any] = {"publish_time": now if item.publish_time is None else item.publish_time}
            for key, value in item.attributes.items():
                row[key] = "|".join(value) if isinstance(value, list) else value
            rows.append(row)
        frame = pd.DataFrame(rows, index=pd.Index([i.item_id for i in body.items], name="item_id"))
        try:
            published = int(self.state.publish_items(frame))
        except StorageError:
            raise  # the store failed, not the request: answered like a failed POST /events
        except (RecfunnelError, ValueError, TypeError) as e:
            raise ServiceError(422, f"items refused: {e}") from None
        self.metrics.items_published.inc(published)
        return {"received": len(rows), "published": published}

    def _activate(self, version: ModelVersion) -> None:
        old = self.registry.current
        try:
            self.state.bind(version.funnel)
        except Exception:
            if old is not None:
                self.state.bind(old.funnel)
            raise

    def load_model(self, body: LoadModelRequest) -> dict[str, Any]:
        self.require_ready()
        ref = body.version if isinstance(body, LoadVersion) else body.path
        previous = self.registry.current
        try:
            version = self.registry.load(ref, self._activate)
        except LoadInProgress as e:
            raise ServiceError(409, str(e), {"Retry-After": str(self.settings.retry_after_s)}) from None
        except UnsafePath as e:
            raise ServiceError(403, f"refused: {e}") from None
        except VersionNotFound as e:
            raise ServiceError(404, str(e)) from None
        except RecfunnelError as e:
            raise ServiceError(422, f"model refused: {e}") from None
        except Exception as e:  # noqa: BLE001 - a model that fails to load or warm up is refused, not served
            log.exception("model %s failed to load", ref)
            raise ServiceError(422, f"model refused: it failed to load or warm up ({type(e).__name__}: {e})") from None
        self.metrics.model_swaps.labels(action="load").inc()
        self.metrics.set_model(version.version, version.model_id)
        return {"action": "load", "version": version.version, "model_id": version.model_id,
                "previous": None if previous is None else previous.version,
                "load_seconds": round(version.load_seconds, 3)}

    def rollback(self) -> dict[str, Any]:
        self.require_ready()
        previous = self.registry.current
        try:
            version = self.registry.rollback(self._activate)
        except LoadInProgress as e:
            raise ServiceError(409, str(e), {"Retry-After": str(self.settings.retry_after_s)}) from None
        except NoPreviousVersion as e:
            raise ServiceError(409, str(e)) from None
        self.metrics.model_swaps.labels(action="rollback").inc()
        self.metrics.set_model(version.version, version.model_id)
        return {"action": "rollback", "version": version.version, "model_id": version.model_id,
                "previous": None if previous is None else previous.version, "load_seconds": 0.0}

    def models(self) -> dict[str, Any]:
        r = self.registry
        return {"current": None if r.current is None else r.current.describe(),
                "previous": None if r.previous is None else r.previous.describe(),
                "versions": r.versions(), "history": list(r.history)}


# ------------------------------------------------------------------ middleware
def _json_body(status: int, detail: str, headers: dict[str, str] | None = None) -> tuple[dict, bytes]:
    body = json.dumps({"detail": detail}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    head += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return {"type": "http.response.start", "status": status, "headers": head}, body


async def _send_json(send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    start, body = _json_body(status, detail, headers)
    await send(start)
    await send({"type": "http.response.body", "body": body})


class LimitsMiddleware:
    """Metrics of every request; 429 beyond ``max_concurrent``; 413 beyond ``max_request_bytes``.

    Pure ASGI: the body is read here (at most the limit plus one chunk) and replayed
    to the app, so an oversized body is refused before any handler sees it.
    """

    def __init__(self, app, service: Service, endpoints: set[str]):
        self.app = app
        self.service = service
        self.endpoints = endpoints
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        s, m = self.service.settings, self.service.metrics
        path = scope.get("path", "")
        endpoint = path if path in self.endpoints else "other"
        status_box = {"status": 500}
        t0 = time.perf_counter()

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status_box["status"] = message["status"]
            await send(message)

        # the arrival, from which a recommendation's budget counts (Request.state in the handler)
        scope.setdefault("state", {})["arrived"] = t0
        probe = path in _PROBES
        if not probe and self.in_flight >= s.max_concurrent:
            m.rejected.labels(reason="concurrency").inc()
            await _send_json(send_wrapper, 429, f"too many concurrent requests (limit {s.max_concurrent}); "
                             "retry later", {"Retry-After": str(s.retry_after_s)})
            self._count(endpoint, status_box["status"], t0)
            return
        if not probe:
            self.in_flight += 1
        m.in_flight.inc()
        try:
            replay = None
            if scope.get("method") in ("POST", "PUT", "PATCH"):
                body, refusal = await self._read_body(scope, receive, s.max_request_bytes)
                if refusal is not None:
                    m.rejected.labels(reason="size").inc()
                    await _send_json(send_wrapper, 413, refusal)
                    return
                replay = body
            if replay is not None:
                sent = False

                async def receive_replay():
                    nonlocal sent
                    if not sent:
                        sent = True
                        return {"type": "http.request", "body": replay, "more_body": False}
                    return await receive()  # http.disconnect when the client goes away

                await self.app(scope, receive_replay, send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        finally:
            if not probe:
                self.in_flight -= 1
            m.in_flight.dec()
            self._count(endpoint, status_box["status"], t0)

    def _count(self, endpoint: str, status: int, t0: float) -> None:
        m = self.service.metrics
        m.requests.labels(endpoint=endpoint, status=str(status)).inc()
        m.latency.labels(endpoint=endpoint).observe(time.perf_counter() - t0)

    @staticmethod
    async def _read_body(scope, receive, limit: int) -> tuple[bytes, str | None]:
        too_big = f"request body larger than {limit} bytes"
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    if int(value) > limit:
                        return b"", too_big
                except ValueError:
                    return b"", "invalid Content-Length header"
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return b"", too_big
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks), None


# ------------------------------------------------------------------------- app
def create_app(settings: ServingSettings, *, state_factory: Callable | None = None,
               store_factory: Callable | None = None, loader: Callable | None = None) -> FastAPI:
    """The service's app. Loads the model now, or after start-up when
    ``settings.load_in_background`` (then ``/readyz`` says when it is ready).

    Args:
        settings: the service settings.
        state_factory: ``(funnel, store) -> NearlineState`` (tests may pass a fake).
        store_factory: ``url -> EventStore``.
        loader: ``path -> Funnel`` (default ``Funnel.load``).

    Raises:
        ConfigError: keys missing on a non-loopback host, unreadable key file, bad settings.
    """
    keys = KeyRing.load(settings.api_keys_file, settings.api_keys_env)
    auth = make_authenticator(keys, allow_anonymous=settings.allow_anonymous, loopback=settings.is_loopback)
    service = Service(settings, state_factory=state_factory, store_factory=store_factory, loader=loader)
    schemas = build_schemas(max_k=settings.max_k, max_exclude=settings.max_exclude,
                            max_events=settings.max_events, max_items=settings.max_items)
    RecommendRequest, EventsRequest, ItemsRequest = (schemas.RecommendRequest, schemas.EventsRequest,
                                                     schemas.ItemsRequest)

    async def lifespan(app: FastAPI):
        # with load_in_background the server's lifespan owns the service (start, then close at
        # shutdown); otherwise it was started in create_app and lives until service.close(), so
        # in-process clients that open and close the lifespan many times do not stop it
        if settings.load_in_background and not service.ready:
            service.start_in_background()
        try:
            yield
        finally:
            if settings.load_in_background:
                service.close()

    errors = {code: {"model": ErrorResponse, "description": text} for code, text in (
        (400, "the body cannot be parsed"), (401, "missing or invalid API key"), (403, "read-only API key"), (413, "request body too large"),
        (422, "invalid request"), (429, "too many concurrent requests (Retry-After)"),
        (503, "model not ready, or overloaded: the request cannot be answered within its budget (Retry-After)"))}
    app = FastAPI(title="recfunnel", version="1", lifespan=lifespan, responses=errors,
                  description="A multi-stage recommender: retrieval channels, merge, ranking, re-ranking.",
                  docs_url=None, redoc_url=None)  # FastAPI's pages load from a CDN: ours are local
    add_offline_docs(app)
    app.state.service = service

    # --------------------------------------------------------------- auth
    if auth.anonymous:
        def read_access(request: Request) -> None:
            return None

        write_access = read_access
    else:
        key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                                  description="read-write or read-only key (or 'Authorization: Bearer <key>')")

        def read_access(request: Request, _key: str | None = Depends(key_header)) -> None:
            try:
                auth.check(request.headers, write=False)
            except AuthError as e:
                raise ServiceError(e.status, e.message, {"WWW-Authenticate": "ApiKey"}) from None

        def write_access(request: Request, _key: str | None = Depends(key_header)) -> None:
            try:
                auth.check(request.headers, write=True)
            except AuthError as e:
                raise ServiceError(e.status, e.message, {"WWW-Authenticate": "ApiKey"}) from None

    # ------------------------------------------------------------- errors
    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError):
        return JSONResponse({"detail": exc.detail}, exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errs = [{"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
                for e in exc.errors()][:50]
        first = errs[0] if errs else {"loc": [], "msg": "invalid request"}
        detail = f"invalid request: {'.'.join(first['loc'])}: {first['msg']}" if first["loc"] else first["msg"]
        return JSONResponse(jsonable_encoder({"detail": detail, "errors": errs}), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"detail": str(exc.detail)}, exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, 500)

    # ---------------------------------------------------------- endpoints
    @app.post("/recommend", response_model=RecommendResponse, response_model_exclude_none=False,
              summary="top-k items for a user")
    def recommend(body: RecommendRequest, request: Request,  # type: ignore[valid-type]
                  _: None = Depends(read_access)):
        return service.recommend(body, getattr(request.state, "arrived", None))

    @app.post("/events", response_model=EventsResponse, summary="ingest user events (durable, idempotent)")
    def events(body: EventsRequest, _: None = Depends(write_access)):  # type: ignore[valid-type]
        return service.ingest(body)

    @app.put("/items", response_model=ItemsResponse, summary="publish new items")
    def items(body: ItemsRequest, _: None = Depends(write_access)):  # type: ignore[valid-type]
        return service.publish(body)

    @app.get("/healthz", response_model=HealthResponse, summary="the process is alive")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", response_model=ReadyResponse, summary="model and indexes loaded and warmed up",
             responses={503: {"model": ReadyResponse, "description": "not ready"}})
    async def readyz():
        current = service.registry.current
        body = {"ready": service.ready, "model_version": None if current is None else current.version,
                "model_id": None if current is None else current.model_id,
                "detail": None if service.ready else (service.load_error or "loading")}
        if service.ready:
            return body
        return JSONResponse(body, 503, headers={"Retry-After": str(settings.retry_after_s)})

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
    async def metrics(_: None = Depends(read_access)):
        return Response(service.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/admin/models", response_model=ModelsResponse, summary="loaded and available model versions")
    def list_models(_: None = Depends(write_access)):
        return service.models()

    @app.post("/admin/models/load", response_model=ModelActionResponse, summary="load a version and swap it in",
              responses={403: {"model": ErrorResponse, "description": "read-only key, or a path outside the "
                                                                  "models root"},
                         404: {"model": ErrorResponse, "description": "no such version"},
                         409: {"model": ErrorResponse, "description": "another load is running"}})
    def load_model(body: LoadModelRequest, _: None = Depends(write_access)):
        return service.load_model(body)

    @app.post("/admin/models/rollback", response_model=ModelActionResponse, summary="serve the previous version",
              responses={409: {"model": ErrorResponse, "description": "no previous version or a load is running"}})
    def rollback(_: None = Depends(write_access)):
        return service.rollback()

    endpoints = {route.path for route in app.routes if hasattr(route, "path")}
    app.add_middleware(LimitsMiddleware, service=service, endpoints=endpoints)
    if not settings.load_in_background:
        service.start()
    return app
