"""Synchronous predict on a query service: ``POST /api/predict/<service>`` answered with the user app's reply.

Why: ``eas_prediction.PredictClient`` (with ``StringRequest`` and the like) is the EAS client for
synchronous services: it POSTs the body to the same URL as a queue put and expects the model's
answer back, not a queue index. A call is synchronous when it has ``?_sync_=true``, or when it
comes the way ``PredictClient`` sends it, which has no flag of its own (``predict_client.py``):

- ``Authorization: EAS <signature>`` with ``Content-MD5`` and ``Date`` (``set_token`` +
  the default endpoint): HMAC-SHA1, keyed by the token, of
  ``"POST\\n<md5 hex>\\n<Content-Type>\\n<Date>\\n/api/predict/<service>"``, base64;
- a raw ``Authorization: <token>`` with a ``Date`` header and no ``X-EAS-QueueService-Redis-Uid``
  (``PredictClient`` with a ``custom_url``). ``QueueClient`` always sends that Uid header, so its
  puts stay asynchronous.

The request is enqueued like any put (record, Celery message, input-queue mirror), then the
terminal event of the request is awaited up to ``_timeout_`` (default :data:`SYNC_TIMEOUT_S`).
The answer is the app's body and status code. On timeout: 202 with the request id (the work goes
on; the result lands in the sink and the record). A client that goes away cancels nothing.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import time
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers

from app.api import auth
from app.core.connections import state_redis, waiting_redis
from app.core.settings import get_settings
from app.core.specs import ServiceSpec
from app.eas.calls import (
    HEADER_REQUEST_ID,
    HEADER_UID,
    Target,
    _put,
    authorize,
    bool_param,
    cached_spec,
    load_spec,
    read_body,
    split_params,
)
from app.queue import output as sink
from app.queue import put as inqueue
from app.queue import services
from app.queue import streams as queues

SYNC_TIMEOUT_S = 60.0
MAX_CLOCK_SKEW_S = 15 * 3600  # PredictClient writes local time labelled GMT: allow any time zone
HEADER_INDEX = "X-Scalejob-Queue-Index"


def is_sync(request: Request) -> bool:
    """Whether this POST on an input queue is a synchronous predict (see the module docstring)."""
    control, _ = split_params(request.query_params)
    if bool_param(control, "_sync_", False):
        return True
    h = request.headers
    return (h.get("authorization") or "")[:4] == "EAS " or ("date" in h and HEADER_UID not in h)


def _signed_by(token: str | None, string_to_sign: str, signature: str) -> bool:
    if not token:
        return False
    mac = hmac.new(token.encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha1).digest()
    return hmac.compare_digest(base64.b64encode(mac).decode(), signature)


def authorize_signed(headers: Headers, spec: ServiceSpec, body: bytes) -> auth.Principal:
    """The principal of a ``PredictClient`` call, signed (``EAS <sig>``) or with the token itself.

    A signature can only be checked against tokens known in clear: the admin token and the spec's
    ``metadata.token``. Issued tokens are stored as digests; their holders send the token itself.
    """
    header = headers.get("authorization") or ""
    if header[:4] != "EAS ":
        return authorize(header, spec)
    md5 = headers.get("content-md5") or ""
    if not hmac.compare_digest(md5, hashlib.md5(body).hexdigest()):  # noqa: S324 - the client's choice, not ours
        raise HTTPException(401, "Content-MD5 is missing or does not match the body")
    date = headers.get("date") or ""
    try:
        skew = abs(email.utils.parsedate_to_datetime(date).timestamp() - time.time())
    except (TypeError, ValueError):
        raise HTTPException(401, "a signed request needs a Date header (RFC 1123)") from None
    if skew > MAX_CLOCK_SKEW_S:
        raise HTTPException(401, "the Date of a signed request is too far from now")
    string_to_sign = f"POST\n{md5}\n{headers.get('content-type') or ''}\n{date}\n/api/predict/{spec.name}".strip()
    signature = header[4:].strip()
    if _signed_by(get_settings().admin_token.get_secret_value(), string_to_sign, signature):
        return auth.Principal(admin=True)
    if _signed_by(services.token(state_redis(), spec.name), string_to_sign, signature):
        return auth.Principal(admin=False, service=spec.name)
    raise HTTPException(401, f"invalid signature for service {spec.name} "
                             "(sign with the service's metadata.token, or send the token itself)")


def _terminal_event(request_id: str, after: str, block_ms: int) -> tuple[str, sink.Message | None]:
    """The request's result/error event after stream id ``after``, waiting up to ``block_ms``."""
    for eid, msg in sink.wait_events(waiting_redis(), request_id, after, count=100, block_ms=block_ms):
        after = eid
        if msg.tags.get("type") in ("result", "error"):
            return after, msg
    return after, None


async def wait_result(request: Request, request_id: str, timeout: float) -> sink.Message | None:
    """The request's terminal event, or None on timeout or when the client left (nothing is cancelled)."""
    deadline, after = time.monotonic() + timeout, "0-0"
    while (left := deadline - time.monotonic()) > 0:
        after, msg = await run_in_threadpool(_terminal_event, request_id, after, int(min(left, 1.0) * 1000))
        if msg is not None:
            return msg
        if await request.is_disconnected():
            return None
    return None


def answer(msg: sink.Message, headers: dict[str, str]) -> Response:
    """The user app's body and status code; scalejob's own failure (app unreachable, cancelled) as JSON."""
    code = msg.tags.get("statusCode", "")
    if code.isdigit() and 100 <= int(code) <= 599:
        return Response(msg.data, status_code=int(code), headers=headers, media_type="application/octet-stream")
    state = msg.tags.get("state", "failed")
    detail: dict[str, Any] = {"detail": msg.data.decode("utf-8", errors="replace"), "state": state}
    return JSONResponse(detail, status_code=409 if state == "cancelled" else 502, headers=headers)


async def predict(request: Request, service: str) -> Response:
    """``POST /api/predict/<service>`` answered synchronously (see the module docstring)."""
    spec = cached_spec(service)
    if spec is None:
        spec = await run_in_threadpool(load_spec, service)
    payload = await read_body(request, spec.metadata.max_payload_bytes)
    control, tags = split_params(request.query_params)
    try:
        timeout = queues.parse_timeout(control.get("_timeout_"), default=SYNC_TIMEOUT_S)
    except ValueError:
        shown = control.get("_timeout_")
        raise HTTPException(400, f"_timeout_ must look like 5s, 500ms or 1m, got {shown!r}") from None
    principal = await run_in_threadpool(authorize_signed, request.headers, spec, payload)
    tags["taskType"] = tags.get("taskType") or "query"
    if tags["taskType"] != "query" or "query" not in spec.allowed_task_types():
        raise HTTPException(400, "synchronous predict runs query tasks; "
                                 f"service {spec.name} accepts {spec.allowed_task_types()}")
    target = Target(spec, queues.input_queue(state_redis(), spec.name), False, principal)
    try:
        index, rid = await run_in_threadpool(_put, target, payload, tags)
    except inqueue.PutError as exc:
        retry = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        raise HTTPException(exc.status, exc.detail, headers=retry) from None
    headers = {HEADER_REQUEST_ID: rid, HEADER_INDEX: str(index)}
    msg = await wait_result(request, rid, timeout)
    if msg is None:
        detail = (f"no result within {timeout:g}s; the request goes on: GET /api/requests/{rid}, "
                  f"or get requestId={rid} on the sink")
        return JSONResponse({"detail": detail, "request_id": rid, "index": index}, status_code=202, headers=headers)
    return answer(msg, headers)
