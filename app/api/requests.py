"""``/api/requests/{id}``: one request's record, its live events (SSE) and cancel.

A request is authorised with its own service's token (or the admin token); a token bound to a
tenant only sees that tenant's requests (others answer 404, as if they did not exist).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import redis
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from app.core.connections import state_redis, waiting_redis
from app.eas.calls import authorize, unknown
from app.queue import health, records, services
from app.queue import output as sink
from app.queue.records import RequestState

router = APIRouter()
def load(request_id: str, authorization: str | None) -> records.Record:
    """The record, after checking the caller may see it (401 / 404 otherwise)."""
    if not authorization:
        raise HTTPException(401, "missing Authorization header")
    r = state_redis()
    rec = records.get(r, request_id)
    if rec is None:
        raise unknown(f"unknown request {request_id!r}", authorization)
    try:
        spec = services.get(r, rec.service)
    except services.UnknownService:
        spec = None
    principal = authorize(authorization, spec)
    if principal.tenant and principal.tenant != rec.tenant:
        raise HTTPException(404, f"unknown request {request_id!r}")
    return rec


def view(r: redis.Redis, rec: records.Record) -> dict[str, Any]:
    out = rec.to_dict()
    out["position"] = records.position(r, rec)
    if rec.state == RequestState.QUEUED:
        out["waiting_reason"] = waiting_reason(r, rec.service)
    return out


def waiting_reason(r: redis.Redis, service: str) -> str | None:
    """Why a queued request is not running yet, when the cause is known (None: it is just its turn)."""
    h = health.view(r, service)
    if h["health"] != health.OK and h["last_failure"]:
        return (f"workers of {service} fail to start ({h['failures']} in a row; next try in {h['backoff_left']:.0f}s): "
                f"{h['last_failure']['reason']}; the request stays queued")
    return None


@router.get("/api/requests/{request_id}", summary="A request's state, progress, worker, times, position and result")
def get_request(request_id: str, request: Request) -> dict[str, Any]:
    rec = load(request_id, request.headers.get("authorization"))
    return view(state_redis(), rec)


@router.delete("/api/requests/{request_id}", summary="Cancel a request (dequeued if waiting, terminated if running)")
def delete_request(request_id: str, request: Request) -> dict[str, Any]:
    load(request_id, request.headers.get("authorization"))
    r = state_redis()
    rec = records.cancel(r, request_id)
    assert rec is not None
    out = view(r, rec)
    out["cancel_requested"] = True
    return out


def _sse(eid: str, kind: str, data: bytes) -> bytes:
    text = data.decode("utf-8", errors="replace")
    lines = "".join(f"data: {line}\n" for line in (text.split("\n") or [""]))
    return f"id: {eid}\nevent: {kind}\n{lines}\n".encode()


def _next_events(request_id: str, after: str) -> list[tuple[str, sink.Message]]:
    return sink.wait_events(waiting_redis(), request_id, after, count=500, block_ms=1000)


async def event_stream(request: Request, request_id: str, after: str) -> AsyncIterator[bytes]:
    """Every event of the request after ``after`` (a stream id), until its terminal one."""
    yield b": stream of request events\n\n"
    while not await request.is_disconnected():
        events = await run_in_threadpool(_next_events, request_id, after)
        for eid, msg in events:
            after = eid
            kind = msg.tags.get("type", "message")
            yield _sse(eid, kind, msg.data)
            if kind in ("result", "error"):
                return
        if not events:
            rec = await run_in_threadpool(records.get, state_redis(), request_id)
            if rec is None or (rec.done and not await run_in_threadpool(_next_events_nonblocking, request_id, after)):
                state = rec.state if rec else "expired"
                yield _sse(after, "end", json.dumps({"state": state}).encode())
                return
        await asyncio.sleep(0)


def _next_events_nonblocking(request_id: str, after: str) -> bool:
    return bool(sink.request_events(state_redis(), request_id, after, count=1))


@router.get(
    "/api/requests/{request_id}/events",
    summary="Server-Sent Events: log, progress, result/error until the request ends",
)
async def request_events(request_id: str, request: Request) -> StreamingResponse:
    await run_in_threadpool(load, request_id, request.headers.get("authorization"))
    after = request.headers.get("last-event-id") or "0-0"
    if not after.replace("-", "").isdigit() or after.count("-") != 1:
        raise HTTPException(400, "Last-Event-ID must be a stream id like 1700000000000-0")
    return StreamingResponse(
        event_stream(request, request_id, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
