"""The Celery message of a request: built here once, stored in its record, sent by a put, re-sent by recovery.

Why one place: the message a put publishes and the copy recovery re-enqueues after a worker died
must be the same message (task name, keyword arguments, queue), or a recovered request would run
differently from its first delivery. The record keeps it as JSON (``records.message``), and the
tasks in ``workers/tasks.py`` accept keyword arguments only, so any Celery client can send one.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from app.core.celery_app import celery_app


@dataclass(frozen=True)
class TaskMessage:
    """What Celery is asked to send: ``send_task(task, kwargs=kwargs, queue=queue)``."""

    task: str
    kwargs: dict[str, Any]
    queue: str

    def to_json(self) -> str:
        """The copy a record keeps (``records.message`` reads it back as a dict)."""
        return json.dumps({"task": self.task, "kwargs": self.kwargs, "queue": self.queue})

    @classmethod
    def from_stored(cls, stored: dict[str, Any]) -> TaskMessage:
        return cls(stored["task"], stored["kwargs"], stored["queue"])


def payload_kwargs(payload: bytes) -> dict[str, str | None]:
    """JSON-safe task arguments for a byte payload: text when it is UTF-8, else base64."""
    try:
        return {"payload": payload.decode("utf-8"), "payload_b64": None}
    except UnicodeDecodeError:
        return {"payload": None, "payload_b64": base64.b64encode(payload).decode()}


def for_request(service: str, task_type: str, request_id: str, payload: bytes, queue: str) -> TaskMessage:
    """The message of one request: task ``scalejob.<task_type>`` on ``queue`` (the tenant's)."""
    kwargs = {"service": service, "request_id": request_id, **payload_kwargs(payload)}
    return TaskMessage(f"scalejob.{task_type}", kwargs, queue)


def send(msg: TaskMessage, task_id: str | None = None) -> None:
    """Publish ``msg``; returns once the broker has it (kombu's publish is synchronous).

    ``task_id``: the Celery task id (a put uses the request id; a re-send lets Celery pick one).
    """
    celery_app.send_task(msg.task, kwargs=msg.kwargs, queue=msg.queue, task_id=task_id)
