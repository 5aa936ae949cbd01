"""The EAS queue-service routes: ``/api/predict/<service>`` (input) and ``/api/predict/<service>/sink`` (output).

Wire-compatible with ``eas_prediction.QueueClient`` (read its ``queue_client.py``): one URL per
queue, the verb and the ``_x_`` query parameters pick the operation, every other query
parameter is a tag. Replies are protobuf (``app.eas.protocol``) unless the client sends
``Accept: application/json``. A put on the input queue goes through :func:`app.queue.put.put`
(record + Celery message, answered only after the broker took it); a put on the output queue
just appends to the sink. Watch (``app.eas.watch``) is a WebSocket sending one ``DataFrameProto`` per message.
"""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response, WebSocket
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from app.api import auth
from app.eas import protocol as eas_proto
from app.queue import put as inqueue, streams as queues, services, output as sink
from app.core import keys
from app.core.connections import endpoints, state_redis, waiting_redis
from app.core.settings import get_settings
from app.core.specs import ServiceSpec

router = APIRouter()

HEADER_UID = "X-EAS-QueueService-Redis-Uid"
HEADER_GID = "X-EAS-QueueService-Redis-Gid"
HEADER_REQUEST_ID = "X-Eas-Queueservice-Request-Id"
PROTOBUF = "application/vnd.google.protobuf"
RETRY_AFTER_S = inqueue.RETRY_AFTER_S


@dataclass(frozen=True)
class Target:
    """The queue a call addresses, and who is calling."""

    spec: ServiceSpec
    queue: queues.StreamQueue
    is_sink: bool
    principal: auth.Principal


SPEC_TTL_S = 1.0
_specs: dict[str, tuple[float, ServiceSpec]] = {}


def cached_spec(name: str) -> ServiceSpec | None:
    """The spec read less than ``SPEC_TTL_S`` ago, if any: puts skip the Redis read and the parse."""
    hit = _specs.get(name)
    return hit[1] if hit and time.monotonic() - hit[0] < SPEC_TTL_S else None


def forget_spec(name: str) -> None:
    _specs.pop(name, None)


def load_spec(name: str) -> ServiceSpec:
    """The deployed spec (cached for up to a second: a redeploy is seen within that), or 404."""
    spec = cached_spec(name)
    if spec is not None:
        return spec
    try:
        spec = services.get(state_redis(), name)
    except services.UnknownService:
        raise HTTPException(404, f"unknown service {name!r}") from None
    _specs[name] = (time.monotonic(), spec)
    return spec


def unknown(what: str, header: str | None) -> HTTPException:
    """404 naming ``what`` for a caller with some valid token, else 401: existence is no oracle for strangers."""
    if auth.valid_anywhere(state_redis(), header, get_settings().admin_token.get_secret_value()):
        return HTTPException(404, what)
    return HTTPException(401, "missing or invalid token")


def authorize(header: str | None, spec: ServiceSpec | None) -> auth.Principal:
    try:
        return auth.authenticate(state_redis(), header, get_settings().admin_token.get_secret_value(), spec)
    except auth.Unauthorized as exc:
        raise HTTPException(401, str(exc)) from None


def tenant_group(t: Target, group: str) -> str:
    """A tenant-bound watcher reads through a consumer group of its tenant's own, so skipping (and
    acknowledging) another tenant's entry never takes it from that tenant's watchers."""
    return f"{group}@tenant:{t.principal.tenant}" if t.principal.tenant else group


def tenant_scope(t: Target, tags: dict[str, str]) -> dict[str, str]:
    """A tenant-bound caller's tag filter: its tenant's entries only (service and admin tokens: unchanged)."""
    return {**tags, "tenant": t.principal.tenant} if t.principal.tenant else tags


def own_indexes(t: Target, indexes: list[int]) -> list[int]:
    """The indexes a tenant-bound caller may act on (commit, delete): its tenant's entries."""
    if not t.principal.tenant:
        return indexes
    return [i for i in indexes if any(m.index == i and m.tags.get("tenant", "default") == t.principal.tenant for m in t.queue.scan(i, 1)[0])]


def whole_queue_only(t: Target, what: str) -> None:
    """403 for a tenant-bound caller on an act over the whole shared queue (truncate, writing to the sink)."""
    if t.principal.tenant:
        raise HTTPException(403, f"{what} acts on every tenant's entries: it needs the service token")


def resolve(service: str, is_sink: bool, authorization: str | None) -> Target:
    """Spec, token check and queue of one call (sync: run it in the thread pool)."""
    try:
        spec = load_spec(service)
    except HTTPException as exc:
        raise unknown(exc.detail, authorization) if exc.status_code == 404 else exc from None
    principal = authorize(authorization, spec)
    r = state_redis()
    w = waiting_redis()
    q = queues.output_queue(r, spec.name, w) if is_sink else queues.input_queue(r, spec.name, w)
    return Target(spec, q, is_sink, principal)


def split_params(params: Any) -> tuple[dict[str, str], dict[str, str]]:
    """(control ``_x_`` parameters, tags) of a query string."""
    control: dict[str, str] = {}
    tags: dict[str, str] = {}
    for k, v in params.items():
        (control if k.startswith("_") and k.endswith("_") and len(k) > 2 else tags)[k] = v
    return control, tags


def int_param(control: dict[str, str], name: str, default: int, low: int = 0, high: int = 2**63 - 1) -> int:
    raw = control.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HTTPException(400, f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise HTTPException(400, f"{name} must be between {low} and {high}, got {value}")
    return value


def bool_param(control: dict[str, str], name: str, default: bool) -> bool:
    raw = control.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() not in ("true", "false", "1", "0"):
        raise HTTPException(400, f"{name} must be true or false, got {raw!r}")
    return raw.lower() in ("true", "1")


def indexes_param(control: dict[str, str]) -> list[int]:
    raw = control.get("_indexes_")
    if not raw:
        raise HTTPException(400, "_indexes_ is required (comma-separated message indexes)")
    try:
        out = [int(x) for x in raw.split(",") if x.strip()]
    except ValueError:
        raise HTTPException(400, f"_indexes_ must be comma-separated integers, got {raw!r}") from None
    if any(i < 0 or i >= 2**63 for i in out):
        raise HTTPException(400, "_indexes_ must be non-negative 64-bit integers")
    return out


def wants_json(request: Request | WebSocket) -> bool:
    return "application/json" in request.headers.get("accept", "")


def frame(msg: sink.Message, index_only: bool = False) -> eas_proto.DataFrame:
    return eas_proto.DataFrame(index=msg.index, tags={} if index_only else msg.tags, data=b"" if index_only else msg.data)


def message_json(msg: sink.Message) -> dict[str, Any]:
    try:
        text: str | None = msg.data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return {"index": msg.index, "tags": msg.tags, "data": text, "data_b64": base64.b64encode(msg.data).decode()}


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise HTTPException(413, f"payload of {int(declared)} bytes is over the service limit of {limit}")
        except ValueError:
            raise HTTPException(400, "Content-Length must be an integer") from None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"payload is over the service limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


# --- put ---------------------------------------------------------------------------------------
def _put(t: Target, payload: bytes, tags: dict[str, str]) -> tuple[int, str]:
    if t.is_sink:
        rid = tags.get("requestId") or uuid.uuid4().hex
        return t.queue.append(payload, {**tags, "requestId": rid}), rid
    spec = t.spec
    tenant = t.principal.tenant or tags.get("tenant") or "default"
    task_type = tags.pop("taskType", None)
    tags.pop("requestId", None)  # ids are ours: a chosen one could overwrite someone else's record
    return inqueue.put(state_redis(), spec, task_type, payload, tags=tags, tenant=tenant, max_waiting=spec.metadata.max_waiting)


async def put(request: Request, service: str, is_sink: bool) -> Response:
    authorization = request.headers.get("authorization")
    # Token, spec and queue first, from the headers alone: an anonymous or wrongly signed upload is
    # refused before a byte of its body is read (60 anonymous 10 MiB uploads cost the API 540 MiB).
    # On a Redis broker that is under a millisecond of blocking work: run it right here. The hop
    # to the thread pool cost more CPU than the put itself (1.6 vs 1.0 ms per put, ~500 vs ~800
    # puts/s). An AMQP publish waits for the broker's confirm, so it keeps to the pool.
    inline = endpoints().broker_is_redis
    t = resolve(service, is_sink, authorization) if inline else await run_in_threadpool(resolve, service, is_sink, authorization)
    if is_sink:
        whole_queue_only(t, "writing to the output queue")  # a tenant could forge another tenant's result
    payload = await read_body(request, t.spec.metadata.max_payload_bytes)  # 413 without reading a body that is too big
    _, tags = split_params(request.query_params)
    try:  # queue-depth check, record, broker publish: ~2 Redis round trips
        index, rid = _put(t, payload, tags) if inline else await run_in_threadpool(_put, t, payload, tags)
    except inqueue.PutError as exc:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        raise HTTPException(exc.status, exc.detail, headers=headers) from None
    headers = {HEADER_REQUEST_ID: rid}
    if wants_json(request):
        return JSONResponse({"index": index, "request_id": rid}, headers=headers)
    return PlainTextResponse(str(index), headers=headers)


# --- get / attributes / search -----------------------------------------------------------------
LONG_POLL_MARGIN_S = 1.0


def long_poll(requested: float) -> float:
    """How long an empty get waits: a margin short of ``_timeout_``.

    Why: the EAS client sends ``_timeout_=5s`` with a 5 s read timeout of its own; held for the
    full 5 s, the answer lands after the client gave up, and it retries 5 times (30 s, then 502).
    Answering ``[]`` up to a second (a fifth of short timeouts) early fits any client whose read
    timeout is at least ``_timeout_``.
    """
    return max(0.0, requested - min(LONG_POLL_MARGIN_S, requested / 5))


def _get(t: Target, control: dict[str, str], tags: dict[str, str], as_json: bool) -> Response:
    if bool_param(control, "_attrs_", False):
        return JSONResponse(t.queue.attributes())
    tags = tenant_scope(t, tags)
    if bool_param(control, "_search_", False):
        index = int_param(control, "_index_", 0, low=1)
        found = t.queue.search(index) if own_indexes(t, [index]) else None
        if found is None:
            raise HTTPException(404, f"no message with index {index} in {t.queue.name}")
        return JSONResponse(found)
    if bool_param(control, "_watch_", False):
        raise HTTPException(400, "_watch_ needs a WebSocket connection (ws://.../api/predict/<queue>?_watch_=true)")
    try:
        timeout = long_poll(queues.parse_timeout(control.get("_timeout_"), default=0.0))
    except ValueError:
        raise HTTPException(400, f"_timeout_ must look like 5s, 500ms or 1m, got {control.get('_timeout_')!r}") from None
    request_id = tags.pop("requestId", None)
    if request_id is not None and not state_redis().exists(keys.request(request_id)):
        timeout = 0.0  # no request has this id: its result can't come, answer [] now (see long_poll)
    msgs = t.queue.get(
        start=int_param(control, "_index_", 0),
        length=int_param(control, "_length_", 1, low=1, high=10_000),
        timeout=timeout,
        auto_delete=bool_param(control, "_auto_delete_", False),
        request_id=request_id,
        tags=tags,
    )
    if as_json:
        return JSONResponse([message_json(m) for m in msgs])
    return Response(eas_proto.encode_list([frame(m) for m in msgs]), media_type=PROTOBUF)


async def get(request: Request, service: str, is_sink: bool) -> Response:
    t = await run_in_threadpool(resolve, service, is_sink, request.headers.get("authorization"))
    control, tags = split_params(request.query_params)
    return await run_in_threadpool(_get, t, control, tags, wants_json(request))


# --- commit / delete / truncate ------------------------------------------------------------------
def _cancel_mirrored(t: Target, indexes: list[int]) -> None:
    """Deleting from the input queue cancels those requests: a deleted task must never run."""
    from app.api.requests import cancel

    for i in indexes:
        for m in t.queue.scan(i, 1)[0]:
            if m.index == i and m.tags.get("requestId"):
                cancel(state_redis(), m.tags["requestId"])


def _delete(t: Target, control: dict[str, str]) -> Response:
    if bool_param(control, "_trunc_", False):
        whole_queue_only(t, "truncate")
        t.queue.truncate(int_param(control, "_index_", 0))
        return PlainTextResponse("OK")
    indexes = own_indexes(t, indexes_param(control))
    if not t.is_sink:
        _cancel_mirrored(t, indexes)
    t.queue.delete(indexes)
    return PlainTextResponse("OK")


async def delete(request: Request, service: str, is_sink: bool) -> Response:
    t = await run_in_threadpool(resolve, service, is_sink, request.headers.get("authorization"))
    control, _ = split_params(request.query_params)
    return await run_in_threadpool(_delete, t, control)


async def commit(request: Request, service: str, is_sink: bool) -> Response:
    t = await run_in_threadpool(resolve, service, is_sink, request.headers.get("authorization"))
    control, _ = split_params(request.query_params)
    group = request.headers.get(HEADER_GID) or "eas"
    indexes = await run_in_threadpool(own_indexes, t, indexes_param(control))
    await run_in_threadpool(t.queue.commit, tenant_group(t, group), indexes)
    return PlainTextResponse("OK")


# --- routes ----------------------------------------------------------------------------------------
def _routes(path: str, is_sink: bool) -> None:
    async def do_put(request: Request, service: str) -> Response:
        if not is_sink:
            from app.eas import predict as api_predict

            if api_predict.is_sync(request):
                return await api_predict.predict(request, service)
        return await put(request, service, is_sink)

    async def do_get(request: Request, service: str) -> Response:
        return await get(request, service, is_sink)

    async def do_commit(request: Request, service: str) -> Response:
        return await commit(request, service, is_sink)

    async def do_delete(request: Request, service: str) -> Response:
        return await delete(request, service, is_sink)

    async def do_watch(websocket: WebSocket, service: str) -> None:
        from app.eas.watch import watch  # it builds on this module's helpers

        await watch(websocket, service, is_sink)

    kind = "output queue" if is_sink else "input queue"
    q = {"in": "query", "required": False, "schema": {"type": "string"}}
    common = [{"name": n, **q} for n in ("_index_", "requestId")]
    docs: dict[str, dict[str, Any]] = {  # the EAS parameters, so the OpenAPI schema (and schemathesis) know them
        "POST": {"parameters": [{"name": n, **q} for n in ("taskType", "tenant", "_sync_", "_timeout_")],
                 "requestBody": {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}},
        "GET": {"parameters": common + [{"name": n, **q} for n in ("_length_", "_timeout_", "_auto_delete_", "_attrs_", "_search_")]},
        "PUT": {"parameters": [{"name": "_indexes_", **q}]},
        "DELETE": {"parameters": [{"name": n, **q} for n in ("_indexes_", "_index_", "_trunc_")]},
    }
    router.add_api_route(path, do_put, methods=["POST"], openapi_extra=docs["POST"], summary=f"put (EAS) on the {kind}", response_class=PlainTextResponse)
    router.add_api_route(path, do_get, methods=["GET"], openapi_extra=docs["GET"], summary=f"get / attributes / search (EAS) on the {kind}")
    router.add_api_route(path, do_commit, methods=["PUT"], openapi_extra=docs["PUT"], summary=f"commit (EAS) on the {kind}", response_class=PlainTextResponse)
    router.add_api_route(path, do_delete, methods=["DELETE"], openapi_extra=docs["DELETE"], summary=f"delete / truncate (EAS) on the {kind}", response_class=PlainTextResponse)
    router.add_api_websocket_route(path, do_watch)


_routes("/api/predict/{service}", is_sink=False)
_routes("/api/predict/{service}/sink", is_sink=True)

