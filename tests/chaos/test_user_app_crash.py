"""Scenario 5: the supervised user app of a query service is SIGKILLed mid-request.

The in-flight request is retried against the restarted app (or fails with an error naming the
app); the worker restarts the app and later requests succeed on the new process.
"""

from __future__ import annotations

import json
import os
import signal
import time

from tests.chaos.conftest import Row, count_outcomes
from tests.conftest import Stack
from tests.helpers import free_port, wait_for
from tests.test_core import query_spec
from workers.query import result_body

DELAY = 1.0


def app_pid(stack: Stack, rid: str) -> int:
    return int(json.loads(result_body(stack.record(rid).result))["pid"])


def test_user_app_crash(chaos: Stack, row: Row) -> None:
    stack = chaos
    spec_json = query_spec(stack, free_port())
    spec_json["containers"][0]["env"] = [{"name": "SLOW_APP_DELAY", "value": str(DELAY)}]  # the app's env comes from the spec
    spec = stack.deploy(spec_json)
    worker = stack.start_worker(spec.name)
    stack.wait_workers(spec.name, 1, "idle", timeout=30)
    first = stack.put(spec, "query", "before")
    stack.wait_done(first, 20)
    pid = app_pid(stack, first)

    victim = stack.put(spec, "query", "during")
    wait_for(lambda: stack.record(victim).state == "running", 10, what="the query to start")
    time.sleep(DELAY / 2)  # mid-request: the app holds the connection open
    os.kill(pid, signal.SIGKILL)
    rec = stack.wait_done(victim, 30)
    if rec.state == "succeeded":
        assert app_pid(stack, victim) != pid and rec.attempts == 1, "retried inside the same delivery, on the new app"
        row.notes.append(f"in-flight request retried on the restarted app (query attempts {rec.result['attempts']})")
    else:
        assert rec.state == "failed" and "user app" in (rec.error or ""), rec
        row.notes.append(f"in-flight request failed: {rec.error}")

    later = [stack.put(spec, "query", f"after-{i}") for i in range(3)]
    recs = [stack.wait_done(i, 30) for i in later]
    assert all(r.state == "succeeded" for r in recs), recs
    assert {app_pid(stack, i) for i in later} != {pid} and worker.alive()
    ids = [first, *later] + ([victim] if rec.state == "succeeded" else [])
    count_outcomes(stack, spec.name, ids, row)
    row.requests += rec.state != "succeeded"  # a clearly failed request is an outcome, not a loss
    row.check()
