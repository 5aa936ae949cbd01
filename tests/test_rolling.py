"""A redeploy with a changed env rolls the workers one by one, each after its task (issue 6 item 2).

A real ``scalejob autoscale`` runs the service's workers; the test redeploys the spec while one
worker runs a 4 s task and checks: every task ran exactly once and completed, the long one with
the old env (it was not interrupted), and after the roll every worker reports the new spec hash
and new tasks see the new value.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from app.core.specs import parse_spec
from app.queue import services
from tests.conftest import Stack
from tests.helpers import Proc, python_argv, wait_for


def spec(name: str, msg: str, n: int = 2) -> dict[str, Any]:
    return {
        "containers": [{"env": {"MSG": msg}}],
        "metadata": {"name": name, "rpc.worker_threads": 1},
        "autoscaler": {"min": n, "max": n, "strategies": {"avg_waiting_length": 1}},
    }


def tail(rec: Any) -> str:
    return "\n".join(rec.result["tail"])


def test_redeploy_with_changed_env_rolls_workers_after_their_task(stack: Stack) -> None:
    name = stack.service_name("roll")
    old = stack.deploy(spec(name, "old"))
    old_hash = services.spec_hash(old)
    scaler = Proc(python_argv("-m", "app.cli", "autoscale"), stack.env, stack.tmp / "autoscaler.log")
    stack.procs.append(scaler)
    workers = stack.wait_workers(name, 2, "idle", timeout=60)
    assert {w.spec_hash for w in workers} == {old_hash}

    long = stack.put(old, "command", "sleep 4; echo long saw $MSG")
    wait_for(lambda: stack.record(long).state == "running", 30, what="the long task to start")
    new = stack.deploy(spec(name, "new"))
    new_hash = services.spec_hash(new)
    assert new_hash != old_hash
    quick = [stack.put(new, "command", f"echo quick {i} saw $MSG") for i in range(3)]

    for rid in [long, *quick]:
        stack.wait_done(rid, timeout=60)

    def rolled() -> bool:
        ws = stack.workers(name)
        return len(ws) == 2 and all(w.spec_hash == new_hash and w.state == "idle" for w in ws)

    wait_for(rolled, 60, what="both workers to run the new spec")
    rec = stack.record(long)
    assert rec.state == "succeeded" and rec.attempts == 1, rec
    assert "long saw old" in tail(rec), "the running task finished on its old worker, not interrupted"
    for rid in quick:
        q = stack.record(rid)
        assert q.state == "succeeded" and q.attempts == 1, q
    results = Counter(m.tags.get("requestId") for m in stack.sink(name) if m.tags.get("type") in ("result", "error"))
    assert all(results[rid] == 1 for rid in [long, *quick]), results

    final = stack.wait_done(stack.put(parse_spec(spec(name, "new")), "command", "echo final saw $MSG"))
    assert "final saw new" in tail(final)
    log = scaler.output()
    assert log.count("(spec changed)") == 2, "each outdated worker was rolled, once"

    # a changed autoscaler config applies at once and rolls nobody
    kept = {w.name for w in stack.workers(name)}
    assert services.spec_hash(stack.deploy(spec(name, "new", n=3))) == new_hash
    ws = stack.wait_workers(name, 3, "idle", timeout=30)
    assert kept <= {w.name for w in ws} and {w.spec_hash for w in ws} == {new_hash}
    assert scaler.output().count("(spec changed)") == 2
    assert "Traceback" not in scaler.output()
