"""A task's bookkeeping in two Redis round trips: one script when it starts, one when it ends.

Why: a no-op task used to pay 7 round trips (record check, record/message copy, lease, registry,
finish, event, sink, release), most of the per-task cost next to a bare Celery task. The scripts
(``app/queue/lua/task_*.lua``) only compose the Lua functions of the keys' owners
(``app/queue/lua/lib/``: the record's start/finish/stale/release, the output queue's emit, the run
times' record_run), so the guards are the same code: a duplicate delivery is refused while a
lease is alive, and a terminal record never moves back.

* :func:`begin`: create the record if the task came straight through Celery, keep the message
  copy recovery needs, take the lease, mark it running, add it to the worker's task set.
* :func:`end`: move the record to its terminal state, emit the terminal event (per-request
  stream and output queue), and, for the lease holder, release the lease and leave the task set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis

from app.core import keys
from app.core.settings import get_settings
from app.queue import output as sink
from app.queue import records, run_times, scripts
from app.queue.messages import TaskMessage
from app.queue.records import RequestState

log = logging.getLogger(__name__)

# The task scripts (app/queue/lua/task_*.lua) include the record's, the output queue's and the run
# times' Lua functions from app/queue/lua/lib/; each file documents its KEYS, ARGV and reply.
BEGIN, END = scripts.load("task_begin"), scripts.load("task_end")
PROGRESS, LOG = scripts.load("task_progress"), scripts.load("task_log")
STALE = -2


@dataclass(frozen=True)
class Begun:
    """What :func:`begin` found: ``status`` is one of ``records.STARTED/DUPLICATE/FINISHED_OR_CANCELLED``."""

    status: int
    epoch: str = ""  # STARTED: this delivery's fencing token (the record's attempts)
    tenant: str = "default"  # STARTED: the request's tenant (its output-queue events carry it)
    holder: str = ""  # DUPLICATE: who holds the lease
    state: str = ""  # FINISHED_OR_CANCELLED: the record's state
    cancel_requested: bool = False


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def begin(
    r: redis.Redis,
    request_id: str,
    service: str,
    kind: str,
    worker: str,
    registry_name: str,
    message: TaskMessage,
    now: float,
) -> Begun:
    """Start a delivery of ``request_id`` on ``worker`` (one round trip; two for a Celery task without a record)."""
    s = get_settings()
    ks = [
        keys.request(request_id),
        keys.request_lease(request_id),
        keys.running(),
        keys.worker_tasks(registry_name),
        keys.requests_index(service),
    ]
    fields = [x for kv in records.new_fields(request_id, service, kind, now=now).items() for x in kv]
    head: list[str | int] = [
        worker,
        f"{now:.6f}",
        s.record_ttl,
        int(s.heartbeat_ttl * 1000),
        request_id,
        int(s.heartbeat_ttl) + 1,
    ]
    out = BEGIN(keys=ks, args=[*head, "", *fields], client=r)
    if out[0] == 2:  # sent straight through Celery: keep what recovery needs to enqueue it again
        out = BEGIN(keys=ks, args=[*head, message.to_json(), *fields], client=r)
    status = int(out[0])
    if status == records.DUPLICATE:
        return Begun(status, holder=_s(out[1]))
    if status == records.FINISHED_OR_CANCELLED:
        return Begun(status, state=_s(out[1]), cancel_requested=_s(out[2]) == "1")
    return Begun(status, epoch=_s(out[1]), tenant=_s(out[2])) if status == records.STARTED else Begun(status)


def end(
    r: redis.Redis, service: str, request_id: str, state: str, data: bytes, result: Any, error: str | None,
    tags: dict[str, str], worker: str = "", registry_name: str = "", epoch: str = "",
) -> tuple[bool, str]:
    """Finish ``request_id`` and emit its terminal event; with ``worker``, also release its lease.

    With ``epoch`` the write is fenced: a delivery whose request started again since (its lease
    expired during a partition) is refused, counted, and changes nothing.
    Returns (whether this call moved the record to ``state``, the record's state afterwards; ``stale``
    when refused).
    """
    kind = "result" if state == RequestState.SUCCEEDED else "error"
    e_keys = sink.emit_keys(service, request_id)
    data_, tags_json, ttl, to_sink, cap = sink.emit_args(request_id, kind, data, {"state": state, **tags}, True)
    ks = [
        keys.request(request_id),
        *e_keys,
        keys.request_lease(request_id),
        keys.running(),
        keys.worker_tasks(registry_name or worker),
        keys.stale_writes(),
        keys.run_times(service),
    ]
    args = [
        state,
        ttl,
        request_id,
        worker,
        data_,
        tags_json,
        to_sink,
        cap,
        epoch,
        run_times.KEPT,
        *records.finish_fields(state, result, error),
    ]
    moved, final = END(keys=ks, args=args, client=r)
    if moved == STALE:
        log.warning(
            "request %s: stale outcome %r of epoch %s refused (the current epoch is %s)",
            request_id,
            state,
            epoch,
            _s(final),
        )
        return False, "stale"
    return bool(moved), _s(final)


def progress(
    r: redis.Redis, service: str, request_id: str, value: float, to_sink: bool, epoch: str = "", tenant: str = "default"
) -> bool:
    """Record a running request's progress and emit it as a ``progress`` event (one round trip); False if stale."""
    args = [
        *sink.emit_args(request_id, "progress", f"{value:g}".encode(), {"tenant": tenant}, to_sink),
        f"{max(0.0, min(100.0, value)):g}",
        epoch,
    ]
    out = PROGRESS(
        keys=[*sink.emit_keys(service, request_id), keys.request(request_id), keys.stale_writes()], args=args, client=r
    )
    return out != STALE


def log_line(
    r: redis.Redis, service: str, request_id: str, line: bytes, to_sink: bool, epoch: str = "", tenant: str = "default"
) -> bool:
    """Emit one log line of the delivery of ``epoch`` (one round trip); False if stale (refused)."""
    args = [*sink.emit_args(request_id, "log", line, {"tenant": tenant}, to_sink), epoch]
    out = LOG(
        keys=[*sink.emit_keys(service, request_id), keys.request(request_id), keys.stale_writes()], args=args, client=r
    )
    return out != STALE
