"""The foundation, end to end: real Redis (or RabbitMQ as broker), real `scalejob worker` processes."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import time

import psutil

from tests.conftest import Stack
from tests.helpers import ROOT, free_port, wait_for
from workers.query import result_body

SLOW_APP = ROOT / "deploy" / "examples" / "slow_app.py"


def query_spec(stack: Stack, port: int, **metadata: object) -> dict:
    return {
        "containers": [{"command": f"{sys.executable} {SLOW_APP} --port {port}", "port": port}],
        "metadata": {"name": stack.service_name("q"), "task_types": ["query", "command"], **metadata},
    }


def test_command_task_runs_end_to_end_through_a_worker_process(stack: Stack) -> None:
    spec = stack.deploy(stack.command_spec())
    stack.start_worker(spec.name)
    rid = stack.put(spec, "command", "echo hello; echo 'progress: 50%'; echo done > out.txt")
    rec = stack.wait_done(rid)
    assert rec.state == "succeeded", rec
    assert rec.result["exit_code"] == 0 and "hello" in rec.result["tail"]
    assert rec.progress == 100 and rec.worker.startswith(spec.name)
    storage = stack.tmp / "data" / "storage" / spec.name
    assert (storage / "out.txt").read_text().strip() == "done"
    msgs = stack.sink(spec.name)
    logs = [m.data.decode() for m in msgs if m.tags["type"] == "log"]
    assert any(line.endswith(" hello") for line in logs)
    results = [m for m in msgs if m.tags["type"] == "result"]
    assert len(results) == 1 and results[0].tags["requestId"] == rid


def test_failing_command_is_failed_and_not_retried(stack: Stack) -> None:
    spec = stack.deploy(stack.command_spec())
    stack.start_worker(spec.name)
    rid = stack.put(spec, "command", "echo once >> runs.txt; exit 3")
    rec = stack.wait_done(rid)
    assert rec.state == "failed" and rec.result["exit_code"] == 3 and "code 3" in rec.error
    time.sleep(0.5)  # give a (wrong) retry the chance to show up in the file
    assert (stack.tmp / "data" / "storage" / spec.name / "runs.txt").read_text() == "once\n"


def test_query_task_runs_end_to_end_through_the_supervised_user_app(stack: Stack) -> None:
    spec = stack.deploy(query_spec(stack, free_port()))
    stack.start_worker(spec.name)
    rid = stack.put(spec, "query", b"hello \xff bytes")
    rec = stack.wait_done(rid)
    assert rec.state == "succeeded", rec
    body = json.loads(result_body(rec.result))
    assert body["length"] == len(b"hello \xff bytes") and rec.result["status"] == 200
    assert json.loads(rec.result["body"]) == body and "body_b64" not in rec.result, rec.result  # readable: the app answered JSON text
    assert rec.result["content_type"] == "application/json"
    [result] = [m for m in stack.sink(spec.name) if m.tags["type"] == "result"]
    assert json.loads(result.data) == body and result.tags["statusCode"] == "200"


def test_user_app_is_restarted_when_it_dies(stack: Stack) -> None:
    spec = stack.deploy(query_spec(stack, free_port()))
    worker = stack.start_worker(spec.name)
    stack.wait_workers(spec.name, 1, "idle")
    first = json.loads(result_body(stack.wait_done(stack.put(spec, "query", "a")).result))["pid"]
    import os

    os.kill(first, signal.SIGKILL)
    rec = stack.wait_done(stack.put(spec, "query", "b"))
    assert rec.state == "succeeded"
    second = json.loads(result_body(rec.result))["pid"]
    assert second != first and worker.alive()


def test_idle_first_short_tasks_never_wait_behind_a_long_one(stack: Stack) -> None:
    spec = stack.deploy(stack.command_spec())
    stack.start_worker(spec.name, name=f"{spec.name}-a@test")
    stack.start_worker(spec.name, name=f"{spec.name}-b@test")
    stack.wait_workers(spec.name, 2, "idle")
    long_id = stack.put(spec, "command", "sleep 4")
    busy = wait_for(lambda: (rec := stack.record(long_id)).state == "running" and rec.worker, what="long task start")
    t0 = time.time()
    short = [stack.put(spec, "command", "sleep 0.05") for _ in range(5)]
    recs = [stack.wait_done(rid) for rid in short]
    assert all(r.state == "succeeded" for r in recs)
    assert {r.worker for r in recs} == {f"{spec.name}-a@test", f"{spec.name}-b@test"} - {busy}
    assert max(r.finished_at for r in recs) - t0 < 3.0, "a short task waited behind the long one"
    assert stack.record(long_id).state == "running"
    assert stack.wait_done(long_id).state == "succeeded"


def test_sigterm_finishes_the_running_task_before_exit(stack: Stack) -> None:
    spec = stack.deploy(stack.command_spec())
    worker = stack.start_worker(spec.name)
    stack.wait_workers(spec.name, 1, "idle")
    rid = stack.put(spec, "command", "sleep 2; echo finished")
    wait_for(lambda: stack.record(rid).state == "running", what="task start")
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    rec = stack.record(rid)
    assert rec.state == "succeeded" and "finished" in rec.result["tail"]
    assert rec.finished_at is not None
    assert stack.workers(spec.name) == []


def test_sigkill_mid_task_redelivers_to_another_worker(stack: Stack) -> None:
    spec = stack.deploy(stack.command_spec())
    a = stack.start_worker(spec.name, name=f"{spec.name}-a@test")
    stack.wait_workers(spec.name, 1, "idle")
    rid = stack.put(spec, "command", "echo start >> starts.txt; sleep 3; echo end")
    wait_for(lambda: stack.record(rid).state == "running", what="task start")
    stack.start_worker(spec.name, name=f"{spec.name}-b@test")
    for p in a.tree():
        with contextlib.suppress(psutil.NoSuchProcess):  # short-lived children may be gone already
            p.kill()
    rec = stack.wait_done(rid, timeout=40)
    assert rec.state == "succeeded" and rec.worker == f"{spec.name}-b@test"
    assert rec.attempts == 2
    assert len([m for m in stack.sink(spec.name) if m.tags["type"] == "result"]) == 1


def test_init_commands_run_once_before_the_first_task(stack: Stack) -> None:
    marker = stack.tmp / "init.txt"
    spec = stack.deploy(
        {"containers": [{"init_commands": [f"echo init >> {marker}"]}], "metadata": {"name": stack.service_name()}}
    )
    stack.start_worker(spec.name)
    ids = [stack.put(spec, "command", f"test -f {marker} && echo task >> {marker}") for _ in range(3)]
    assert all(stack.wait_done(i).state == "succeeded" for i in ids)
    assert marker.read_text().splitlines() == ["init", "task", "task", "task"]


def test_failing_init_command_stops_the_worker_before_it_takes_a_task(stack: Stack) -> None:
    spec = stack.deploy(
        {"containers": [{"init_commands": ["echo broken-init >&2; exit 7"]}], "metadata": {"name": stack.service_name()}}
    )
    rid = stack.put(spec, "command", "echo should-not-run")
    worker = stack.start_worker(spec.name)
    assert worker.wait(timeout=30) != 0
    assert "broken-init" in worker.output() and "exited with code 7" in worker.output()
    assert stack.record(rid).state == "queued"
