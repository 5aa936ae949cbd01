"""Crash-loop backoff end to end: a worker that exits before it is ready is not restarted every tick,
and the user sees why in `scalejob status`, the API and the decision log; a fixed spec recovers."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from tests.apiserver import ApiServer, api  # noqa: F401 - fixture
from tests.autoscaling import Autoscalers, autoscalers  # noqa: F401 - fixture
from tests.conftest import Stack
from tests.helpers import python_argv, wait_for


def _spawn_logs(stack: Stack, service: str) -> list[Path]:
    return [p for p in (stack.tmp / "data" / "logs").glob(f"{service}-*.log") if not p.name.endswith(".app.log")]


def _health(stack: Stack, service: str) -> dict:
    from app.queue import health

    return health.view(stack.r, service)


def test_failing_init_command_backs_off_shows_the_reason_and_a_good_deploy_recovers(stack: Stack, autoscalers: Autoscalers, api: ApiServer) -> None:
    name = stack.service_name("badinit")
    bad = {"containers": [{"init_commands": ["echo preparing; exit 7"]}], "metadata": {"name": name}, "autoscaler": {"min": 0, "max": 1}}
    spec = stack.deploy(bad)
    autoscalers.wait_leader(autoscalers.start())
    rid = stack.put(spec, "command", "echo recovered")
    t0 = time.time()

    wait_for(lambda: _health(stack, name)["failures"] >= 4, 60, interval=0.1, what="4 failed starts")
    elapsed, spawns = time.time() - t0, len(_spawn_logs(stack, name))
    # backoff 1 + 2 + 4 s between the four failures (without it: a spawn every 0.5 s tick)
    assert elapsed >= 7.0, f"4 failed starts in {elapsed:.1f}s: no backoff"
    assert spawns <= 5, f"{spawns} spawns for 4 failures"
    h = _health(stack, name)
    assert h["health"] == "crash_loop_backoff"
    assert "exited with code 7" in h["last_failure"]["reason"] and "exit 7" in h["last_failure"]["reason"], h
    assert "preparing" in "\n".join(h["last_failure"]["output"])
    assert stack.record(rid).state == "queued"  # nothing lost: the request waits

    out = subprocess.run(python_argv("-m", "app.cli", "status", "-o", "json"), env=stack.env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    [row] = [s for s in json.loads(out.stdout)["services"] if s["service"] == name]
    assert row["health"] == "crash_loop_backoff" and "code 7" in row["failing"], row
    table = subprocess.run(python_argv("-m", "app.cli", "status"), env={**stack.env, "COLUMNS": "80"}, capture_output=True, text=True, timeout=30)
    assert table.returncode == 0 and "init command" in table.stdout, table.stdout  # the cause, first, cut to fit
    assert max(len(line) for line in table.stdout.splitlines()) <= 80, table.stdout

    with api.client() as c:
        waiting = c.get(f"/api/requests/{rid}").json()
        assert waiting["state"] == "queued" and "fail to start" in waiting["waiting_reason"] and "code 7" in waiting["waiting_reason"], waiting
        got = c.get(f"/api/services/{name}").json()
        assert got["health"] == "crash_loop_backoff" and "code 7" in got["last_failure"]["reason"], got
        assert f'scalejob_service_failed_starts{{service="{name}"}}' in c.get("/metrics").text
    decisions = autoscalers.decisions(name)
    assert any(a.startswith("failed-start") for d in decisions for a in d["actions"]), decisions[:3]

    good = {"metadata": {"name": name}, "autoscaler": {"min": 0, "max": 1}}
    stack.deploy(good)
    rec = stack.wait_done(rid, 60)
    assert rec.state == "succeeded", rec
    wait_for(lambda: _health(stack, name)["health"] == "ok", 10, what="health back to ok")


def test_a_cancelled_waiting_request_leaves_the_waiting_count_at_once(stack: Stack, api: ApiServer) -> None:
    from app.queue import tenants

    spec = stack.deploy(stack.command_spec())  # no worker: both wait
    keep, drop = stack.put(spec, "command", "echo keep"), stack.put(spec, "command", "echo drop")
    assert tenants.waiting(stack.r, spec.name) == 2
    with api.client() as c:
        assert c.delete(f"/api/requests/{drop}").json()["state"] == "cancelled"
    assert tenants.waiting(stack.r, spec.name) == 1  # at once, not when a worker pops and skips it
    stack.start_worker(spec.name)
    assert stack.wait_done(keep, 60).state == "succeeded" and stack.record(drop).state == "cancelled"
