"""The run-time estimate of the wait-target rule: a real worker's finished task moves it (autoscale/durations.py)."""

from __future__ import annotations

import time
import uuid
from types import SimpleNamespace

from app.core import keys
from app.queue import lifecycle
from app.queue.messages import TaskMessage
from app.queue.run_times import KEPT as RUN_TIMES_KEPT
from autoscale import durations
from tests.conftest import Stack
from tests.helpers import wait_for


def test_a_real_workers_finished_task_moves_the_estimate(stack: Stack) -> None:
    spec = stack.deploy(stack.command_spec())
    assert durations.run_times(stack.r, spec.name) is None  # nothing finished yet
    stack.start_worker(spec.name)
    rid = stack.put(spec, "command", "sleep 1.2")
    assert stack.wait_done(rid, timeout=60).state == "succeeded"
    est = wait_for(lambda: durations.run_times(stack.r, spec.name), 10, what="a run time")
    assert est.count == 1 and 1.2 <= est.mean < 5, est
    rid = stack.put(spec, "command", "true")
    stack.wait_done(rid, timeout=30)
    est2 = durations.run_times(stack.r, spec.name)
    assert est2 is not None and est2.count == 2 and est2.mean < est.mean


def test_only_the_lease_holders_succeeded_or_failed_run_counts_and_the_list_is_capped(stack: Stack) -> None:
    service, r = stack.service_name(), stack.r
    for i in range(RUN_TIMES_KEPT + 5):
        rid = uuid.uuid4().hex
        lifecycle.begin(r, rid, service, "command", "w1", "w1", TaskMessage("scalejob.command", {}, "q"), time.time() - 2)
        state = "cancelled" if i == 0 else "succeeded"
        lifecycle.end(r, service, rid, state, b"", None, None, {}, "w1", "w1")
    rid = uuid.uuid4().hex  # a finish by someone who does not hold the lease records nothing
    lifecycle.begin(r, rid, service, "command", "w1", "w1", TaskMessage("scalejob.command", {}, "q"), time.time() - 2)
    lifecycle.end(r, service, rid, "failed", b"", None, "x", {})
    assert r.llen(keys.run_times(service)) == RUN_TIMES_KEPT
    est = durations.run_times(r, service)
    assert est is not None and est.count == RUN_TIMES_KEPT and 1.9 < est.mean < 5


def test_start_times_are_measured_from_first_sight_to_registration() -> None:
    st = durations.StartTimes()
    h = SimpleNamespace(name="w1", meta={"start_by": "123.0"})
    assert st.observe("svc", [h], set(), 100.0) is None
    assert st.observe("svc", [h], set(), 101.0) is None
    assert st.observe("svc", [h], {"w1"}, 104.0) == 4.0  # first seen at 100, registered by 104
    h2 = SimpleNamespace(name="w2", meta={"start_by": "1"})
    st.observe("svc", [h, h2], {"w1"}, 200.0)
    assert st.observe("svc", [h, h2], {"w1", "w2"}, 202.0) == 0.7 * 4.0 + 0.3 * 2.0
    assert st.observe("other", [], set(), 300.0) is None


def test_the_controller_plans_a_wait_target_with_the_recorded_run_times(stack: Stack) -> None:
    from tests.autoscaling import autoscaled_spec
    from tests.test_autoscaler_parts import _controller

    spec = stack.deploy(autoscaled_spec(stack, min=0, max=2, strategies={"target_wait_seconds": 30}))
    scaler = _controller(stack)
    try:
        [entry] = [e for e in scaler.controller.tick() if e["service"] == spec.name]
        assert "target wait 30 s: no run times yet" in entry["reason"]
        for _ in range(3):
            rid = uuid.uuid4().hex
            lifecycle.begin(stack.r, rid, spec.name, "command", "w1", "w1", TaskMessage("scalejob.command", {}, "q"), time.time() - 4)
            lifecycle.end(stack.r, spec.name, rid, "succeeded", b"", None, None, {}, "w1", "w1")
        [entry] = [e for e in scaler.controller.tick() if e["service"] == spec.name]
        assert "run time ~4" in entry["reason"] and "(3 seen)" in entry["reason"], entry["reason"]
        assert entry["desired"] == 0
    finally:
        scaler.backend.stop_all(timeout=30)
