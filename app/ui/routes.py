"""The dashboard: ``GET /ui`` (one HTML page + static JS/CSS) and the JSON/SSE routes it reads.

The page is a static shell; its script asks for a token once, keeps it in ``sessionStorage`` and
sends it as ``Authorization`` on every call (never in a URL or a cookie). Routes beside the
API's own (``/api/requests/...``, ``/api/predict/...``):

- ``GET /api/ui/session``: who the token is (admin or which services); 401 otherwise.
- ``GET /api/ui/stream``: SSE, the services table: a full snapshot, then only the rows that
  changed, at most once per second.
- ``GET /api/services/{name}/overview``: read-only spec (token masked) and autoscaler config.
- ``GET /api/services/{name}/history``: the last hour of decisions, for the chart.
- ``GET /api/services/{name}/workers`` and ``.../requests``: paged lists.

A strict Content-Security-Policy keeps the page to its own origin's scripts and styles.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from app.api import auth
from app.core.connections import state_redis
from app.eas.calls import load_spec
from app.ui import data as ui_data

router = APIRouter()

STATIC = Path(__file__).with_name("static")
STREAM_PERIOD_S = 1.0
KEEPALIVE_S = 15.0
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
STATIC_TYPES = {
    ".js": "text/javascript", ".css": "text/css", ".png": "image/png", ".svg": "image/svg+xml", ".txt": "text/plain",
}


def _viewer(request: Request) -> ui_data.Viewer:
    try:
        return ui_data.viewer(state_redis(), request.headers.get("authorization"))
    except auth.Unauthorized as exc:
        raise HTTPException(401, str(exc)) from None


def _service(request: Request, name: str) -> tuple[ui_data.Viewer, Any]:
    """The viewer and the spec of ``name``; 404 for a service the token does not open."""
    who = _viewer(request)
    if not who.may_see(name):
        raise HTTPException(404, f"unknown service {name!r}")
    return who, load_spec(name)


# --- the page ------------------------------------------------------------------------------------
@router.get("/ui", include_in_schema=False)
def page() -> Response:
    """The page shell: no data in it, so it is the same for everyone and needs no token."""
    shell = (STATIC / "index.html").read_bytes()
    return Response(shell, media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)


@router.get("/ui/static/{path:path}", include_in_schema=False)
def static(path: str) -> FileResponse:
    """Files under ``app/ui/static`` only (no ``..``), with the page's CSP too."""
    # a NUL (or any control character) is never a file of ours, and must not reach a log line
    if not path.isprintable():
        raise HTTPException(404, "no such static file")
    target = (STATIC / path).resolve()
    if not target.is_file() or STATIC.resolve() not in target.parents or target.suffix not in STATIC_TYPES:
        raise HTTPException(404, f"no static file {path!r}")
    headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}
    return FileResponse(target, media_type=STATIC_TYPES[target.suffix], headers=headers)


# --- data for the page ---------------------------------------------------------------------------
@router.get("/api/ui/session", summary="Dashboard login check: which services this token opens")
def session(request: Request) -> dict[str, Any]:
    who = _viewer(request)
    return {"admin": who.admin, "services": list(who.services), "tenant": who.tenant}


@router.get("/api/services/{name}/overview",
            summary="A service's spec (token masked), autoscaler config and live row")
def overview(name: str, request: Request) -> dict[str, Any]:
    _, spec = _service(request, name)
    return ui_data.service_detail(state_redis(), name, spec)


@router.get("/api/services/{name}/history",
            summary="The autoscaler's decisions over the last hour (chart points, scale events)")
def history(
    name: str, request: Request, seconds: float = Query(ui_data.HISTORY_SECONDS, gt=0, le=24 * 3600)
) -> dict[str, Any]:
    _service(request, name)
    return ui_data.history(state_redis(), name, seconds=seconds)


@router.get("/api/services/{name}/workers", summary="Live workers: state, current request and for how long, GPUs")
def workers(
    name: str, request: Request, offset: int = Query(0, ge=0, le=10**9), limit: int = Query(100, ge=1, le=500)
) -> dict[str, Any]:
    who, _ = _service(request, name)
    return ui_data.workers_page(state_redis(), name, offset, limit, tenant=who.tenant)


@router.get("/api/services/{name}/requests", summary="Most recent requests, newest first (paged)")
def requests(
    name: str, request: Request, offset: int = Query(0, ge=0, le=10**9), limit: int = Query(50, ge=1, le=500)
) -> dict[str, Any]:
    who, _ = _service(request, name)
    return ui_data.requests_page(state_redis(), name, who, offset, limit)


# --- live feed -----------------------------------------------------------------------------------
def _sse(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _table_feed(request: Request, who: ui_data.Viewer) -> AsyncIterator[bytes]:
    """A full snapshot, then deltas: only rows that changed, checked once per ``STREAM_PERIOD_S``."""
    r = state_redis()
    last: dict[str, dict[str, Any]] = {}
    quiet_since = time.monotonic()
    first = True
    while not await request.is_disconnected():
        try:
            rows = await run_in_threadpool(ui_data.service_rows, r, who)
        except Exception as exc:  # noqa: BLE001 - Redis or broker down: tell the page, keep trying
            yield _sse("problem", {"detail": f"state store unavailable: {type(exc).__name__}"})
            await asyncio.sleep(STREAM_PERIOD_S)
            continue
        if first:
            yield _sse("snapshot", {"rows": rows, "at": time.time()})
            first = False
        elif (delta := ui_data.diff_rows(last, rows)) is not None:
            yield _sse("delta", {**delta, "at": time.time()})
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > KEEPALIVE_S:
            yield b": keepalive\n\n"
            quiet_since = time.monotonic()
        last = rows
        await asyncio.sleep(STREAM_PERIOD_S)


@router.get("/api/ui/stream",
            summary="Server-Sent Events: the services table, full once, then deltas at most once per second")
async def stream(request: Request) -> StreamingResponse:
    who = await run_in_threadpool(_viewer, request)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(_table_feed(request, who), media_type="text/event-stream", headers=headers)
