"""Putting work on a service's input queue (the one path the API, SDK, CLI and demo share).

A put writes the request record first, then publishes the Celery message, and returns only
after the broker accepted it (kombu's publish is synchronous; RabbitMQ publisher confirms are
on), so an answered put is a durable task. The input index comes from a per-service counter,
and the put is announced on a pub/sub channel so an autoscaler at zero workers wakes at once.
"""

from __future__ import annotations

import base64
import uuid

import redis

from app import keys, queues, records, services, tenants
from app.specs import ServiceSpec

TASK_TYPES = ("command", "query")


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


def put(
    r: redis.Redis,
    spec: ServiceSpec,
    task_type: str | None,
    payload: bytes,
    tags: dict[str, str] | None = None,
    tenant: str = "default",
    request_id: str | None = None,
) -> tuple[int, str]:
    """Enqueue one task for ``spec``; returns ``(index, request_id)`` like EAS ``put``."""
    from app.celery_app import celery_app

    if not task_type:
        raise PutError(400, "taskType is required (query or command)")
    if task_type not in spec.allowed_task_types():
        raise PutError(400, f"taskType {task_type!r} is not accepted by service {spec.name}: use one of {spec.allowed_task_types()}")
    if len(payload) > spec.metadata.max_payload_bytes:
        raise PutError(413, f"payload of {len(payload)} bytes is over the service limit of {spec.metadata.max_payload_bytes}")
    if services.deleting(r, spec.name):
        raise PutError(404, f"service {spec.name} is being deleted: it takes no new tasks")
    try:
        queue = tenants.queue_for(r, spec, tenant)  # fair sharing: one Celery queue per tenant
    except tenants.TenantError as exc:
        raise PutError(exc.status, exc.detail) from None
    request_id = request_id or uuid.uuid4().hex
    # the input-queue mirror (EAS get/watch/attributes on <service>) hands out the index
    mirror_tags = {**(tags or {}), "requestId": request_id, "taskType": task_type}
    index = queues.input_queue(r, spec.name).append(payload, mirror_tags)
    kwargs = {"service": spec.name, "request_id": request_id, **payload_kwargs(payload)}
    task = f"scalejob.{task_type}"
    records.create(r, request_id, spec.name, task_type, tenant=tenant, index=index, tags=tags)
    records.remember_message(r, request_id, task, kwargs, queue)
    celery_app.send_task(task, kwargs=kwargs, queue=queue, task_id=request_id)
    r.publish(keys.enqueue_channel(), spec.name)
    return index, request_id
