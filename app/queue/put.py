"""Putting work on a service's input queue (the one path the API, SDK, CLI and demo share).

A put writes the request record first, then publishes the Celery message, and returns only
after the broker accepted it (kombu's publish is synchronous; RabbitMQ publisher confirms are
on), so an answered put is a durable task. The input index comes from a per-service counter,
and the put is announced on a pub/sub channel so an autoscaler at zero workers wakes at once.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import redis
from kombu.exceptions import OperationalError

from app.core import keys, replies
from app.core.connections import endpoints
from app.core.settings import get_settings
from app.core.specs import ServiceSpec
from app.queue import depth, memory, records, tenants

RETRY_AFTER_S = 2


class PutError(ValueError):
    """A put that must be refused; ``status`` is the HTTP status that says why."""

    def __init__(self, status: int, detail: str, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.retry_after = status, detail, retry_after


def payload_kwargs(payload: bytes) -> dict[str, str | None]:
    """JSON-safe task arguments for a byte payload: text when it is UTF-8, else base64."""
    try:
        return {"payload": payload.decode("utf-8"), "payload_b64": None}
    except UnicodeDecodeError:
        return {"payload": None, "payload_b64": base64.b64encode(payload).decode()}


# KEYS: deleting flag, input-queue stream, its counter, record, request index, then the broker's
# lists of the service queue (none: no depth check). ARGV: max waiting, mirror cap, payload,
# mirror tags JSON, record ttl, now, message JSON, request id, then the new record's fields.
# Returns {index}, {-1, mode} while the service is being deleted, {-2} when the queue is full.
_PUT = """
if #KEYS > 5 then
  local n = 0
  for j = 6, #KEYS do n = n + redis.call('LLEN', KEYS[j]) end
  if n >= tonumber(ARGV[1]) then return {-2} end
end
local deleting = redis.call('GET', KEYS[1])
if deleting then return {-1, deleting} end
local i = redis.call('INCR', KEYS[3])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '0-' .. i, 'data', ARGV[3], 'tags', ARGV[4])
redis.call('HSET', KEYS[4], 'index', i, 'message', ARGV[7], unpack(ARGV, 9))
redis.call('EXPIRE', KEYS[4], ARGV[5])
redis.call('ZADD', KEYS[5], ARGV[6], ARGV[8])
return {i}
"""
PUT = replies.script(_PUT.encode())


def put(
    r: redis.Redis,
    spec: ServiceSpec,
    task_type: str | None,
    payload: bytes,
    tags: dict[str, str] | None = None,
    tenant: str = "default",
    request_id: str | None = None,
    max_waiting: int | None = None,
) -> tuple[int, str]:
    """Enqueue one task for ``spec``; returns ``(index, request_id)`` like EAS ``put``.

    ``max_waiting``: refuse with 429 when that many tasks already wait on the service's queue.
    Checks, input-queue mirror, record and message copy are one Lua script (one round trip when
    the broker is the state Redis); then one publish, then the wake-up announcement.
    """
    allowed = spec.allowed_task_types()
    if not task_type and len(allowed) == 1:
        # Unambiguous: EAS asynchronous-inference clients put with no taskType at all.
        task_type = allowed[0]
    if not task_type:
        raise PutError(400, f"taskType is required: service {spec.name} accepts {' or '.join(allowed)}")
    if task_type not in allowed:
        raise PutError(400, f"taskType {task_type!r} is not accepted by service {spec.name}: use one of {allowed}")
    if len(payload) > spec.metadata.max_payload_bytes:
        raise PutError(413, f"payload of {len(payload)} bytes is over the service limit of {spec.metadata.max_payload_bytes}")
    if (why := memory.refusal(r)) is not None:
        raise PutError(507, why, RETRY_AFTER_S)
    depth_keys: list[str] = []
    if max_waiting is not None:
        if endpoints().broker_url == endpoints().redis_url:  # same Redis: check depth inside the script
            depth_keys = depth.redis_queue_keys(keys.celery_queue(spec.name))
        elif depth.waiting(spec.name) >= max_waiting:
            raise _full(spec, max_waiting)
    try:
        queue = tenants.queue_for(r, spec, tenant)  # fair sharing: one Celery queue per tenant
    except tenants.TenantError as exc:
        raise PutError(exc.status, exc.detail) from None
    request_id = request_id or uuid.uuid4().hex
    # the input-queue mirror (EAS get/watch/attributes on <service>) hands out the index
    mirror_tags = {**(tags or {}), "requestId": request_id, "taskType": task_type, "tenant": tenant}  # tenant: the API filters on it
    kwargs = {"service": spec.name, "request_id": request_id, **payload_kwargs(payload)}
    task = f"scalejob.{task_type}"
    now = time.time()
    settings = get_settings()
    fields = [x for kv in records.new_fields(request_id, spec.name, task_type, tenant, None, tags, now).items() for x in kv]
    ks = [keys.service_deleting(spec.name), keys.input_stream(spec.name), keys.input_seq(spec.name), keys.request(request_id),
          keys.requests_index(spec.name), *depth_keys]
    args: list[Any] = [max_waiting or 0, settings.sink_maxlen, payload, json.dumps(mirror_tags), settings.record_ttl, f"{now:.6f}",
            json.dumps({"task": task, "kwargs": kwargs, "queue": queue}), request_id, *fields]
    out = PUT(keys=ks, args=args, client=r)
    if out[0] == -2:
        raise _full(spec, max_waiting or 0)
    if out[0] == -1:
        raise PutError(404, f"service {spec.name} is being deleted: it takes no new tasks")
    try:
        publish(task, kwargs, queue, request_id)
    except (OperationalError, OSError, redis.RedisError) as exc:  # the broker did not take it: the put did not happen
        _undo(r, spec.name, request_id, int(out[0]))
        raise PutError(503, f"the broker is unavailable ({type(exc).__name__}); the task was not queued, retry later", RETRY_AFTER_S) from None
    r.publish(keys.enqueue_channel(), spec.name)
    return int(out[0]), request_id


def _undo(r: redis.Redis, service: str, request_id: str, index: int) -> None:
    """Take back what the put script wrote, so no record waits ``queued`` for a message that was never sent."""
    with r.pipeline(transaction=True) as p:
        p.delete(keys.request(request_id))
        p.zrem(keys.requests_index(service), request_id)
        p.xdel(keys.input_stream(service), f"0-{index}")
        p.execute()


def _full(spec: ServiceSpec, max_waiting: int) -> PutError:
    return PutError(429, f"service {spec.name} has {max_waiting} or more waiting tasks; retry later", RETRY_AFTER_S)


def publish(task: str, kwargs: dict[str, Any], queue: str, task_id: str) -> None:
    """Publish the Celery message; returns once the broker has it (kombu publish is synchronous)."""
    from app.core.celery_app import celery_app

    celery_app.send_task(task, kwargs=kwargs, queue=queue, task_id=task_id)
