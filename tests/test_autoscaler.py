"""The autoscaler end to end: real Redis, a real `scalejob autoscale` process, real worker processes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx

from tests.autoscaling import Autoscalers, autoscaled_spec, autoscalers  # noqa: F401 - fixture
from tests.conftest import Stack
from tests.helpers import free_port, wait_for

GRACE = 3.0


def test_scales_from_zero_to_n_and_back_to_zero_after_the_grace(stack: Stack, autoscalers: Autoscalers) -> None:
    spec = stack.deploy(autoscaled_spec(
        stack, min=0, max=4, strategies={"avg_waiting_length": 2},
        behavior={"onZero": {"scaleDownGracePeriodSeconds": GRACE}, "scaleDown": {"stabilizationWindowSeconds": 1}},
    ))
    scaler = autoscalers.start()
    autoscalers.wait_leader(scaler)
    time.sleep(1.0)  # a few ticks at zero load: nothing must start
    assert autoscalers.local() == {} and stack.workers(spec.name) == []

    t0 = time.time()
    ids = [stack.put(spec, "command", "sleep 1") for _ in range(10)]
    most = 0

    def all_done() -> bool:
        nonlocal most
        most = max(most, len(autoscalers.live_worker_pids(spec.name)))
        return all(stack.record(i).done for i in ids)

    first = wait_for(lambda: stack.workers(spec.name), 10, what="a first worker")
    t_first = time.time()
    rec = autoscalers.local()[first[0].name]  # its own process group, its own log file under the data dir
    assert os.getpgid(rec["pid"]) == rec["pid"] and rec["pid"] == first[0].pid
    assert Path(rec["log"]).parent == stack.tmp / "data" / "logs" and Path(rec["log"]).exists()
    wait_for(all_done, 60, interval=0.1, what="all 10 tasks")
    recs = [stack.record(i) for i in ids]
    assert all(r.state == "succeeded" and r.attempts == 1 for r in recs)
    assert t_first - t0 < 3.0, f"first worker registered {t_first - t0:.2f}s after the burst"
    assert min(r.started_at for r in recs) - t0 < 3.0
    assert 2 <= most <= 4, f"{most} workers at peak (max is 4, 10 tasks / 2 per worker)"
    assert first[0].name in {r.worker for r in recs}

    t_done = max(r.finished_at for r in recs)
    wait_for(lambda: not autoscalers.live_worker_pids(spec.name) and not stack.workers(spec.name), GRACE + 15, interval=0.1, what="scale to zero")
    to_zero = [d for d in autoscalers.decisions(spec.name) if d["rule"] == "to_zero"]
    assert to_zero, "no to_zero decision recorded"
    fired = to_zero[-1]["at"] - t_done
    assert GRACE - 0.5 <= fired <= GRACE + 2.0, f"to_zero fired {fired:.2f}s after the last task (grace {GRACE}s)"
    assert scaler.alive()


def _exit_time(autoscalers: Autoscalers, service: str, name: str, timeout: float) -> float:
    """When the worker process ``name`` is gone (polled)."""
    pid = autoscalers.worker_pids[name]
    wait_for(lambda: pid not in autoscalers.live_worker_pids(service), timeout, interval=0.05, what=f"{name} to exit")
    return time.time()


def test_scale_in_under_load_stops_idle_workers_first_and_never_interrupts_a_task(stack: Stack, autoscalers: Autoscalers) -> None:
    body = dict(min=0, max=3, strategies={"avg_waiting_length": 1},
                behavior={"onZero": {"scaleDownGracePeriodSeconds": 60}, "scaleDown": {"stabilizationWindowSeconds": 0.5}})
    raw = autoscaled_spec(stack, **body)
    spec = stack.deploy(raw)
    autoscalers.wait_leader(autoscalers.start())
    a, b = (stack.put(spec, "command", f"echo {x} >> runs.txt; sleep 8") for x in "ab")
    c = stack.put(spec, "command", "echo c >> runs.txt; sleep 1")
    wait_for(lambda: len({stack.record(i).worker for i in (a, b, c) if stack.record(i).state == "running"}) == 3, 20, what="3 tasks on 3 workers")
    autoscalers.local()
    long_workers = {stack.record(a).worker, stack.record(b).worker}
    idle_worker = stack.wait_done(c, 10).worker

    # load 2 on 3 workers: the idle one (c's) is stopped; both busy ones keep running
    _exit_time(autoscalers, spec.name, idle_worker, 10)
    assert stack.record(a).state == stack.record(b).state == "running"
    assert {w.name for w in stack.workers(spec.name)} == long_workers

    # max drops to 1 while both are busy: one busy worker drains (stops consuming) and exits only after its task
    raw["autoscaler"]["max"] = 1
    stack.deploy(raw)
    draining = wait_for(lambda: [w for w in stack.workers(spec.name) if w.state == "draining"], 10, what="a draining worker")[0]
    victim_task = a if stack.record(a).worker == draining.name else b
    assert stack.record(victim_task).state == "running" and draining.running == (victim_task,)
    exited = _exit_time(autoscalers, spec.name, draining.name, 20)
    done = stack.record(victim_task)
    assert done.state == "succeeded" and done.attempts == 1
    assert exited >= done.finished_at, "the draining worker exited before its task finished"

    recs = [stack.wait_done(i, 20) for i in (a, b, c)]
    assert all(r.state == "succeeded" and r.attempts == 1 for r in recs)
    runs = (stack.tmp / "data" / "storage" / spec.name / "runs.txt").read_text().split()
    assert sorted(runs) == ["a", "b", "c"], runs
    results = [m.tags["requestId"] for m in stack.sink(spec.name) if m.tags["type"] == "result"]
    assert sorted(results) == sorted([a, b, c])
    actions = [x for d in autoscalers.decisions(spec.name) for x in d["actions"]]
    assert any(x.startswith(f"drain {idle_worker} (idle)") for x in actions), actions
    assert any(x.startswith(f"drain {draining.name} (busy)") for x in actions), actions


def test_a_killed_autoscaler_is_replaced_by_the_standby_which_adopts_its_workers(stack: Stack, autoscalers: Autoscalers) -> None:
    spec = stack.deploy(autoscaled_spec(stack, min=2, max=2))
    first = autoscalers.start()
    autoscalers.wait_leader(first)
    standby = autoscalers.start()
    stack.wait_workers(spec.name, 2, "idle")
    pids = autoscalers.live_worker_pids(spec.name)
    assert len(pids) == 2
    rid = stack.put(spec, "command", "sleep 3; echo survived")
    wait_for(lambda: stack.record(rid).state == "running", what="task start")

    first.signal(9)  # the leader alone: its workers keep running in their own sessions
    t_kill = time.time()
    autoscalers.wait_leader(standby, timeout=15)
    took_over = time.time() - t_kill
    time.sleep(2.0)  # several ticks of the new leader
    assert autoscalers.live_worker_pids(spec.name) == pids, "the new leader started or lost workers"
    assert len(stack.workers(spec.name)) == 2

    third = autoscalers.start()  # a restarted autoscaler waits as the standby ...
    time.sleep(1.5)
    standby.signal(9)  # ... and adopts the same workers when the leader dies
    autoscalers.wait_leader(third, timeout=15)
    time.sleep(2.0)
    assert autoscalers.live_worker_pids(spec.name) == pids
    rec = stack.wait_done(rid, 20)
    assert rec.state == "succeeded" and rec.attempts == 1 and "survived" in rec.result["tail"]
    assert took_over < 3.0 + 2.0, f"standby took {took_over:.1f}s to take over"
    spawned = [x for d in autoscalers.decisions(spec.name) for x in d["actions"] if x.startswith("spawn")]
    assert len(spawned) == 2, spawned  # only the first leader's two workers, ever

    third.signal(15)  # graceful exit: its workers get a warm shutdown, nothing is left behind
    assert third.wait(timeout=30) == 0
    from app.core import keys

    assert autoscalers.live_worker_pids(spec.name) == set() and not stack.r.hlen(keys.local_workers())
    assert stack.workers(spec.name) == []


def test_warm_standby_is_activated_for_the_first_task_and_replaced(stack: Stack, autoscalers: Autoscalers) -> None:
    spec = stack.deploy(autoscaled_spec(stack, min=0, max=2, strategies={"avg_waiting_length": 1},
                                        behavior={"warmStandby": 1, "onZero": {"scaleDownGracePeriodSeconds": 60}}))
    port = free_port()
    autoscalers.wait_leader(autoscalers.start("--metrics-port", str(port)))
    [warm] = stack.wait_workers(spec.name, 1, "standby", timeout=20)
    time.sleep(1.0)
    assert [w.state for w in stack.workers(spec.name)] == ["standby"]

    t0 = time.time()
    rid = stack.put(spec, "command", "echo hot")
    rec = stack.wait_done(rid, 10)
    assert rec.state == "succeeded" and rec.worker == warm.name
    assert rec.started_at - t0 < 1.0, f"standby activation took {rec.started_at - t0:.2f}s"
    # a new standby replaces the one that was turned on
    fresh = stack.wait_workers(spec.name, 1, "standby", timeout=20)
    assert fresh[0].name != warm.name
    assert {w.name: w.state for w in stack.workers(spec.name)}[warm.name] in ("idle", "busy")
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert f'scalejob_autoscaler_standby_desired{{service="{spec.name}"}} 1.0' in metrics
    assert f'scalejob_autoscaler_actions_total{{action="activate",service="{spec.name}"}} 1.0' in metrics


def test_a_new_leader_finishes_a_scale_in_its_dead_predecessor_began(stack: Stack, autoscalers: Autoscalers) -> None:
    """A leader killed mid scale-in leaves a worker that no longer consumes but still runs.

    Here the worker was started by hand (no backend owns it, like one forked just before its
    autoscaler died) and drained the way a leader drains it: ``cancel_consumer`` plus the
    registry state. The next leader must let its task finish, then shut it down.
    """
    from app.core import keys
    from app.core.celery_app import celery_app
    from app.queue import workers as registry
    from autoscale.scalein import Control

    spec = stack.deploy(autoscaled_spec(stack, min=0, max=1))
    worker = stack.start_worker(spec.name, name=f"{spec.name}-byhand@test")
    (w,) = stack.wait_workers(spec.name, 1, "idle")
    rid = stack.put(spec, "command", "sleep 2; echo finished")
    wait_for(lambda: stack.record(rid).state == "running", what="task start")
    assert Control(celery_app, timeout=5).cancel_consumer(keys.celery_queue(spec.name), w.name)
    registry.set_state(stack.r, w.name, "draining")

    autoscalers.wait_leader(autoscalers.start())
    assert worker.wait(timeout=30) == 0, worker.output()[-2000:]
    exited = time.time()
    rec = stack.record(rid)
    assert rec.state == "succeeded" and rec.attempts == 1 and "finished" in rec.result["tail"]
    assert rec.finished_at <= exited
    actions = [x for d in autoscalers.decisions(spec.name) for x in d["actions"]]
    assert actions.count(f"shutdown {w.name}") == 1, actions
