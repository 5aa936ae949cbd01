"""The two Celery tasks: ``scalejob.command`` (training) and ``scalejob.query`` (inference).

Both take keyword arguments only, so any Celery client can call them::

    celery_app.send_task("scalejob.command", kwargs={"service": "train", "payload": "python t.py"},
                         queue="scalejob.train")

``request_id`` defaults to the Celery task id. Each run takes the request's lease first, so a
second delivery of the same request (broker redelivery, recovery re-enqueue) never runs beside
the first; exactly one terminal message (``result`` or ``error``) reaches the output queue.

A run is :func:`execute`: the body of its kind (:func:`_command`, :func:`_query`) returns an
:class:`Outcome`, and :func:`record` is the one place an outcome is written. What a task needs of
its worker (instance, spawn server, user app, ack gate, the deliveries it holds) is on the
worker's runtime, built by the bootsteps in ``workers/steps.py`` and found with ``runtime_of``.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis
from celery import Task

from app.core import keys
from app.core.celery_app import celery_app
from app.core.connections import state_redis
from app.core.settings import get_settings
from app.queue import lifecycle, records
from app.queue import workers as registry
from app.queue.messages import TaskMessage
from workers import steps
from workers.command import CommandOutcome, OutputBudget, RateLimiter, progress_dir, run_command
from workers.instance import Instance
from workers.leases import CLOCK, fencing_redis
from workers.process import progress_server
from workers.query import UserAppUnavailable, run_query
from workers.steps import Hold, Runtime, runtime_of

log = logging.getLogger(__name__)

# The worker's bootsteps (workers/steps.py). Added here, not in app.core.celery_app, because a worker
# imports this module (the app's include) before it builds its consumer's blueprint.
steps.install(celery_app)


T = TypeVar("T")
REDIS_OUTAGE_LIMIT = 3600.0  # how long a finished task keeps retrying to record its outcome


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


@dataclass(frozen=True)
class Outcome:
    """How a request ended, as :func:`record` writes it: its state, body, result, error and extra tags."""

    state: str
    data: bytes = b""
    result: Any = None
    error: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def failed(cls, message: str) -> Outcome:
        """Failed before it ran: the message is the body and the error."""
        return cls("failed", message.encode(), None, message)


def record(r: redis.Redis, service: str, request_id: str, outcome: Outcome, hold: Hold | None) -> None:
    """Finish the request and emit its terminal event; the lease holder also releases (one round trip)."""
    worker, reg, epoch = (hold.worker, hold.registry_name, hold.epoch) if hold else ("", "", "")

    def write() -> tuple[bool, str]:  # the tenant of a request this delivery does not hold is read inside the retry too
        tenant = hold.tenant if hold else records.tenant_of(r, request_id)
        return lifecycle.end(r, service, request_id, outcome.state, outcome.data, outcome.result, outcome.error,
                             {**outcome.tags, "tenant": tenant}, worker, reg, epoch)

    _, final = until_redis_answers(write, f"request {request_id}: recording {outcome.state}")
    if hold is not None:
        hold.final_state = final


def decode_payload(payload: str | None, payload_b64: str | None) -> bytes:
    if payload_b64 is not None:
        return base64.b64decode(payload_b64)
    return (payload or "").encode()


class Progress:
    """Writes progress to the record and the request's events, only when it changes.

    On the fail-fast client and fenced by this delivery's epoch: a partition drops an update
    (the next one retries) instead of hanging the command's loop.
    """

    def __init__(self, service: str, request_id: str, to_sink: bool, hold: Hold) -> None:
        self.r, self.service, self.request_id, self.to_sink = fencing_redis(), service, request_id, to_sink
        self.epoch, self.tenant = hold.epoch, hold.tenant
        self.last: float | None = None

    def __call__(self, value: float) -> None:
        value = round(value, 1)
        if value == self.last:
            return
        try:
            lifecycle.progress(self.r, self.service, self.request_id, value, self.to_sink, self.epoch, self.tenant)
            self.last = value
        except redis.RedisError as exc:  # a Redis outage must not stop the task; the next update retries
            log.warning("request %s: progress not recorded: %s", self.request_id, exc)


class CommandRun:
    """One command task's side of :func:`workers.command.run_command`: its log lines out; cancel, fence, progress in.

    ``self_fence``: only a worker whose heartbeat renews leases can tell it lost one (the rest never stop on it).
    """

    def __init__(self, inst: Instance, request_id: str, hold: Hold, self_fence: bool) -> None:
        spec = inst.spec
        self.service, self.request_id, self.hold, self.self_fence = spec.name, request_id, hold, self_fence
        self.to_queue = spec.write_logs_to_queue("command")
        self.limiter = RateLimiter(spec.scalable_job.log_lines_per_second)
        self.budget = OutputBudget(get_settings().output_cap_bytes)
        self.progress = Progress(spec.name, request_id, self.to_queue, hold)
        # the command creates it if it reports
        self.progress_file = os.path.join(progress_dir(), f"{request_id}.progress")
        self.fast = fencing_redis()

    def on_line(self, line: str) -> None:
        if self.self_fence and CLOCK.stale(self.request_id):  # cut off: drop the line, keep the loop free to fence
            self.limiter.dropped += 1
            return
        if self.limiter.allow() and (kept := self.budget.take(line)) is not None:
            stamped = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {kept}"
            try:
                lifecycle.log_line(self.fast, self.service, self.request_id, stamped.encode(), self.to_queue,
                                   self.hold.epoch, self.hold.tenant)
            except redis.RedisError:  # Redis is down: drop the line, never block the command's output
                self.limiter.dropped += 1

    def should_stop(self) -> str | None:
        if self.self_fence and CLOCK.lost(self.request_id, self.hold.worker):
            return FENCED
        self._read_progress_file()
        try:
            return "cancelled" if records.cancel_requested(self.fast, self.request_id) else None
        except redis.RedisError:  # Redis is down: nobody can have cancelled it meanwhile
            return None

    def _read_progress_file(self) -> None:
        try:
            with open(self.progress_file) as fh:
                text = fh.read().strip().rstrip("%")
            if text:
                self.progress(float(text))
        except (OSError, ValueError):
            pass

    def run(self, rt: Runtime, inst: Instance, command: str) -> CommandOutcome:
        env = {**inst.env, "SCALEJOB_REQUEST_ID": self.request_id, "SCALEJOB_PROGRESS_FILE": self.progress_file}
        try:
            return run_command(
                command, inst.storage, env, self.on_line, self.progress, self.should_stop,
                progress_pattern=inst.spec.scalable_job.progress_pattern, max_runtime=inst.spec.metadata.max_runtime,
                grace=get_settings().stop_grace, server=rt.spawner,
            )
        finally:
            try:
                os.unlink(self.progress_file)
            except FileNotFoundError:
                pass

    def outcome(self, out: CommandOutcome, max_runtime: float | None) -> Outcome:
        """How the command ended, with what its log lost to the rate limit and the output cap."""
        result = out.as_result()
        if self.limiter.dropped:
            result["log_lines_dropped"] = self.limiter.dropped
        if self.budget.truncated:
            result["truncated"] = True
            result["log_bytes_dropped"] = self.budget.dropped_bytes
        data = json.dumps(result).encode()
        if out.stopped_reason == "cancelled":
            return Outcome("cancelled", data, result, "cancelled by user")
        if out.stopped_reason == "max_runtime":
            error = f"exceeded max_runtime of {max_runtime or 0:g}s; the command was terminated"
            return Outcome("failed", data, result, error)
        if out.exit_code == 0:
            return Outcome("succeeded", data, result)
        return Outcome("failed", data, result, f"command exited with code {out.exit_code}")


FENCED = "fenced"  # run_command's stopped_reason when the worker stopped a command whose lease it lost


def _command(rt: Runtime, inst: Instance, request_id: str, payload: bytes, hold: Hold) -> Outcome | None:
    """Run the payload as a shell command; None when it was fenced (it may run elsewhere: report nothing)."""
    try:
        command = payload.decode("utf-8")
    except UnicodeDecodeError:
        return Outcome.failed("command payload is not valid UTF-8")
    run = CommandRun(inst, request_id, hold, self_fence=rt.heartbeat is not None)
    out = run.run(rt, inst, command)
    if out.stopped_reason == FENCED:
        log.warning("request %s: lease not renewed for %.1fs (cut off from Redis?); "
                    "its command was stopped and reports nothing", request_id, CLOCK.age(request_id))
        return None
    return run.outcome(out, inst.spec.metadata.max_runtime)


def _query(rt: Runtime, inst: Instance, request_id: str, payload: bytes, hold: Hold) -> Outcome:
    """POST the payload to the user app; its answer is the outcome."""
    app = inst.spec.app
    if not app.port:
        return Outcome.failed(f"service {inst.spec.name} has no containers[0].port: it cannot run query tasks")
    headers = {**app.headers, "X-Scalejob-Request-Id": request_id}
    progress = Progress(inst.spec.name, request_id, inst.spec.write_logs_to_queue("query"), hold)
    squatter = rt.user_app.squatter if rt.user_app else lambda: None
    try:
        with rt.progress.tracking(request_id, progress) as progress_url:
            if progress_url:
                headers[progress_server.HEADER] = progress_url
            out = run_query(app.port, app.path, payload, headers, squatter=squatter)
    except UserAppUnavailable as exc:
        return Outcome("failed", str(exc).encode(), None, str(exc))
    r = state_redis()
    what = f"request {request_id}: cancel check"
    if until_redis_answers(lambda: records.cancel_requested(r, request_id), what):
        return Outcome("cancelled", b"", None, "cancelled by user")
    error = None if out.ok else f"user app answered HTTP {out.status}"
    state = "succeeded" if out.ok else "failed"
    return Outcome(state, out.body, out.as_result(), error, {"statusCode": str(out.status)})


def execute(task: Task, kind: str, service: str, payload: str | None, payload_b64: str | None,
            request_id: str | None) -> str:
    """Run one request on this instance; returns how it ended (for logs and Flower)."""
    r, rt = state_redis(), runtime_of(task)
    request_id = request_id or task.request.id
    refusal = _refusal(rt, task, service, request_id)
    if refusal is not None:  # broker contents are untrusted: nothing of this message reaches a key, a path or a shell
        log.error("message %s refused: %s", task.request.id, refusal)
        rt.gate.drop(task)
        return "refused"
    worker = task.request.hostname or "unknown"
    reg = rt.registry_name(service, worker)
    kwargs = {"service": service, "payload": payload, "payload_b64": payload_b64, "request_id": request_id}
    message = TaskMessage(f"scalejob.{kind}", kwargs, keys.celery_queue(service))  # as delivered: recovery re-sends it
    begun = until_redis_answers(
        lambda: lifecycle.begin(r, request_id, service, kind, worker, reg, message, time.time()),
        f"request {request_id}: taking its lease",
    )
    if begun.status != records.STARTED:
        rt.gate.drop(task)  # not run: Celery acks this delivery when the task returns
        return _not_started(r, service, request_id, begun)
    hold = rt.holds[request_id] = Hold(worker, reg, begun.epoch, begun.tenant)
    CLOCK.taken(request_id)
    try:
        _run_and_record(r, rt, task, kind, service, request_id, decode_payload(payload, payload_b64), hold)
    finally:
        rt.holds.pop(request_id, None)
        CLOCK.forget(request_id)
        state = hold.final_state or _release(r, reg, request_id, worker)
        if hold.acked_early:
            rt.gate.slot_freed()
    return state


def _not_started(r: redis.Redis, service: str, request_id: str, begun: lifecycle.Begun) -> str:
    """A delivery that did not take the lease: a duplicate of a running one, or of a finished/cancelled request."""
    if begun.status == records.DUPLICATE:
        log.warning("request %s: %s holds its lease; this delivery is a duplicate and is dropped (acked)",
                    request_id, begun.holder)
        return "duplicate"
    if begun.cancel_requested and begun.state not in records.TERMINAL:
        record(r, service, request_id, Outcome("cancelled", b"", None, "cancelled before it started"), None)
    return "skipped"


def _run_and_record(r: redis.Redis, rt: Runtime, task: Task, kind: str, service: str, request_id: str, payload: bytes,
                    hold: Hold) -> None:
    """The body of ``kind`` run and its outcome recorded; a crash fails the request instead of losing it."""
    try:
        inst = rt.instance_for(service)
        hold.acked_early = rt.gate.lease_taken(task)  # AMQP: the lease owns the job from here on
        outcome = (_command if kind == "command" else _query)(rt, inst, request_id, payload, hold)  # looked up per call
        if outcome is not None:
            record(r, service, request_id, outcome, hold)
    except Exception as exc:  # noqa: BLE001 - a bug here must fail the request, not lose it
        log.exception("request %s crashed", request_id)
        if hold.final_state is None:
            record(r, service, request_id, Outcome("failed", str(exc).encode(), None, f"internal error: {exc!r}"), hold)


def _release(r: redis.Redis, reg: str, request_id: str, worker: str) -> str:
    """Not finished here (fenced, or a crash while finishing): unregister, release, and read the outcome."""
    def cleanup() -> bytes | None:
        with r.pipeline(transaction=False) as p:
            registry.task_finished(p, reg, request_id)
            records.release(p, request_id, worker)
            records.read_state(p, request_id)
            return p.execute()[-1]

    return (until_redis_answers(cleanup, f"request {request_id}: releasing its lease") or b"unknown").decode()


def _refusal(rt: Runtime, task: Task, service: object, request_id: object) -> str | None:
    """Why this delivery must not run here, or None.

    A request id must be safe in a key and a file name; the service must be the one whose queue
    the message came from (this worker's), or it would run with another service's env and storage.
    """
    if not records.valid_request_id(request_id):
        return f"invalid request id {str(request_id)[:80]!r}"
    cur = rt.instance
    queue = (task.request.delivery_info or {}).get("routing_key") or ""
    own = keys.celery_queue(str(service))
    foreign_queue = bool(queue) and queue != own and not queue.startswith(own + ".")
    if not isinstance(service, str) or (cur is not None and cur.spec.name != service) or foreign_queue:
        return (f"service {str(service)[:80]!r} is not the service of queue {queue!r} "
                f"({cur.spec.name if cur else 'no instance'}): refused")
    return None

@celery_app.task(name="scalejob.command", bind=True, Request="workers.steps:GatedRequest")
def command(self: Task, service: str, payload: str | None = None, payload_b64: str | None = None,
            request_id: str | None = None, **_: Any) -> str:
    """Run a shell command (training job) on an instance of ``service``."""
    return execute(self, "command", service, payload, payload_b64, request_id)


@celery_app.task(name="scalejob.query", bind=True, Request="workers.steps:GatedRequest")
def query(self: Task, service: str, payload: str | None = None, payload_b64: str | None = None,
          request_id: str | None = None, **_: Any) -> str:
    """Forward a request body to the user app of ``service`` (inference)."""
    return execute(self, "query", service, payload, payload_b64, request_id)
