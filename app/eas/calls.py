"""One EAS queue-service call, parsed: its target (spec, queue, principal), its parameters, its body.

Shared by the queue routes (:mod:`app.eas.routes`), the watch (:mod:`app.eas.watch`) and
synchronous predict (:mod:`app.eas.predict`), so none of them imports another; the request
routes of the API use its token checks (:func:`authorize`, :func:`unknown`) too.
"""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request, WebSocket

from app.api import auth
from app.core.connections import state_redis, waiting_redis
from app.core.settings import get_settings
from app.core.specs import ServiceSpec
from app.eas import protocol as eas_proto
from app.queue import output as sink
from app.queue import put as inqueue
from app.queue import services
from app.queue import streams as queues

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
    return [
        i
        for i in indexes
        if any(m.index == i and m.tags.get("tenant", "default") == t.principal.tenant for m in t.queue.scan(i, 1)[0])
    ]


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
    return eas_proto.DataFrame(
        index=msg.index, tags={} if index_only else msg.tags, data=b"" if index_only else msg.data
    )


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
                raise HTTPException(413, inqueue.too_big(int(declared), limit))
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
    """A put on the target's queue of a body :func:`read_body` read (the sink: an output message)."""
    if t.is_sink:
        rid = tags.get("requestId") or uuid.uuid4().hex
        return t.queue.append(payload, {**tags, "requestId": rid}), rid
    spec = t.spec
    tenant = t.principal.tenant or tags.get("tenant") or "default"
    task_type = tags.pop("taskType", None)
    tags.pop("requestId", None)  # ids are ours: a chosen one could overwrite someone else's record
    # the spec came with the target and read_body refused an over-limit body: put() checks neither again
    return inqueue.put(
        state_redis(),
        spec,
        task_type,
        payload,
        tags=tags,
        tenant=tenant,
        max_waiting=spec.metadata.max_waiting,
        size_checked=True,
    )
