"""Cost of one autoscaler tick (observe + decide + act + record), without and with actions.

``python -m benchmarks.tick_cost [REDIS_URL] [--ticks N] [--workers W] [--rounds R] [--against PATH]``

One service with W registered workers (half of them busy on a task) and 1,000 / 10,000 /
100,000 messages waiting on its broker queue. Each tick is the real ``Controller.tick()``: the
local backend's process list, the registry read (one pipelined script), the broker depth,
``policy.decide``, the actions, and the decision written to the Redis history and Prometheus.

- *no action*: ``max`` equals W, so the decision takes no action: the tick's own cost.
- *with actions* (10,000 waiting, W workers): R rounds of two ticks. ``max`` is raised to W + 2,
  so the tick spawns two workers; then lowered back to W, so the next tick stops them (the two
  are ``starting``: they are the victims). A spawn is the local backend's real spawn (the fenced
  record, then a ``Popen``) of a stand-in process (``python -S -c 'sleep'`` carrying
  ``--name NAME``; no template: a template fork of a real worker costs more, 25-320 ms measured).
  ``max`` is switched through the controller's target list (no spec re-parse inside the tick).
  Between ticks, untimed, the benchmark waits for the queued actions to finish and for the
  stand-ins to exit, so every round starts alike.

``--against PATH`` measures a second checkout (e.g. ``git worktree add /tmp/main main``) in the
same run, in a subprocess whose imports come from PATH: the before/after rows of one run.
Target: a tick with actions costs what a tick without does (the actions run off the loop).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import DEFAULT_REDIS, markdown_table, percentile, world


def fill_queue(r, queue: str, n: int) -> None:  # noqa: ANN001
    """``n`` opaque messages on the broker list (never consumed: nothing here reads them)."""
    have = r.llen(queue)
    with r.pipeline(transaction=False) as p:
        for start in range(have, n, 1000):
            p.lpush(queue, *(b"{}" for _ in range(min(1000, n - start))))
        p.execute()


def register_workers(r, service: str, n: int) -> None:  # noqa: ANN001
    from app.queue import workers as registry

    for i in range(n):
        name = f"{service}-fake{i}@bench"
        registry.register(r, name, service, state="idle")
        if i % 2:
            registry.task_started(r, name, f"req-{service}-{i}")


def stand_in(service: str, name: str, standby: bool) -> list[str]:
    """A cheap process that looks like worker ``name`` (never registers; exits on SIGTERM)."""
    return [sys.executable, "-S", "-c", "import time; time.sleep(120)", "worker", service, "--name", name]


def _settle(ctl: Any) -> None:
    """Wait for the actions a tick queued (this checkout); a checkout that acts inline has none."""
    actions = getattr(ctl, "actions", None)
    if actions is not None:
        assert actions.settle(60), "actions did not finish"


def measure(ticks: int, workers: int, sizes: list[int], rounds: int, redis_url: str) -> list[list[object]]:
    from app.core import keys
    from app.core.celery_app import celery_app
    from app.core.connections import endpoints
    from app.core.specs import parse_spec
    from app.queue import services
    from autoscale.backends.local import LocalBackend
    from autoscale.controller import Controller
    from autoscale.metrics.broker import BrokerDepth
    from autoscale.metrics.registry import RegistryObserver
    from autoscale.scalein import Control
    from autoscale.targets import ScalejobTargets

    rows: list[list[object]] = []
    with world(redis_url, "tick") as w:
        r = w.r
        raw = {"metadata": {"name": w.name("tick")},
               "autoscaler": {"min": 0, "max": workers, "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}}}
        spec = parse_spec(raw)
        services.save(r, spec)
        backend = LocalBackend(r, Path(w.tmp) / "logs", command=stand_in)
        ctl = Controller(r, backend, BrokerDepth(endpoints().broker_url), RegistryObserver(r), Control(celery_app), ScalejobTargets(r))
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
            rows.append(["no action", entry["inputs"]["waiting"], workers, ticks, *_stats(times)])
            print(f"waiting {size}: p50 {percentile(times, 50):.2f} ms p95 {percentile(times, 95):.2f} ms", flush=True)
        if rounds:
            r.ltrim(queue, 0, 9_999)
            rows += _with_actions(r, ctl, backend, raw, spec.name, workers, rounds)
        r.delete(queue)
    return rows


def _with_actions(r, ctl: Any, backend: Any, raw: dict[str, Any], service: str, workers: int, rounds: int) -> list[list[object]]:  # noqa: ANN001
    """Rounds of (spawn 2, stop 2) ticks; ``max`` is switched by the target list, so no spec is re-parsed in a tick."""
    from app.core import keys
    from app.core.specs import parse_spec
    from autoscale.config import from_spec
    from autoscale.policy import AutoscalerConfig
    from autoscale.targets import Target

    def cfg(n: int) -> AutoscalerConfig:
        return from_spec(parse_spec({**raw, "autoscaler": {**raw["autoscaler"], "max": n}}))

    current: list[Target] = []
    ctl.targets = lambda: current
    spawn_ms, stop_ms = [], []
    for i in range(rounds):
        if i % 10 == 0:
            register_workers(r, service, workers)
        for c, out, what in ((cfg(workers + 2), spawn_ms, "spawn"), (cfg(workers), stop_ms, "stop")):
            current[:] = [Target(service, (keys.celery_queue(service),), c)]
            t0 = time.perf_counter()
            [entry] = ctl.tick()
            out.append((time.perf_counter() - t0) * 1000)
            assert sum(a.startswith(what) for a in entry["actions"]) == 2, entry
            _settle(ctl)
        deadline = time.monotonic() + 30
        while backend.list(service) and time.monotonic() < deadline:  # the stand-ins exit on SIGTERM
            time.sleep(0.02)
    print(f"spawn ticks: p50 {percentile(spawn_ms, 50):.2f} ms; stop ticks: p50 {percentile(stop_ms, 50):.2f} ms", flush=True)
    return [["spawns 2", 10_000, workers, rounds, *_stats(spawn_ms)], ["stops 2", 10_000, workers, rounds, *_stats(stop_ms)]]


def _stats(times: list[float]) -> list[float]:
    return [round(percentile(times, 50), 2), round(percentile(times, 95), 2), round(max(times), 2)]


def against(path: Path, args: argparse.Namespace) -> list[list[object]]:
    """The same measurement with another checkout's code (its ``app``/``autoscale``; this file's procedure)."""
    code = (f"import json, runpy, sys; sys.argv = ['tick_cost', {args.redis!r}, '--ticks', '{args.ticks}', '--workers', '{args.workers}', "
            f"'--rounds', '{args.rounds}', '--json']; runpy.run_path({str(Path(__file__).resolve())!r}, run_name='__main__')")
    out = subprocess.run([sys.executable, "-c", code], cwd=path, env={**os.environ, "PYTHONPATH": str(path)}, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("redis", nargs="?", default=DEFAULT_REDIS)
    ap.add_argument("--ticks", type=int, default=300)
    ap.add_argument("--workers", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=40, help="rounds of (spawn 2, stop 2) ticks; 0 to skip")
    ap.add_argument("--against", type=Path, help="another checkout to measure in the same run (before/after)")
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = [1_000, 10_000, 100_000]
    rows = [["this checkout", *row] for row in measure(args.ticks, args.workers, sizes, args.rounds, args.redis)]
    if args.json:
        print(json.dumps([row[1:] for row in rows]))
        return
    if args.against:
        rows += [[f"{args.against}", *row] for row in against(args.against, args)]
    print()
    print(markdown_table(["code", "tick", "waiting tasks", "registered workers", "ticks", "p50 ms", "p95 ms", "max ms"], rows))


if __name__ == "__main__":
    main()
