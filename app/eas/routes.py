"""The EAS queue-service routes: ``/api/predict/<service>`` (input) and ``/api/predict/<service>/sink`` (output).

Wire-compatible with ``eas_prediction.QueueClient`` (read its ``queue_client.py``): one URL per
queue, the verb and the ``_x_`` query parameters pick the operation, every other query
parameter is a tag. Replies are protobuf (``app.eas.protocol``) unless the client sends
``Accept: application/json``. A put on the input queue goes through :func:`app.queue.put.put`
(record + Celery message, answered only after the broker took it); a put on the output queue
just appends to the sink. Watch (``app.eas.watch``) is a WebSocket sending one ``DataFrameProto`` per message.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response, WebSocket
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from app.core.connections import endpoints, state_redis
from app.eas import predict as api_predict
from app.eas import protocol as eas_proto
from app.eas.calls import (
    HEADER_GID,
    HEADER_REQUEST_ID,
    PROTOBUF,
    Target,
    _put,
    bool_param,
    frame,
    indexes_param,
    int_param,
    message_json,
    own_indexes,
    read_body,
    resolve,
    split_params,
    tenant_group,
    tenant_scope,
    wants_json,
    whole_queue_only,
)
from app.eas.watch import watch
from app.queue import put as inqueue
from app.queue import records
from app.queue import streams as queues

router = APIRouter()

async def put(request: Request, service: str, is_sink: bool) -> Response:
    authorization = request.headers.get("authorization")
    # Token, spec and queue first, from the headers alone: an anonymous or wrongly signed upload is
    # refused before a byte of its body is read (60 anonymous 10 MiB uploads cost the API 540 MiB).
    # On a Redis broker that is under a millisecond of blocking work: run it right here. The hop
    # to the thread pool cost more CPU than the put itself (1.6 vs 1.0 ms per put, ~500 vs ~800
    # puts/s). An AMQP publish waits for the broker's confirm, so it keeps to the pool.
    inline = endpoints().broker_is_redis
    if inline:
        t = resolve(service, is_sink, authorization)
    else:
        t = await run_in_threadpool(resolve, service, is_sink, authorization)
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
        shown = control.get("_timeout_")
        raise HTTPException(400, f"_timeout_ must look like 5s, 500ms or 1m, got {shown!r}") from None
    request_id = tags.pop("requestId", None)
    if request_id is not None and not records.exists(state_redis(), request_id):
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
    for i in indexes:
        for m in t.queue.scan(i, 1)[0]:
            if m.index == i and m.tags.get("requestId"):
                records.cancel(state_redis(), m.tags["requestId"])


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
        if not is_sink and api_predict.is_sync(request):
            return await api_predict.predict(request, service)
        return await put(request, service, is_sink)

    async def do_get(request: Request, service: str) -> Response:
        return await get(request, service, is_sink)

    async def do_commit(request: Request, service: str) -> Response:
        return await commit(request, service, is_sink)

    async def do_delete(request: Request, service: str) -> Response:
        return await delete(request, service, is_sink)

    async def do_watch(websocket: WebSocket, service: str) -> None:
        await watch(websocket, service, is_sink)

    kind = "output queue" if is_sink else "input queue"
    q = {"in": "query", "required": False, "schema": {"type": "string"}}
    common = [{"name": n, **q} for n in ("_index_", "requestId")]
    docs: dict[str, dict[str, Any]] = {  # the EAS parameters, so the OpenAPI schema (and schemathesis) know them
        "POST": {"parameters": [{"name": n, **q} for n in ("taskType", "tenant", "_sync_", "_timeout_")],
                 "requestBody": {"content": {"application/octet-stream": {
                     "schema": {"type": "string", "format": "binary"}}}}},
        "GET": {"parameters": common + [{"name": n, **q}
                                        for n in ("_length_", "_timeout_", "_auto_delete_", "_attrs_", "_search_")]},
        "PUT": {"parameters": [{"name": "_indexes_", **q}]},
        "DELETE": {"parameters": [{"name": n, **q} for n in ("_indexes_", "_index_", "_trunc_")]},
    }
    text = PlainTextResponse
    router.add_api_route(path, do_put, methods=["POST"], openapi_extra=docs["POST"],
                         summary=f"put (EAS) on the {kind}", response_class=text)
    router.add_api_route(path, do_get, methods=["GET"], openapi_extra=docs["GET"],
                         summary=f"get / attributes / search (EAS) on the {kind}")
    router.add_api_route(path, do_commit, methods=["PUT"], openapi_extra=docs["PUT"],
                         summary=f"commit (EAS) on the {kind}", response_class=text)
    router.add_api_route(path, do_delete, methods=["DELETE"], openapi_extra=docs["DELETE"],
                         summary=f"delete / truncate (EAS) on the {kind}", response_class=text)
    router.add_api_websocket_route(path, do_watch)


_routes("/api/predict/{service}", is_sink=False)
_routes("/api/predict/{service}/sink", is_sink=True)

