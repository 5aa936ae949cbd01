"""Workers started by hand on other hosts: the autoscaler counts them as capacity and drains them, never kills them."""

from __future__ import annotations

from tests.autoscaling import Autoscalers, autoscaled_spec
from tests.conftest import Stack
from tests.helpers import wait_for
from tests.hosts.conftest import Hosts

FAST_SCALE = {"onZero": {"scaleDownGracePeriodSeconds": 1}, "scaleDown": {"stabilizationWindowSeconds": 0.5}}


def test_a_remote_worker_is_capacity_for_the_autoscaler_and_is_drained_through_celery_not_killed(hosts: Hosts, host_stack: Stack) -> None:
    stack = host_stack
    autoscalers = Autoscalers(stack)
    try:
        spec = stack.deploy(autoscaled_spec(stack, min=0, max=2, strategies={"avg_waiting_length": 1}, behavior=FAST_SCALE))
        name = f"{spec.name}-remote@host1"
        remote = hosts.worker(1, stack, spec.name, name)
        stack.wait_workers(spec.name, 1, "idle", timeout=60)
        autoscalers.wait_leader(autoscalers.start())
        rid = stack.put(spec, "command", "sleep 3")
        rec = stack.wait_done(rid, timeout=30)
        assert rec.state == "succeeded" and rec.worker == name, "the remote worker took the task"
        spawned = [a for d in autoscalers.decisions(spec.name) for a in d["actions"] if a.startswith("spawn")]
        assert spawned == [], f"the remote worker counted as capacity; yet the autoscaler spawned {spawned}"
        # load 0: scale to zero drains the remote worker through Celery control; it exits on its own
        wait_for(lambda: remote.popen.poll() is not None, 30, interval=0.1, what="the remote worker to be shut down")
        code = remote.popen.returncode
        actions = [a for d in autoscalers.decisions(spec.name) for a in d["actions"]]
        assert code == 0, f"warm shutdown, not a kill (exit code {code})"
        assert any(a.startswith(f"shutdown {name}") for a in actions), actions
        assert autoscalers.local() == {}, "no backend ever owned it"
    finally:
        autoscalers.close()
