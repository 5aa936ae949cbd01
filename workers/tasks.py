"""The two Celery tasks: ``scalejob.command`` (training) and ``scalejob.query`` (inference).

Both take keyword arguments only, so any Celery client can call them::

    celery_app.send_task("scalejob.command", kwargs={"service": "train", "payload": "python t.py"},
                         queue="scalejob.train")

``request_id`` defaults to the Celery task id. Each run takes the request's lease first, so a
second delivery of the same request (broker redelivery, recovery re-enqueue) never runs beside
the first; exactly one terminal message (``result`` or ``error``) reaches the output queue.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from celery import Task

from app.core import keys, replies
from app.core.celery_app import celery_app
from app.core.connections import state_redis
from app.core.settings import get_settings
from app.queue import records
from app.queue import workers as registry
from workers import ackgate, lifecycle
from workers.command import OutputBudget, RateLimiter, progress_dir, run_command
from workers.instance import Instance, instance_for
from workers.leases import CLOCK, fencing_redis
from workers.process import progress_server
from workers.query import UserAppUnavailable, run_query

log = logging.getLogger(__name__)

# RabbitMQ: ack on start, keep idle-first. Added here, not in app.core.celery_app, because a worker
# imports this module (the app's include) before it builds its consumer's blueprint.
celery_app.steps["consumer"].add(ackgate.GateStep)


T = TypeVar("T")
REDIS_OUTAGE_LIMIT = 3600.0  # how long a finished task keeps retrying to record its outcome
FENCED = "fenced"  # run_command's stopped_reason when the worker stopped a command whose lease it lost


def until_redis_answers(fn: Callable[[], T], what: str) -> T:
    """Run ``fn``, retrying with backoff while Redis is unreachable (a restart, a failover).

    A task's outcome must survive a broker/state outage that happens while it runs: giving up
    would leave the request ``running`` with a lease the heartbeat keeps renewing forever.
    """
    delay, deadline = 0.1, time.monotonic() + REDIS_OUTAGE_LIMIT
    while True:
        try:
            return fn()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("%s: Redis unavailable (%s); retrying in %.1fs", what, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def decode_payload(payload: str | None, payload_b64: str | None) -> bytes:
    if payload_b64 is not None:
        return base64.b64decode(payload_b64)
    return (payload or "").encode()


class Progress:
    """Writes progress to the record and the request's events, only when it changes.

    On the fail-fast client and fenced by this delivery's epoch: a partition drops an update
    (the next one retries) instead of hanging the command's loop.
    """

    def __init__(self, inst: Instance, request_id: str, to_sink: bool) -> None:
        self.r, self.inst, self.request_id, self.to_sink = fencing_redis(), inst, request_id, to_sink
        hold = _holds.get(request_id)
        self.epoch, self.tenant = (hold.epoch, hold.tenant) if hold else ("", "default")
        self.last: float | None = None

    def __call__(self, value: float) -> None:
        value = round(value, 1)
        if value == self.last:
            return
        try:
            lifecycle.progress(self.r, self.inst.spec.name, self.request_id, value, self.to_sink, self.epoch, self.tenant)
            self.last = value
        except redis.RedisError as exc:  # a Redis outage must not stop the task; the next update retries
            log.warning("request %s: progress not recorded: %s", self.request_id, exc)


@dataclass
class Hold:
    """A delivery of this process that holds its request's lease (set by :func:`execute`)."""

    worker: str
    registry_name: str
    epoch: str = ""  # the fencing token its lease was granted with (the record's attempts)
    tenant: str = "default"  # the request's tenant: every output-queue event carries it (the API filters on it)
    final_state: str | None = None  # set once :func:`_finish` released the lease with the finish


_holds: dict[str, Hold] = {}  # request id -> its running delivery here (pool threads share it)


def _finish(r: redis.Redis, inst: Instance, request_id: str, state: str, data: bytes, result: Any, error: str | None, tags: dict[str, str]) -> None:
    """Finish the request and emit its terminal event; the lease holder also releases (one round trip)."""
    _finish_service(r, inst.spec.name, request_id, state, data, result, error, tags)


def _finish_service(r: redis.Redis, service: str, request_id: str, state: str, data: bytes, result: Any, error: str | None, tags: dict[str, str]) -> None:
    hold = _holds.get(request_id)
    worker, reg, epoch = (hold.worker, hold.registry_name, hold.epoch) if hold else ("", "", "")

    def record() -> tuple[bool, str]:  # the tenant of a request this delivery does not hold is read inside the retry too
        tenant = hold.tenant if hold else replies.text(r.hget(keys.request(request_id), "tenant") or b"default")
        return lifecycle.end(r, service, request_id, state, data, result, error, {**tags, "tenant": tenant}, worker, reg, epoch)

    _, final = until_redis_answers(record, f"request {request_id}: recording {state}")
    if hold is not None:
        hold.final_state = final


def _command(r: redis.Redis, inst: Instance, request_id: str, payload: bytes) -> None:  # noqa: PLR0915 - one command run end to end; split into steps in issue 12
    spec = inst.spec
    try:
        command = payload.decode("utf-8")
    except UnicodeDecodeError:
        msg = "command payload is not valid UTF-8"
        _finish(r, inst, request_id, "failed", msg.encode(), None, msg, {})
        return
    to_queue = spec.write_logs_to_queue("command")
    limiter = RateLimiter(spec.scalable_job.log_lines_per_second)
    budget = OutputBudget(get_settings().output_cap_bytes)
    progress = Progress(inst, request_id, to_queue)
    progress_file = os.path.join(progress_dir(), f"{request_id}.progress")  # the command creates it if it reports
    env = {**inst.env, "SCALEJOB_REQUEST_ID": request_id, "SCALEJOB_PROGRESS_FILE": progress_file}
    fast, hold = fencing_redis(), _holds[request_id]
    self_fence = inst.heartbeat is not None  # only a worker whose heartbeat renews leases can tell it lost one

    def on_line(line: str) -> None:
        if self_fence and CLOCK.stale(request_id):  # cut off: drop the line, keep the loop free to fence
            limiter.dropped += 1
            return
        if limiter.allow() and (kept := budget.take(line)) is not None:
            stamped = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {kept}"
            try:
                lifecycle.log_line(fast, spec.name, request_id, stamped.encode(), to_queue, hold.epoch, hold.tenant)
            except redis.RedisError:  # Redis is down: drop the line, never block the command's output
                limiter.dropped += 1

    def should_stop() -> str | None:
        if self_fence and CLOCK.lost(request_id, hold.worker):
            return FENCED
        try:
            with open(progress_file) as fh:
                text = fh.read().strip().rstrip("%")
            if text:
                progress(float(text))
        except (OSError, ValueError):
            pass
        try:
            return "cancelled" if fast.hget(keys.request(request_id), "cancel") == b"1" else None
        except redis.RedisError:  # Redis is down: nobody can have cancelled it meanwhile
            return None

    try:
        outcome = run_command(
            command, inst.storage, env, on_line, progress, should_stop,
            progress_pattern=spec.scalable_job.progress_pattern, max_runtime=spec.metadata.max_runtime,
            grace=get_settings().stop_grace,
        )
    finally:
        try:
            os.unlink(progress_file)
        except FileNotFoundError:
            pass
    if outcome.stopped_reason == FENCED:  # the request may run elsewhere now: report nothing
        log.warning("request %s: lease not renewed for %.1fs (cut off from Redis?); its command was stopped and reports nothing",
                    request_id, CLOCK.age(request_id))
        return
    result = outcome.as_result()
    if limiter.dropped:
        result["log_lines_dropped"] = limiter.dropped
    if budget.truncated:
        result["truncated"] = True
        result["log_bytes_dropped"] = budget.dropped_bytes
    data = json.dumps(result).encode()
    if outcome.stopped_reason == "cancelled":
        _finish(r, inst, request_id, "cancelled", data, result, "cancelled by user", {})
    elif outcome.stopped_reason == "max_runtime":
        err = f"exceeded max_runtime of {spec.metadata.max_runtime:g}s; the command was terminated"
        _finish(r, inst, request_id, "failed", data, result, err, {})
    elif outcome.exit_code == 0:
        _finish(r, inst, request_id, "succeeded", data, result, None, {})
    else:
        _finish(r, inst, request_id, "failed", data, result, f"command exited with code {outcome.exit_code}", {})


def _query(r: redis.Redis, inst: Instance, request_id: str, payload: bytes) -> None:
    app = inst.spec.app
    if not app.port:
        msg = f"service {inst.spec.name} has no containers[0].port: it cannot run query tasks"
        _finish(r, inst, request_id, "failed", msg.encode(), None, msg, {})
        return
    headers = {**app.headers, "X-Scalejob-Request-Id": request_id}
    progress = Progress(inst, request_id, inst.spec.write_logs_to_queue("query"))
    try:
        with progress_server.tracking(request_id, progress) as progress_url:
            if progress_url:
                headers[progress_server.HEADER] = progress_url
            out = run_query(app.port, app.path, payload, headers, squatter=inst.user_app.squatter if inst.user_app else lambda: None)
    except UserAppUnavailable as exc:
        _finish(r, inst, request_id, "failed", str(exc).encode(), None, str(exc), {})
        return
    if until_redis_answers(lambda: r.hget(keys.request(request_id), "cancel"), f"request {request_id}: cancel check") == b"1":
        _finish(r, inst, request_id, "cancelled", b"", None, "cancelled by user", {})
        return
    state = "succeeded" if out.ok else "failed"
    error = None if out.ok else f"user app answered HTTP {out.status}"
    _finish(r, inst, request_id, state, out.body, out.as_result(), error, {"statusCode": str(out.status)})


def execute(task: Task, kind: str, service: str, payload: str | None, payload_b64: str | None, request_id: str | None) -> str:
    """Run one request on this instance; returns how it ended (for logs and Flower)."""
    r = state_redis()
    request_id = request_id or task.request.id
    refusal = _refusal(task, service, request_id)
    if refusal is not None:  # broker contents are untrusted: nothing of this message reaches a key, a path or a shell
        log.error("message %s refused: %s", task.request.id, refusal)
        ackgate.drop(task)
        return "refused"
    worker = task.request.hostname or "unknown"
    reg = _registry_name(service, worker)
    message = {"task": f"scalejob.{kind}", "queue": keys.celery_queue(service),
               "kwargs": {"service": service, "payload": payload, "payload_b64": payload_b64, "request_id": request_id}}
    begun = until_redis_answers(
        lambda: lifecycle.begin(r, request_id, service, kind, worker, reg, message, time.time()), f"request {request_id}: taking its lease"
    )
    if begun.status != records.STARTED:
        ackgate.drop(task)  # not run: Celery acks this delivery when the task returns
    if begun.status == records.DUPLICATE:
        log.warning("request %s: %s holds its lease; this delivery is a duplicate and is dropped (acked)", request_id, begun.holder)
        return "duplicate"
    if begun.status == records.FINISHED_OR_CANCELLED:
        if begun.cancel_requested and begun.state not in records.TERMINAL:
            _finish(r, instance_for(service, worker), request_id, "cancelled", b"", None, "cancelled before it started", {})
        return "skipped"
    hold = _holds[request_id] = Hold(worker, reg, begun.epoch, begun.tenant)
    CLOCK.taken(request_id)
    early_acked = False
    try:
        inst = instance_for(service, worker)
        early_acked = ackgate.lease_taken(task)  # AMQP: the lease owns the job from here on
        (_command if kind == "command" else _query)(r, inst, request_id, decode_payload(payload, payload_b64))
    except Exception as exc:  # noqa: BLE001 - a bug here must fail the request, not lose it
        log.exception("request %s crashed", request_id)
        if hold.final_state is None:
            _finish_service(r, service, request_id, "failed", str(exc).encode(), None, f"internal error: {exc!r}", {})
    finally:
        _holds.pop(request_id, None)
        CLOCK.forget(request_id)
        state = hold.final_state
        if state is None:  # not finished here (a crash while finishing): unregister, release, read the outcome
            def cleanup() -> bytes | None:
                with r.pipeline(transaction=False) as p:
                    registry.task_finished(p, reg, request_id)
                    records.release(p, request_id, worker)
                    p.hget(keys.request(request_id), "state")
                    return p.execute()[-1]

            state = (until_redis_answers(cleanup, f"request {request_id}: releasing its lease") or b"unknown").decode()
        if early_acked:
            ackgate.slot_freed()
    return state


def _refusal(task: Task, service: object, request_id: object) -> str | None:
    """Why this delivery must not run here, or None.

    A request id must be safe in a key and a file name; the service must be the one whose queue
    the message came from (this worker's), or it would run with another service's env and storage.
    """
    from workers import instance

    if not records.valid_request_id(request_id):
        return f"invalid request id {str(request_id)[:80]!r}"
    cur = instance.current
    queue = (task.request.delivery_info or {}).get("routing_key") or ""
    own = keys.celery_queue(str(service))
    if not isinstance(service, str) or (cur is not None and cur.spec.name != service) or (queue and queue != own and not queue.startswith(own + ".")):
        return f"service {str(service)[:80]!r} is not the service of queue {queue!r} ({cur.spec.name if cur else 'no instance'}): refused"
    return None


def _registry_name(service: str, worker: str) -> str:
    """The name this delivery is registered under: the instance's (its heartbeat renews the lease)."""
    from workers import instance

    cur = instance.current
    return cur.name if cur is not None and cur.spec.name == service and cur.heartbeat else worker


@celery_app.task(name="scalejob.command", bind=True, Request="workers.ackgate:GatedRequest")
def command(self: Task, service: str, payload: str | None = None, payload_b64: str | None = None, request_id: str | None = None, **_: Any) -> str:
    """Run a shell command (training job) on an instance of ``service``."""
    return execute(self, "command", service, payload, payload_b64, request_id)


@celery_app.task(name="scalejob.query", bind=True, Request="workers.ackgate:GatedRequest")
def query(self: Task, service: str, payload: str | None = None, payload_b64: str | None = None, request_id: str | None = None, **_: Any) -> str:
    """Forward a request body to the user app of ``service`` (inference)."""
    return execute(self, "query", service, payload, payload_b64, request_id)
