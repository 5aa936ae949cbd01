"""Fair sharing between the tenants of one service: a flood of A never starves B's single task."""

from __future__ import annotations

import time

import pytest

from app.core import keys
from app.queue import tenants
from tests.conftest import Stack
from tests.helpers import wait_for

FLOOD = 30
TASK = "sleep 0.3"


def _flood_then_one(stack: Stack, spec: object) -> tuple[list, object, float]:
    a_ids = [stack.put(spec, "command", TASK, tenant="a") for _ in range(FLOOD)]
    # B arrives mid-flood: after a few of A's tasks ran, with most of A's still waiting
    wait_for(lambda: sum(stack.record(i).state == "succeeded" for i in a_ids[:5]) >= 2, 30, what="A's flood to be under way")
    t_b = time.time()
    b_id = stack.put(spec, "command", "echo b", tenant="b")
    rec_b = stack.wait_done(b_id, timeout=60)
    a_recs = [stack.record(i) for i in a_ids]
    return a_recs, rec_b, t_b


def _a_started_before_b(a_recs: list, rec_b: object, t_b: float) -> list:
    return [r for r in a_recs if r.started_at is not None and t_b < r.started_at < rec_b.started_at]


def test_new_tenant_task_starts_at_the_next_completion_not_after_the_flood(stack: Stack) -> None:
    spec = stack.deploy(stack.command_spec())
    stack.start_worker(spec.name)
    stack.wait_workers(spec.name, 1, "idle")
    a_recs, rec_b, t_b = _flood_then_one(stack, spec)
    assert rec_b.state == "succeeded", rec_b
    still_waiting = [r for r in a_recs if r.started_at is None or r.started_at > rec_b.started_at]
    assert len(still_waiting) >= FLOOD // 2, "B's task should start while most of A's flood still waits"
    # B's queue is new: the worker learns it by a control broadcast (a task of A may start while
    # that message is in flight) and kombu rebuilds its queue cycle on add_queue (one more of A's
    # may come first): at most two of A's 30 start before B's, never the rest of the flood
    assert len(_a_started_before_b(a_recs, rec_b, t_b)) <= 2
    assert rec_b.tenant == "b"


def test_known_tenant_task_starts_right_after_the_running_task(stack: Stack) -> None:
    spec = stack.deploy(stack.command_spec())
    stack.start_worker(spec.name)
    stack.wait_workers(spec.name, 1, "idle")
    assert stack.wait_done(stack.put(spec, "command", "true", tenant="b")).state == "succeeded"  # B's queue is known
    a_recs, rec_b, t_b = _flood_then_one(stack, spec)
    # round robin: after the A task running at B's put, the worker looks at B's queue first
    assert len(_a_started_before_b(a_recs, rec_b, t_b)) <= 1
    assert [r.state for r in (stack.wait_done(r.id, 60) for r in a_recs)].count("succeeded") == FLOOD


def test_default_tenant_keeps_the_contract_queue_and_tenants_get_their_own(stack: Stack) -> None:
    spec = stack.deploy(stack.command_spec())
    assert tenants.queue_for(stack.r, spec, "default") == f"scalejob.{spec.name}"
    assert tenants.queue_for(stack.r, spec, "acme") == f"scalejob.{spec.name}.t.acme"
    assert tenants.service_queues(stack.r, spec.name) == [f"scalejob.{spec.name}", f"scalejob.{spec.name}.t.acme"]
    assert stack.r.smembers(keys.service_tenants(spec.name)) == {b"acme"}


def test_a_worker_started_before_the_tenant_existed_consumes_its_queue(stack: Stack) -> None:
    spec = stack.deploy(stack.command_spec())
    stack.start_worker(spec.name)
    stack.wait_workers(spec.name, 1, "idle")
    rid = stack.put(spec, "command", "echo late tenant", tenant="late")
    assert stack.wait_done(rid, timeout=30).state == "succeeded"


def test_waiting_counts_every_tenant_queue(stack: Stack) -> None:
    spec = stack.deploy(stack.command_spec())  # no worker: everything waits
    for tenant in ("default", "a", "a", "b"):
        stack.put(spec, "command", "true", tenant=tenant)
    by_queue = tenants.waiting_by_queue(stack.r, spec.name)
    assert by_queue == {f"scalejob.{spec.name}": 1, f"scalejob.{spec.name}.t.a": 2, f"scalejob.{spec.name}.t.b": 1}
    assert tenants.waiting(stack.r, spec.name) == 4


def test_tenant_quota_refuses_the_put_over_max_waiting_with_429(stack: Stack) -> None:
    from app.queue.put import PutError

    spec = stack.deploy(stack.command_spec(tenant_max_waiting=2))
    stack.put(spec, "command", "true", tenant="a")
    stack.put(spec, "command", "true", tenant="a")
    with pytest.raises(PutError) as exc:
        stack.put(spec, "command", "true", tenant="a")
    assert exc.value.status == 429 and "tenant a" in exc.value.detail
    stack.put(spec, "command", "true", tenant="b")  # another tenant is not affected


def test_bad_tenant_name_is_a_400(stack: Stack) -> None:
    from app.queue.put import PutError

    spec = stack.deploy(stack.command_spec())
    with pytest.raises(PutError) as exc:
        stack.put(spec, "command", "true", tenant="a b/c")
    assert exc.value.status == 400 and "tenant" in exc.value.detail


def test_a_worker_that_missed_the_broadcast_picks_the_tenant_up_by_polling(stack: Stack) -> None:
    spec = stack.deploy(stack.command_spec())
    stack.start_worker(spec.name)
    stack.wait_workers(spec.name, 1, "idle")
    stack.r.sadd(keys.service_tenants(spec.name), "quiet")  # known already: the put announces nothing
    rid = stack.put(spec, "command", "echo polled", tenant="quiet")
    assert stack.wait_done(rid, timeout=30).state == "succeeded"


def _active_queues(name: str) -> set[str]:
    from app.core.celery_app import celery_app

    reply = celery_app.control.inspect(destination=[name], timeout=2).active_queues() or {}
    return {q["name"] for q in reply.get(name, [])}


def test_a_draining_worker_stops_consuming_its_tenant_queues_too(stack: Stack) -> None:
    from app.core.celery_app import celery_app
    from app.queue.workers import set_state

    spec = stack.deploy(stack.command_spec())
    name = f"{spec.name}-d@test"
    stack.start_worker(spec.name, name=name)
    stack.wait_workers(spec.name, 1, "idle")
    assert stack.wait_done(stack.put(spec, "command", "true", tenant="a")).state == "succeeded"
    tenant_queue = tenants.queue_name(spec.name, "a")
    wait_for(lambda: tenant_queue in _active_queues(name), 10, what="the tenant queue to be consumed")
    # the autoscaler's scale-in: mark draining, cancel the default queue (autoscale/scalein.py)
    set_state(stack.r, name, "draining")
    celery_app.control.cancel_consumer(tenants.queue_name(spec.name), destination=[name], reply=True)
    wait_for(lambda: _active_queues(name) == set(), 10, what="the draining worker to consume nothing")
    rid = stack.put(spec, "command", "true", tenant="a")
    time.sleep(1.0)  # give a (wrong) consumer the chance to take it
    assert stack.record(rid).state == "queued"
