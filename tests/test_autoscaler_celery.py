"""`scalejob autoscale --celery-app`: a plain Celery project scaled by the same policy and scale-in."""

from __future__ import annotations

import sys
import time

from tests.autoscaling import Autoscalers, autoscalers  # noqa: F401 - fixture
from tests.conftest import Stack
from tests.helpers import wait_for

GRACE = 2.0


def test_plain_celery_workers_scale_up_drain_to_completion_and_back_to_zero(stack: Stack, autoscalers: Autoscalers) -> None:
    if not stack.broker_url.startswith("redis"):
        import pytest

        pytest.skip("the plain Celery project in this test uses a Redis broker")
    queue = stack.service_name("images")
    env = {"PLAIN_CELERY_BROKER": stack.broker_url}
    scaler = autoscalers.start(
        "--celery-app", "tests.plain_celery_app:app", "--queue", queue,
        "--worker-cmd", f"{sys.executable} -m celery -A tests.plain_celery_app worker -Q {queue} -c 1 --without-mingle --without-gossip",
        "--min", "0", "--max", "3", "--avg-waiting-length", "2", "--grace", str(GRACE), "--stabilization", "0.5",
        env=env,
    )
    from app.core import keys

    wait_for(lambda: stack.r.exists(keys.autoscaler_lock() + f":celery:{queue}"), 20, what="plain autoscaler to lead")
    log_path = stack.tmp / "plain.log"
    from celery import Celery

    client = Celery("client", broker=stack.broker_url)
    ids = [f"t{i}" for i in range(6)]
    t0 = time.time()
    for i, tid in enumerate(ids):
        client.send_task("plain.work", args=[tid, 3.0 if i == 0 else 1.0, str(log_path)], queue=queue)

    def lines() -> list[str]:
        return log_path.read_text().split() if log_path.exists() else []

    wait_for(lambda: "start" in lines(), 15, what="a first task to start")
    t_first = time.time() - t0
    most = 0

    def finished() -> bool:
        nonlocal most
        most = max(most, len(autoscalers.live_worker_pids(queue)))
        return lines().count("end") == len(ids)

    wait_for(finished, 60, interval=0.1, what="all plain tasks")
    entries = log_path.read_text().splitlines()
    for tid in ids:  # exactly once, start and end in the same process
        starts = [e.split()[2] for e in entries if e.startswith(f"start {tid} ")]
        ends = [e.split()[2] for e in entries if e.startswith(f"end {tid} ")]
        assert len(starts) == 1 and starts == ends, (tid, entries)
    desired = [d["desired"] for d in autoscalers.decisions(queue)]
    assert t_first < 5.0 and most >= 2 and max(desired) == 3, (t_first, most, desired)
    t_done = time.time()
    wait_for(lambda: not autoscalers.live_worker_pids(queue), GRACE + 15, interval=0.1, what="plain workers to stop")
    assert time.time() - t_done >= GRACE - 1.0
    actions = [x for d in autoscalers.decisions(queue) for x in d["actions"]]
    assert any(x.startswith("drain") for x in actions) and any(x.startswith("stop") for x in actions), actions
    assert any(d["rule"] == "to_zero" for d in autoscalers.decisions(queue))
    assert scaler.alive()
