"""Cost of one autoscaler tick (observe + decide + record) vs the number of waiting tasks.

``python -m benchmarks.tick_cost [REDIS_URL] [--ticks N] [--workers W]``

One service with W registered workers (half of them busy on a task) and 1,000 / 10,000 /
100,000 messages waiting on its broker queue. Each tick is the real ``Controller.tick()``: the
local backend's process list, the registry read (one pipeline), the broker depth (one pipelined
LLEN over kombu's priority lists per queue), ``policy.decide``, and the decision written to the
Redis history and Prometheus. ``max`` equals W, so the decision takes no action and the figure is
the tick's own cost. Target: <= 5 ms at 10,000 waiting and 100 workers, flat in the task count.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks.common import DEFAULT_REDIS, markdown_table, percentile, world


def fill_queue(r, queue: str, n: int) -> None:  # noqa: ANN001
    """``n`` opaque messages on the broker list (never consumed: nothing here reads them)."""
    have = r.llen(queue)
    with r.pipeline(transaction=False) as p:
        for start in range(have, n, 1000):
            p.lpush(queue, *(b"{}" for _ in range(min(1000, n - start))))
        p.execute()


def register_workers(r, service: str, n: int) -> None:  # noqa: ANN001
    from workers import registry

    for i in range(n):
        name = f"{service}-fake{i}@bench"
        registry.register(r, name, service, state="idle")
        if i % 2:
            registry.task_started(r, name, f"req-{service}-{i}")


def measure(ticks: int, workers: int, sizes: list[int], redis_url: str) -> list[list[object]]:
    from app import keys
    from app.celery_app import celery_app
    from app.connections import endpoints
    from app.specs import parse_spec
    from app import services
    from autoscale.backends.local import LocalBackend
    from autoscale.controller import Controller, ScalejobTargets
    from autoscale.metrics.broker import BrokerDepth
    from autoscale.metrics.registry import RegistryObserver
    from autoscale.scalein import Control

    rows = []
    with world(redis_url, "tick") as w:
        r = w.r
        spec = parse_spec({"metadata": {"name": w.name("tick")}, "autoscaler": {"min": 0, "max": workers}})
        services.save(r, spec)
        observer = RegistryObserver(r)
        ctl = Controller(r, LocalBackend(r, Path(w.tmp) / "logs"), BrokerDepth(endpoints().broker_url), observer, Control(celery_app), ScalejobTargets(r))
        queue = keys.celery_queue(spec.name)
        for size in sizes:
            fill_queue(r, queue, size)
            times = []
            for i in range(ticks):
                if i % 50 == 0:
                    register_workers(r, spec.name, workers)  # keep the fake heartbeats fresh (untimed)
                t0 = time.perf_counter()
                [entry] = ctl.tick()
                times.append((time.perf_counter() - t0) * 1000)
                assert entry["actions"] == [], entry
            waiting = entry["inputs"]["waiting"]
            rows.append([waiting, workers, ticks, percentile(times, 50), percentile(times, 95), max(times)])
            print(f"waiting {waiting}, workers {workers}: p50 {percentile(times, 50):.2f} ms p95 {percentile(times, 95):.2f} ms", flush=True)
        r.delete(queue)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("redis", nargs="?", default=DEFAULT_REDIS)
    ap.add_argument("--ticks", type=int, default=300)
    ap.add_argument("--workers", type=int, default=100)
    args = ap.parse_args()
    rows = measure(args.ticks, args.workers, [1_000, 10_000, 100_000], args.redis)
    print()
    print(markdown_table(["waiting tasks", "registered workers", "ticks", "p50 ms", "p95 ms", "max ms"], rows))


if __name__ == "__main__":
    main()
