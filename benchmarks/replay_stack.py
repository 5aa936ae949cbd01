"""The moving parts of ``benchmarks/replay.py``: the stacks a trace is replayed against, the feeder
and the sampler that counts worker processes.

Why a sampler and not the stacks' own books: the figure compared across rows is worker-seconds,
the sum over worker *processes* of their lifetimes, and the only view every row shares is the
process table. A scalejob worker is a process the autoscaler forks (its pid is in
``keys.local_workers``); a plain Celery worker slot is a direct child of the ``celery worker``
process (prefork pool; the ``sh -c`` a task runs is a grandchild and does not count). The
process's start time in ``/proc/PID/stat`` (clock ticks since boot; the boot instant from
``/proc/uptime``) gives its start to 10 ms; its exit is seen by the next sample (0.1 s), so a
lifetime is off by at most one sample period. (``psutil``'s ``create_time`` is not used: it
takes the boot time from ``/proc/stat``'s whole seconds and was measured 0.8 s early here.)
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from benchmarks.common import QUIET, World, wait_until
from tests.helpers import free_port, python_argv

SAMPLE_S = 0.1
_BOOT = time.time() - float(Path("/proc/uptime").read_text().split()[0])
_TICK = os.sysconf("SC_CLK_TCK")


def born(pid: int) -> float:
    """When ``pid`` started (epoch seconds, to the clock tick); raises OSError when it is gone."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return _BOOT + int(fields[19]) / _TICK


@dataclass
class Life:
    """One worker process as the sampler saw it (epoch seconds)."""

    pid: int
    born: float  # the kernel's start time of the process
    last_seen: float
    gone: float | None = None
    ready: float | None = None  # first sample where its registry state was idle or busy (scalejob)


@dataclass
class Sampler:
    """Every ``SAMPLE_S``: which worker pids are alive (and, for scalejob, which are ready)."""

    pids: Callable[[], set[int]]
    ready: Callable[[], set[int]] = set
    lives: dict[int, Life] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> int:
        now = time.time()
        try:
            seen, ready = self.pids(), self.ready()
        except Exception:  # noqa: BLE001 - a Redis blip loses one sample, not the run
            return sum(1 for x in self.lives.values() if x.gone is None)
        for pid in seen:
            life = self.lives.get(pid)
            if life is None or life.gone is not None:
                try:
                    life = self.lives[pid] = Life(pid, born(pid), now)
                except (OSError, IndexError, ValueError):
                    continue
            life.last_seen = now
            if life.ready is None and pid in ready:
                life.ready = now
        for life in self.lives.values():
            if life.gone is None and life.pid not in seen:
                life.gone = (life.last_seen + now) / 2  # it died between the two samples
        return len(seen)

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.wait(SAMPLE_S):
                self.sample()

        self.sample()
        self._thread = threading.Thread(target=loop, name="replay-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.sample()

    def alive(self) -> int:
        return sum(1 for x in self.lives.values() if x.gone is None)

    def intervals(self, t0: float, end: float) -> list[tuple[float, float]]:
        """Each life clamped to [t0, end]: a pool started before the replay costs from t0."""
        out = []
        for x in self.lives.values():
            a, b = max(x.born, t0), min(x.gone if x.gone is not None else end, end)
            if b > a:
                out.append((a, b))
        return out

    def start_times(self) -> list[float]:
        """Process start -> first seen ready, per worker that got there while sampled."""
        return [x.ready - x.born for x in self.lives.values() if x.ready is not None and x.ready > x.born]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@dataclass
class Target:
    """One row's stack: how to enqueue task i, read its (start, end), count its workers, finish."""

    label: str
    settings: str
    put: Callable[[int, str], None]
    timings: Callable[[], dict[int, tuple[float | None, float | None]]]  # i -> (started, finished)
    sampler: Sampler
    floor: int  # workers it keeps with no work: the run ends when it is back there
    settle_cap: float  # how long after the last task to wait for it to get there
    spec_cfg: dict[str, Any] | None = None  # the autoscaler block (scalejob rows), for the simulator


def command(i: int, duration: float, ran_log: Path) -> str:
    """Task i's shell line: note the run (ran-twice counts lines), then sleep the duration."""
    return f"echo {i} >> {ran_log}; sleep {duration:.3f}"


def autoscaler_block(policy: dict[str, float], max_workers: int, grace: float, window: float) -> dict[str, Any]:
    return {"min": 0, "max": max_workers, "strategies": policy,
            "behavior": {"onZero": {"scaleDownGracePeriodSeconds": grace}, "scaleDown": {"stabilizationWindowSeconds": window}}}


@contextmanager
def scalejob_up(w: World, label: str, autoscaler: dict[str, Any], settle_cap: float) -> Iterator[Target]:
    """A real ``scalejob up SPEC`` (API, autoscaler forking workers from its template) on the world's Redis."""
    from app.core import keys
    from app.core.specs import parse_spec
    from app.queue import records
    from app.queue.put import put
    from app.queue.workers import list_workers

    raw = {"metadata": {"name": w.name("replay")}, "autoscaler": autoscaler}
    spec = parse_spec(raw)
    spec_path = w.tmp / f"{spec.name}.json"
    spec_path.write_text(json.dumps(raw))
    proc = w._spawn(python_argv("-m", "app.cli", "up", str(spec_path), "--port", str(free_port()), "--stop-timeout", "30"), "up")
    wait_until(lambda: w.r.exists(keys.autoscaler_lock()) or not proc.alive(), 90, "scalejob up's autoscaler to lead", 0.1)
    if not proc.alive():
        raise RuntimeError(f"scalejob up exited: {proc.output()[-2000:]}")
    rids: dict[int, str] = {}

    def pids() -> set[int]:
        local = {json.loads(v)["pid"] for v in w.r.hvals(keys.local_workers())}
        return {p for p in local | {x.pid for x in list_workers(w.r, spec.name)} if _alive(p)}

    def ready() -> set[int]:
        return {x.pid for x in list_workers(w.r, spec.name) if x.state in ("idle", "busy")}

    def put_one(i: int, cmd: str) -> None:
        rids[i] = put(w.r, spec, "command", cmd.encode())[1]

    def timings() -> dict[int, tuple[float | None, float | None]]:
        out: dict[int, tuple[float | None, float | None]] = {}
        for i, rid in rids.items():
            rec = records.get(w.r, rid)
            ok = rec is not None and rec.state == "succeeded"
            out[i] = (rec.started_at if rec else None, rec.finished_at if ok else None)
        return out

    policy = ", ".join(f"{k} {v:g}" for k, v in autoscaler["strategies"].items())
    b = autoscaler["behavior"]
    settings = (f"`scalejob up`, min 0 max {autoscaler['max']}, {policy}, grace {b['onZero']['scaleDownGracePeriodSeconds']:g} s, "
                f"window {b['scaleDown']['stabilizationWindowSeconds']:g} s, workers forked from the template")
    try:
        yield Target(label, settings, put_one, timings, Sampler(pids, ready), 0, settle_cap, autoscaler)
    finally:
        proc.signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except Exception:  # noqa: BLE001 - the world kills what is left
            pass


@contextmanager
def celery_worker(w: World, label: str, pool_flag: str, floor: int, settle_cap: float) -> Iterator[Target]:
    """A plain ``celery worker`` of ``benchmarks.plain_app:defaults`` (Celery as it comes, prefork)."""
    from app.core import keys
    from benchmarks.plain_app import defaults

    queue, run = w.name("replayq"), uuid.uuid4().hex
    name = f"{queue}@replay"
    argv = python_argv("-m", "celery", "-A", "benchmarks.plain_app:defaults", "worker", "-Q", queue, "-n", name,
                       pool_flag, "--loglevel", QUIET, "--without-mingle", "--without-gossip")
    proc = w._spawn(argv, "celery")
    w.wait_plain_ready([name], timeout=90)

    def pids() -> set[int]:
        try:
            return {c.pid for c in psutil.Process(proc.pid).children() if c.status() != psutil.STATUS_ZOMBIE}
        except psutil.Error:
            return set()

    def put_one(i: int, cmd: str) -> None:
        defaults.send_task("bench.timed", args=[run, cmd], queue=queue, task_id=str(i))

    def timings() -> dict[int, tuple[float | None, float | None]]:
        out: dict[int, tuple[float | None, float | None]] = {}
        for k, v in w.r.hgetall(keys.bench(run)).items():
            e = json.loads(v)
            out[int(k)] = (e["start"], e["end"])
        return out

    settings = f"`celery worker {pool_flag}`, prefork, Celery's defaults (prefetch 4, early ack)"
    try:
        yield Target(label, settings, put_one, timings, Sampler(pids), floor, settle_cap)
    finally:
        proc.signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except Exception:  # noqa: BLE001
            pass


def feed(trace: list[tuple[float, float]], target: Target, ran_log: Path) -> tuple[float, list[float]]:
    """Put task i at t0 + arrival_i (the real clock); returns (t0, the put times)."""
    sent: list[float] = []
    t0 = time.time() + 0.2
    for i, (arrival, duration) in enumerate(trace):
        delay = t0 + arrival - time.time()
        if delay > 0:
            time.sleep(delay)
        sent.append(time.time())
        target.put(i, command(i, duration, ran_log))
    return t0, sent


def ran_counts(ran_log: Path) -> dict[int, int]:
    counts: dict[int, int] = {}
    if ran_log.exists():
        for line in ran_log.read_text().split():
            counts[int(line)] = counts.get(int(line), 0) + 1
    return counts
