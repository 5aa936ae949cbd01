"""The two bookkeeping scripts of a task (app/queue/lifecycle.py) keep the guards of app/queue/records.py.

Real Redis (the Stack's DB and key prefix); the scripts are called the way ``workers.tasks.execute``
calls them, without a Celery delivery, so each guard is checked on its own.
"""

from __future__ import annotations

import time
import uuid

from app.core import keys
from app.queue import lifecycle, records
from app.queue import output as sink
from app.queue.messages import TaskMessage
from tests.conftest import Stack


def _stored(service: str, rid: str) -> dict[str, object]:
    return {"task": "scalejob.command", "queue": keys.celery_queue(service),
            "kwargs": {"service": service, "payload": "true", "payload_b64": None, "request_id": rid}}


def _message(service: str, rid: str) -> TaskMessage:
    return TaskMessage.from_stored(_stored(service, rid))


UNUSED = TaskMessage("scalejob.command", {}, "unused")  # the record exists: begin() stores no message


def test_a_task_without_a_record_gets_one_with_its_message_then_runs(stack: Stack) -> None:
    service, rid = stack.service_name(), uuid.uuid4().hex
    begun = lifecycle.begin(stack.r, rid, service, "command", "w1", "w1", _message(service, rid), time.time())
    assert begun.status == records.STARTED
    rec = records.get(stack.r, rid)
    assert rec is not None and rec.state == "running" and rec.worker == "w1" and rec.attempts == 1
    assert records.message(stack.r, rid) == _stored(service, rid)
    assert stack.r.sismember(keys.worker_tasks("w1"), rid) and records.running_requests(stack.r) == {rid: "w1"}
    assert records.recent(stack.r, service) == [rid]


def test_a_second_delivery_is_refused_while_the_lease_lives_and_a_finished_request_never_moves_back(stack: Stack) -> None:
    spec = stack.deploy(stack.command_spec())
    rid = stack.put(spec, "command", "true")  # put() wrote record and message copy: no worker runs it
    r = stack.r
    assert lifecycle.begin(r, rid, spec.name, "command", "w1", "w1", UNUSED, time.time()).status == records.STARTED
    dup = lifecycle.begin(r, rid, spec.name, "command", "w2", "w2", UNUSED, time.time())
    assert dup.status == records.DUPLICATE and dup.holder == "w1"
    moved, state = lifecycle.end(r, spec.name, rid, "succeeded", b'{"exit_code": 0}', {"exit_code": 0}, None, {}, "w1", "w1")
    assert (moved, state) == (True, "succeeded")
    assert not r.exists(keys.request_lease(rid)) and not r.sismember(keys.worker_tasks("w1"), rid)
    assert records.running_requests(r) == {}
    late = lifecycle.end(r, spec.name, rid, "failed", b"late", None, "late writer", {}, "w2", "w2")
    assert late == (False, "succeeded")
    again = lifecycle.begin(r, rid, spec.name, "command", "w3", "w3", UNUSED, time.time())
    assert again.status == records.FINISHED_OR_CANCELLED and again.state == "succeeded"
    terminal = [m for m in sink.read(r, spec.name) if m.tags["type"] in ("result", "error")]
    assert [(m.tags["requestId"], m.tags["state"]) for m in terminal] == [(rid, "succeeded")]  # exactly one
    events = [m.tags["type"] for _, m in sink.request_events(r, rid)]
    assert events == ["result"]


def test_a_cancelled_waiting_request_is_not_started(stack: Stack) -> None:
    spec = stack.deploy(stack.command_spec())
    rid = stack.put(spec, "command", "true")
    records.request_cancel(stack.r, rid)
    begun = lifecycle.begin(stack.r, rid, spec.name, "command", "w1", "w1", UNUSED, time.time())
    assert begun.status == records.FINISHED_OR_CANCELLED and begun.cancel_requested and begun.state == "queued"
    assert not stack.r.exists(keys.request_lease(rid))


def test_progress_is_one_round_trip_to_record_and_events(stack: Stack) -> None:
    spec = stack.deploy(stack.command_spec())
    rid = stack.put(spec, "command", "true")
    lifecycle.progress(stack.r, spec.name, rid, 42.5, to_sink=True)
    assert records.get(stack.r, rid).progress == 42.5  # type: ignore[union-attr]
    assert [m.data for m in sink.read(stack.r, spec.name) if m.tags["type"] == "progress"] == [b"42.5"]


def test_a_stale_delivery_cannot_write_over_the_attempt_that_replaced_it(stack: Stack) -> None:
    """Fencing tokens: w1 is cut off, its lease expires, the request runs again on w2; w1's late writes are refused and counted."""
    spec = stack.deploy(stack.command_spec())
    rid = stack.put(spec, "command", "sleep 30")
    r = stack.r
    first = lifecycle.begin(r, rid, spec.name, "command", "w1", "w1", UNUSED, time.time())
    assert first.status == records.STARTED and first.epoch == "1"
    r.delete(keys.request_lease(rid))  # w1's lease expired (it could not renew)
    assert records.requeue_if_orphaned(r, rid)  # recovery put it back
    second = lifecycle.begin(r, rid, spec.name, "command", "w2", "w2", UNUSED, time.time())
    assert second.status == records.STARTED and second.epoch == "2"
    before = records.stale_writes(r)
    assert not lifecycle.log_line(r, spec.name, rid, b"w1: still here", True, first.epoch)
    assert not lifecycle.progress(r, spec.name, rid, 90, True, first.epoch)
    assert lifecycle.end(r, spec.name, rid, "failed", b"w1", None, "w1 late", {}, "w1", "w1", first.epoch) == (False, "stale")
    assert records.stale_writes(r) - before == 3
    rec = records.get(r, rid)
    assert rec.state == "running" and rec.worker == "w2" and rec.progress == 0 and r.get(keys.request_lease(rid)) == b"w2"
    assert lifecycle.log_line(r, spec.name, rid, b"w2: working", True, second.epoch)
    assert lifecycle.end(r, spec.name, rid, "succeeded", b"{}", {}, None, {}, "w2", "w2", second.epoch) == (True, "succeeded")
    kinds = [(m.tags["type"], m.data) for _, m in sink.request_events(r, rid)]
    assert kinds == [("log", b"w2: working"), ("result", b"{}")], "nothing of w1 reached the output, one terminal message"
