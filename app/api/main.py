"""The HTTP ingress (``uvicorn app.api:app``; ``scalejob api``): queues, requests, services, health.

Routes live in three modules: :mod:`app.eas.routes` (the EAS queue protocol),
:mod:`app.api.requests` (records, SSE events, cancel) and this one (service admin, ``/healthz``,
``/metrics``). Every error is JSON ``{"detail": ...}``; an unexpected failure is logged and
answered 500 without a stack trace, and a Redis outage is a 503.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import redis
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api import auth
from app.api import requests as api_requests
from app.core.connections import state_redis
from app.core.specs import ServiceSpec, SpecError, parse_spec
from app.eas import calls
from app.eas import routes as api_queue
from app.queue import depth, health, records, services, status
from app.queue.workers import list_workers
from app.ui import routes as ui

log = logging.getLogger("scalejob.api")

@contextlib.asynccontextmanager
async def _lifespan(_: FastAPI) -> AsyncIterator[None]:
    # long-poll gets, watches and SSE streams each hold a worker thread while they block on Redis
    anyio.to_thread.current_default_thread_limiter().total_tokens = 200
    try:
        await anyio.to_thread.run_sync(auth.migrate, state_redis())
    except redis.RedisError as exc:  # Redis down at start: the API still starts and answers 503s
        log.warning("token migration skipped, Redis unreachable: %s", exc)
    yield


app = FastAPI(title="scalejob", version="0.1.0",
              description="Elastic Celery job service, EAS queue-service compatible.", lifespan=_lifespan)
app.include_router(api_queue.router)
app.include_router(api_requests.router)
app.include_router(ui.router)  # the dashboard: GET /ui and the JSON/SSE routes it reads (app/ui/routes.py)

METRICS = CollectorRegistry()
HTTP_REQUESTS = Counter("scalejob_http_requests_total", "HTTP requests by method and status", ["method", "status"],
                        registry=METRICS)
HTTP_SECONDS = Histogram("scalejob_http_request_seconds", "HTTP request latency", ["method"], registry=METRICS,
                         buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 5))
WAITING = Gauge("scalejob_queue_waiting", "Tasks waiting on the broker", ["service"], registry=METRICS)
WORKERS = Gauge("scalejob_workers", "Live workers by state", ["service", "state"], registry=METRICS)
STALE = Gauge("scalejob_stale_writes_total", "Writes of stale deliveries (an old lease epoch) refused so far",
              registry=METRICS)
FAILED_STARTS = Gauge("scalejob_service_failed_starts",
                      "Consecutive failed worker starts (crash-loop backoff while > 0)", ["service"], registry=METRICS)


class _Measure:
    """Counts requests by status and times them (plain ASGI: cheaper than an http middleware)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), [500]

        async def send_and_note(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            HTTP_REQUESTS.labels(scope["method"], str(status[0])).inc()
            HTTP_SECONDS.labels(scope["method"]).observe(time.perf_counter() - started)


app.add_middleware(_Measure)


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))


@app.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    detail = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
    return JSONResponse({"detail": detail or "invalid request"}, status_code=422)


@app.exception_handler(redis.RedisError)
async def _redis_down(request: Request, exc: redis.RedisError) -> JSONResponse:
    log.error("state Redis unavailable: %s", type(exc).__name__)
    return JSONResponse({"detail": "state store unavailable; retry later"}, status_code=503,
                        headers={"Retry-After": "1"})


@app.exception_handler(Exception)
async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "internal error"}, status_code=500)


# --- health and metrics -------------------------------------------------------------------------
@app.get("/healthz", summary="Liveness (no auth)")
def healthz() -> dict[str, Any]:
    try:
        ok = bool(state_redis().ping())
    except redis.RedisError:
        ok = False
    return {"status": "ok" if ok else "degraded", "redis": ok}


@app.get("/metrics", summary="Prometheus metrics (admin token)")
def metrics(request: Request) -> Response:
    calls.authorize(request.headers.get("authorization"), None)
    r = state_redis()
    STALE.set(records.stale_writes(r))
    for name in services.all_specs(r):
        try:
            WAITING.labels(name).set(depth.waiting(name))
        except Exception:  # noqa: BLE001 - a broker hiccup must not break the scrape
            pass
        counts: dict[str, int] = {}
        for w in list_workers(r, name):
            counts[w.state] = counts.get(w.state, 0) + 1
        for state in ("starting", "idle", "busy", "draining", "standby"):
            WORKERS.labels(name, state).set(counts.get(state, 0))
        FAILED_STARTS.labels(name).set(health.view(r, name)["failures"])
    return Response(generate_latest(METRICS), media_type=CONTENT_TYPE_LATEST)


# --- services (admin) ---------------------------------------------------------------------------
def _admin(request: Request) -> None:
    calls.authorize(request.headers.get("authorization"), None)


@app.get("/api/services", summary="Every service with live stats (admin token)")
def list_services(request: Request) -> list[dict[str, Any]]:
    _admin(request)
    r = state_redis()
    return [_service_view(r, n, s) for n, s in sorted(services.all_specs(r).items())]


@app.get("/api/services/{name}", summary="One service's spec and live stats (admin token)")
def get_service(name: str, request: Request) -> dict[str, Any]:
    _admin(request)
    spec = calls.load_spec(name)
    return _service_view(state_redis(), name, spec)


def _service_view(r: redis.Redis, name: str, spec: ServiceSpec) -> dict[str, Any]:
    """A service as the admin routes show it: its spec (token masked), live stats and health."""
    return {"name": name, "spec": services.public(r, spec), "stats": status.service_stats(r, name),
            **status.service_health(r, spec)}


MAX_SPEC_BYTES = 1024 * 1024  # a spec is a few KB; refuse more without reading it


@app.put("/api/services/{name}", summary="Deploy or update a service from its JSON spec (admin token)",
         openapi_extra={"requestBody": {"required": True,
                                        "content": {"application/json": {"schema": {"type": "object"}}}}})
async def put_service(name: str, request: Request) -> dict[str, Any]:
    _admin(request)
    try:
        data = json.loads(await calls.read_body(request, MAX_SPEC_BYTES))  # 413 before reading a huge body
    except ValueError as exc:  # not JSON, not UTF-8, or an integer past Python's 4,300-digit conversion limit
        raise HTTPException(422, f"body is not valid JSON: {str(exc)[:200]}") from None
    except RecursionError:  # "[[[[...]]]]": json.loads recurses once per nesting level
        raise HTTPException(422, "body is not a valid spec: JSON nested too deeply") from None
    try:
        spec = parse_spec(data)
    except SpecError as exc:
        raise HTTPException(400, str(exc)) from None
    if spec.name != name:
        raise HTTPException(400, f"metadata.name {spec.name!r} does not match the URL's service {name!r}")
    r = state_redis()
    version = services.save(r, spec)
    calls.forget_spec(name)
    out: dict[str, Any] = {"name": name, "version": version}
    if not spec.metadata.token and not auth.has_issued(r, name):
        out["token"] = auth.issue(r, name)  # shown once; only its digest is kept
    return out


@app.delete("/api/services/{name}", summary="Remove a service and its issued tokens (admin token)")
def delete_service(name: str, request: Request) -> dict[str, Any]:
    _admin(request)
    r = state_redis()
    calls.forget_spec(name)
    if not services.delete(r, name):
        raise HTTPException(404, f"unknown service {name!r}")
    auth.revoke_service(r, name)
    return {"name": name, "deleted": True}
