"""Putting work on a service's input queue (the one path the API, SDK, CLI and demo share).

A put writes the request record first, then publishes the Celery message, and returns only
after the broker accepted it (kombu's publish is synchronous; RabbitMQ publisher confirms are
on), so an answered put is a durable task. The input index comes from a per-service counter,
and the put is announced on a pub/sub channel so an autoscaler at zero workers wakes at once.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import redis
from kombu.exceptions import OperationalError

from app.core import keys
from app.core.connections import endpoints
from app.core.settings import get_settings
from app.core.specs import ServiceSpec
from app.queue import depth, memory, messages, records, scripts, tenants

RETRY_AFTER_S = 2
PUT = scripts.load("put")  # checks, input-queue mirror, record and message copy: lua/put.lua


class PutError(ValueError):
    """A put that must be refused; ``status`` is the HTTP status that says why."""

    def __init__(self, status: int, detail: str, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.retry_after = status, detail, retry_after


def put(
    r: redis.Redis,
    spec: ServiceSpec,
    task_type: str | None,
    payload: bytes,
    tags: dict[str, str] | None = None,
    tenant: str = "default",
    request_id: str | None = None,
    max_waiting: int | None = None,
    *,
    size_checked: bool = False,
) -> tuple[int, str]:
    """Enqueue one task for ``spec``; returns ``(index, request_id)`` like EAS ``put``.

    ``max_waiting``: refuse with 429 when that many tasks already wait on the service's queue.
    ``size_checked``: the caller refused an over-limit payload already (the HTTP routes do, while
    reading the body: ``app.eas.calls.read_body``), so the size is checked once per put.
    Checks, input-queue mirror, record and message copy are one Lua script (one round trip when
    the broker is the state Redis); then one publish, then the wake-up announcement.
    """
    task_type = _task_type(spec, task_type)
    if not size_checked and len(payload) > spec.metadata.max_payload_bytes:
        raise PutError(413, too_big(len(payload), spec.metadata.max_payload_bytes))
    if (why := memory.refusal(r)) is not None:
        raise PutError(507, why, RETRY_AFTER_S)
    depth_keys = _depth_keys(spec, max_waiting)
    try:
        queue = tenants.queue_for(r, spec, tenant)  # fair sharing: one Celery queue per tenant
    except tenants.TenantError as exc:
        raise PutError(exc.status, exc.detail) from None
    request_id = request_id or uuid.uuid4().hex
    msg = messages.for_request(spec.name, task_type, request_id, payload, queue)
    # the input-queue mirror (EAS get/watch/attributes on <service>) hands out the index
    # the API filters on "tenant"
    mirror_tags = {**(tags or {}), "requestId": request_id, "taskType": task_type, "tenant": tenant}
    record = records.new_fields(request_id, spec.name, task_type, tenant, None, tags, time.time())
    index = _write(r, spec, msg, payload, mirror_tags, record, depth_keys, max_waiting or 0)
    try:
        messages.send(msg, task_id=request_id)
    except (OperationalError, OSError, redis.RedisError) as exc:  # the broker did not take it: the put did not happen
        _undo(r, spec.name, request_id, index)
        detail = f"the broker is unavailable ({type(exc).__name__}); the task was not queued, retry later"
        raise PutError(503, detail, RETRY_AFTER_S) from None
    r.publish(keys.enqueue_channel(), spec.name)  # wakes the autoscaler at once (listen)
    return index, request_id


def too_big(size: int, limit: int) -> str:
    """Why a payload of ``size`` bytes is refused (HTTP 413), here and where the API reads a body."""
    return f"payload of {size} bytes is over the service limit of {limit}"


def _task_type(spec: ServiceSpec, task_type: str | None) -> str:
    """The task type a put asked for, checked against the spec (400 when missing or not accepted)."""
    allowed = spec.allowed_task_types()
    if not task_type and len(allowed) == 1:
        # Unambiguous: EAS asynchronous-inference clients put with no taskType at all.
        task_type = allowed[0]
    if not task_type:
        raise PutError(400, f"taskType is required: service {spec.name} accepts {' or '.join(allowed)}")
    if task_type not in allowed:
        raise PutError(400, f"taskType {task_type!r} is not accepted by service {spec.name}: use one of {allowed}")
    return task_type


def _depth_keys(spec: ServiceSpec, max_waiting: int | None) -> list[str]:
    """The broker lists the put script counts against ``max_waiting`` (none: checked here, or no limit)."""
    if max_waiting is None:
        return []
    if endpoints().broker_url == endpoints().redis_url:  # same Redis: check depth inside the script
        return depth.redis_queue_keys(keys.celery_queue(spec.name))
    if depth.waiting(spec.name) >= max_waiting:
        raise _full(spec, max_waiting)
    return []


def _write(
    r: redis.Redis,
    spec: ServiceSpec,
    msg: messages.TaskMessage,
    payload: bytes,
    mirror_tags: dict[str, str],
    record: dict[str, str],
    depth_keys: list[str],
    max_waiting: int,
) -> int:
    """Run the put script (``lua/put.lua``); returns the input index, or raises its refusal."""
    request_id, settings = record["id"], get_settings()
    ks = [
        keys.service_deleting(spec.name),
        keys.input_stream(spec.name),
        keys.input_seq(spec.name),
        keys.request(request_id),
        keys.requests_index(spec.name),
        *depth_keys,
    ]
    args: list[Any] = [
        max_waiting,
        settings.sink_maxlen,
        payload,
        json.dumps(mirror_tags),
        settings.record_ttl,
        record["queued_at"],
        msg.to_json(),
        request_id,
        *[x for kv in record.items() for x in kv],
    ]
    out = PUT(keys=ks, args=args, client=r)
    if out[0] == -2:
        raise _full(spec, max_waiting)
    if out[0] == -1:
        raise PutError(404, f"service {spec.name} is being deleted: it takes no new tasks")
    return int(out[0])


def _undo(r: redis.Redis, service: str, request_id: str, index: int) -> None:
    """Take back what the put script wrote, so no record waits ``queued`` for a message that was never sent."""
    with r.pipeline(transaction=True) as p:
        p.delete(keys.request(request_id))
        p.zrem(keys.requests_index(service), request_id)
        p.xdel(keys.input_stream(service), f"0-{index}")
        p.execute()


def _full(spec: ServiceSpec, max_waiting: int) -> PutError:
    return PutError(429, f"service {spec.name} has {max_waiting} or more waiting tasks; retry later", RETRY_AFTER_S)


def listen(pubsub: redis.client.PubSub) -> None:
    """Subscribe to put announcements: the autoscaler ticks at once when work arrives."""
    pubsub.subscribe(keys.enqueue_channel())
