"""Autoscaler reaction time: enqueue -> a *new* worker starts the task, vs plain Celery.

``python -m benchmarks.reaction [REDIS_URL] [-n TRIALS]``

One run, one broker, the same machine, each scenario ``-n`` times (default 20):

- scalejob cold, at zero: ``scalejob autoscale`` running, no worker; ``put`` one task; until its
  record's ``started_at``. Includes detection (pub/sub wake), the spawn, the worker's start.
  Twice: ``--no-fork`` (a fresh ``python -m app.cli worker``) and the default (forked from the
  pre-imported template, ``workers/process/template.py``).
  The same trials measure scale-to-zero: last task end -> ``to_zero`` decision and worker exit,
  against ``scaleDownGracePeriodSeconds``.
- scalejob cold, saturated: one worker busy on a long task (min 1); ``put`` one more.
- scalejob warm standby: one standby worker (``behavior.warmStandby: 1``); ``put`` one task.
- plain Celery by hand: a task waits; ``celery worker`` (scalejob's Celery settings, threads
  pool) is spawned; spawn -> the task body starts. No detection at all: the best case of "a
  script starts a worker when it sees work".
- Celery ``--autoscale=4,1`` (Celery defaults, prefork; a fresh worker per trial): one task
  runs, 3 more are sent; until the first of them starts and until all 4 run. (It only grows
  the pool of a worker that is already running, and shrinks after a fixed keepalive.)
"""

from __future__ import annotations

import argparse
import json
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from benchmarks.common import DEFAULT_REDIS, QUIET, World, markdown_table, percentile, wait_until, world
from tests.helpers import python_argv

GRACE = 1.0


def _deploy(w: World, **autoscaler: Any) -> Any:
    from app.core.specs import parse_spec
    from app.queue import services

    spec = parse_spec({"metadata": {"name": w.name("react")}, "autoscaler": autoscaler})
    services.save(w.r, spec)
    return spec


def _workers(w: World, service: str, *states: str) -> list[Any]:
    from app.queue.workers import list_workers

    return [x for x in list_workers(w.r, service) if not states or x.state in states]


def _started(w: World, rid: str) -> float:
    from app.queue import records

    return wait_until(lambda: (rec := records.get(w.r, rid)) and rec.started_at, 60, f"request {rid} to start")


def _done(w: World, rid: str) -> Any:
    from app.queue import records

    return wait_until(lambda: (rec := records.get(w.r, rid)) and rec.done and rec, 60, f"request {rid} to finish", 0.01)


def _local_pids(w: World) -> set[int]:
    from app.core import keys

    return {json.loads(v)["pid"] for v in w.r.hvals(keys.local_workers())}


def _alive(pids: set[int]) -> set[int]:
    """The pids that are still running (a zombie has exited)."""
    import psutil

    out = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.add(pid)
        except psutil.Error:
            pass
    return out


@contextmanager
def _autoscaler(w: World, *args: str) -> Iterator[None]:
    """A leading ``scalejob autoscale`` for the block; stopped with SIGTERM after it, which
    stops its workers too (a template-forked worker is not in the autoscaler's process tree)."""
    from app.core import keys

    proc = w._spawn(python_argv("-m", "app.cli", "autoscale", *args), "autoscaler")
    wait_until(lambda: (v := w.r.get(keys.autoscaler_lock())) and f":{proc.pid}:" in v.decode(), 30, "autoscaler to lead", 0.05)
    try:
        yield
    finally:
        proc.signal(signal.SIGTERM)
        proc.wait(timeout=60)


def scalejob_cold_at_zero(w: World, n: int, fork: bool = True) -> tuple[list[float], list[float], list[float]]:
    """(reaction, to_zero decision after the last task, worker exit after the last task)."""
    from app.queue import decisions as history
    from app.queue.put import put

    spec = _deploy(w, min=0, max=4, strategies={"avg_waiting_length": 1},
                   behavior={"onZero": {"scaleDownGracePeriodSeconds": GRACE}, "scaleDown": {"stabilizationWindowSeconds": 0.5}})
    with _autoscaler(w, *([] if fork else ["--no-fork"])):
        react, decided, exited = [], [], []
        for _ in range(n):
            t0 = time.time()
            rid = put(w.r, spec, "command", b"true")[1]
            react.append(_started(w, rid) - t0)
            end = _done(w, rid).finished_at
            wait_until(lambda: not _alive(_local_pids(w)) and not _workers(w, spec.name), 30, "scale to zero", 0.01)
            exited.append(time.time() - end)
            wait_until(lambda: not _local_pids(w), 10, "the autoscaler to forget the worker", 0.01)
            zero = [d for d in history.recent(w.r, spec.name, 50) if d["rule"] == "to_zero" and d["at"] >= end]
            decided.append(zero[-1]["at"] - end)
        return react, decided, exited


def scalejob_cold_saturated(w: World, n: int) -> list[float]:
    from app.queue.put import put

    spec = _deploy(w, min=1, max=4, strategies={"avg_waiting_length": 1},
                   behavior={"scaleDown": {"stabilizationWindowSeconds": 0.2}})
    with _autoscaler(w):
        wait_until(lambda: _workers(w, spec.name, "idle"), 60, "the min worker", 0.05)
        out = []
        for _ in range(n):
            blocker = put(w.r, spec, "command", b"sleep 2")[1]
            _started(w, blocker)
            t0 = time.time()
            rid = put(w.r, spec, "command", b"true")[1]
            out.append(_started(w, rid) - t0)
            _done(w, blocker)
            wait_until(lambda: len(_local_pids(w)) == 1 and len(_workers(w, spec.name)) == 1, 30, "back to 1 worker", 0.02)
        return out


def scalejob_warm(w: World, n: int) -> list[float]:
    from app.queue.put import put

    spec = _deploy(w, min=0, max=4, strategies={"avg_waiting_length": 1},
                   behavior={"warmStandby": 1, "onZero": {"scaleDownGracePeriodSeconds": GRACE}, "scaleDown": {"stabilizationWindowSeconds": 0.2}})
    with _autoscaler(w):
        out = []
        for _ in range(n):
            wait_until(lambda: [s.state for s in _workers(w, spec.name)] == ["standby"] and len(_local_pids(w)) == 1, 60, "exactly one standby worker", 0.02)
            t0 = time.time()
            rid = put(w.r, spec, "command", b"true")[1]
            out.append(_started(w, rid) - t0)
            _done(w, rid)
        return out


def _plain_start(w: World, run: str, task_id: str) -> float:
    from app.core import keys

    return wait_until(lambda: (v := w.r.hget(keys.bench(run), task_id)) and json.loads(v)["start"], 60, f"plain task {task_id}")


def plain_spawn(w: World, n: int) -> list[float]:
    from benchmarks.plain_app import tuned

    out, queue, run = [], w.name("plainq"), uuid.uuid4().hex
    for i in range(n):
        tid = f"t{i}"
        tuned.send_task("bench.timed", args=[run], queue=queue, task_id=tid)
        t0 = time.time()
        proc = w.plain_worker("tuned", queue, f"{queue}-{i}@bench", pool="threads", same_flags=True)
        out.append(_plain_start(w, run, tid) - t0)
        w.stop(proc)
    return out


def celery_autoscale(w: World, n: int) -> tuple[list[float], list[float]]:
    """Per trial a fresh ``celery worker --autoscale=4,1`` (Celery defaults, prefork): one task
    runs, then 3 more are sent. Returns (send -> first extra task starts, send -> all 4 running)."""
    from benchmarks.plain_app import defaults

    first, burst = [], []
    for _ in range(n):
        queue, run = w.name("autoq"), uuid.uuid4().hex
        name = f"{queue}@bench"
        argv = python_argv("-m", "celery", "-A", "benchmarks.plain_app:defaults", "worker", "-Q", queue, "-n", name,
                           "--autoscale=4,1", "--loglevel", QUIET, "--without-mingle", "--without-gossip")
        proc = w._spawn(argv, "celery-autoscale")
        w.wait_plain_ready([name])
        defaults.send_task("bench.timed", args=[run, "sleep 1.5"], queue=queue, task_id="blocker")
        wait_until(lambda: any((defaults.control.inspect(destination=[name], timeout=0.5).active() or {}).values()), 30, "blocker to run", 0.02)
        t0 = time.time()
        for k in range(3):
            defaults.send_task("bench.timed", args=[run, "sleep 0.5"], queue=queue, task_id=f"t{k}")
        starts = [_plain_start(w, run, f"t{k}") for k in range(3)]
        first.append(min(starts) - t0)
        burst.append(max(starts) - t0)
        w.stop(proc)
    return first, burst


def _plain_end(w: World, run: str, task_id: str) -> float:
    from app.core import keys

    return wait_until(lambda: (v := w.r.hget(keys.bench(run), task_id)) and json.loads(v)["end"], 60, f"plain task {task_id} end")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("redis", nargs="?", default=DEFAULT_REDIS)
    ap.add_argument("-n", type=int, default=20)
    args = ap.parse_args()
    rows = []

    def add(label: str, xs: list[float], note: str = "") -> None:
        rows.append([label, len(xs), percentile(xs, 50), percentile(xs, 95), max(xs), note])
        print(f"{label}: p50 {percentile(xs, 50):.3f}s p95 {percentile(xs, 95):.3f}s max {max(xs):.3f}s", flush=True)

    with world(args.redis, "react") as w:
        add("scalejob --no-fork, cold, at zero (fresh `scalejob worker` process)", scalejob_cold_at_zero(w, args.n, fork=False)[0], "includes detection")
    with world(args.redis, "react") as w:
        react, decided, exited = scalejob_cold_at_zero(w, args.n)
    add("scalejob, cold, at zero (forked from the template)", react, "includes detection")
    add(f"scalejob, scale to zero: to_zero decision after last task (grace {GRACE:g}s)", decided)
    add(f"scalejob, scale to zero: worker exited after last task (grace {GRACE:g}s)", exited)
    with world(args.redis, "react") as w:
        add("scalejob, cold, saturated (1 busy worker, min 1; forked)", scalejob_cold_saturated(w, args.n), "includes detection")
    with world(args.redis, "react") as w:
        add("scalejob, warm standby (add_consumer)", scalejob_warm(w, args.n), "includes detection")
    with world(args.redis, "react") as w:
        add("plain Celery: `celery worker` spawned by hand (spawn -> first task)", plain_spawn(w, args.n), "no detection")
    with world(args.redis, "react") as w:
        first, burst = celery_autoscale(w, args.n)
    add("plain Celery `--autoscale=4,1`, saturated: 1 busy, 3 sent -> first starts", first, "in-worker; fresh worker per trial")
    add("plain Celery `--autoscale=4,1`, saturated: 1 busy, 3 sent -> all 4 running", burst, "keeps extra processes 30 s idle (fixed)")
    print()
    print(markdown_table(["scenario", "n", "p50 s", "p95 s", "max s", "note"], rows))


if __name__ == "__main__":
    main()
