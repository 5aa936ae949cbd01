"""Autoscaler parts in-process, against real Redis: decision history, status, metrics, adoption guards."""

from __future__ import annotations

import json
import os
import socket
import time

from prometheus_client import generate_latest
from rich.console import Console

from tests.autoscaling import autoscaled_spec
from tests.conftest import Stack
from tests.helpers import wait_for
from workers.heartbeat import Heartbeat


def _controller(stack: Stack):  # noqa: ANN202
    from app.core.settings import get_settings
    from autoscale.main import scalejob_autoscaler

    scaler = scalejob_autoscaler(get_settings(), fork=False)
    assert scaler.leadership.hold(), "an in-process controller acts only as the leader (its spawns are fenced to its term)"
    return scaler


def test_every_decision_is_recorded_with_its_inputs_and_shown_by_status(stack: Stack) -> None:
    from app.cli.status import status_table
    from app.queue import decisions as history

    spec = stack.deploy(autoscaled_spec(stack, min=0, max=3))
    scaler = _controller(stack)
    for _ in range(3):
        [entry] = [e for e in scaler.controller.tick() if e["service"] == spec.name]
    assert entry["desired"] == 0 and entry["rule"] == "hold" and entry["actions"] == []
    assert entry["inputs"] == {"waiting": 0, "running": 0, "workers": {}, "free_gpus": None}
    [head] = history.recent(stack.r, spec.name)  # identical ticks update the head entry in place
    assert head["repeats"] == 2 and head["last_at"] >= head["at"] and "load 0" in head["reason"]

    stack.put(spec, "command", "true")
    stack.put(spec, "command", "true")
    # the broker says 2 waiting: the decision says so, and it is new history (not a repeat)
    entries = [e for e in scaler.controller.tick() if e["service"] == spec.name]
    try:
        assert entries[0]["inputs"]["waiting"] == 2 and entries[0]["desired"] == 1 and entries[0]["rule"] == "scale_up"
        assert len(history.recent(stack.r, spec.name)) == 2
        text = _render(status_table(stack.r))
        assert spec.name in text and "scale_up" in text and "waiting 2" in text
        metrics = generate_latest().decode()
        assert f'scalejob_autoscaler_desired{{service="{spec.name}"}} 1.0' in metrics
        assert f'scalejob_autoscaler_waiting{{service="{spec.name}"}} 2.0' in metrics
    finally:
        scaler.backend.stop_all(timeout=30)


def _render(table: object) -> str:
    console = Console(width=400, record=True)
    console.print(table)
    return console.export_text()


def test_decision_history_is_bounded(stack: Stack) -> None:
    from app.queue import decisions as history

    for i in range(7):
        entry = {"at": time.time(), "inputs": {"waiting": i, "running": 0, "workers": {}}, "desired": i, "standby": 0,
                 "reason": f"r{i}", "rule": "scale_up", "actions": [], "duration_ms": 0.1}
        history.record(stack.r, "bounded", entry, keep=3)
    assert [d["desired"] for d in history.recent(stack.r, "bounded", 10)] == [6, 5, 4]


def test_adoption_ignores_dead_pids_and_pids_reused_by_other_processes(stack: Stack) -> None:
    from app.core import keys

    r = stack.r
    host = socket.gethostname()
    record = lambda pid: json.dumps({"pid": pid, "host": host, "service": "svc", "standby": False, "log": ""})  # noqa: E731
    r.hset(keys.local_workers(), mapping={
        "svc-reused@x": record(os.getpid()),  # alive, but it is this test process, not that worker
        "svc-dead@x": record(2**22 + 12345),  # no such process
        "svc-elsewhere@x": json.dumps({"pid": os.getpid(), "host": "another-host", "service": "svc"}),
    })
    scaler = _controller(stack)
    assert scaler.backend.adopt() == []
    assert scaler.backend.list("svc") == []
    assert set(r.hkeys(keys.local_workers())) == {b"svc-elsewhere@x"}  # another host's record is not ours to drop


def test_a_registry_entry_lost_with_redis_comes_back_with_the_state_the_autoscaler_set(stack: Stack) -> None:
    """A Redis restart without persistence drops worker entries; a drained worker must not come back idle."""
    from app.core import keys
    from app.queue import workers as registry

    name = f"{stack.service_name('lost')}@test"
    hb = Heartbeat(stack.r, name, "svc-lost", state="idle")
    hb.start()
    try:
        wait_for(lambda: (w := registry.get_worker(stack.r, name)) and w.state == "idle", 10, what="the entry")
        marked_at = time.time()
        assert registry.set_state_if_present(stack.r, name, "draining")  # what the autoscaler does on scale-in
        wait_for(lambda: registry.get_worker(stack.r, name).heartbeat_at > marked_at, 10, what="a heartbeat after the mark")
        stack.r.delete(keys.worker(name))  # the entry is gone, as after a restart of a Redis without persistence
        back = wait_for(lambda: registry.get_worker(stack.r, name), 10, what="the entry to be written again")
        assert back.state == "draining"
    finally:
        hb.stop()
    assert registry.get_worker(stack.r, name) is None
