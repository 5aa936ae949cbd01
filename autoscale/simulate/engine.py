"""The discrete-event engine: arrivals, policy ticks, worker ready, task done, kill, redelivery.

Workers cost from spawn to exit (start time included). A task's wait is from its arrival to the
start of the run that finished it: a task cut by a kill waits again, and comes back only after
``redelivery`` seconds (the broker's visibility timeout on Redis; label it with the figure used).
The policy sees what the controller would: waiting and running counts, the workers, the recent
run times of finished tasks (the last ``RUN_TIMES_KEPT``, as app/queue/run_times.py keeps them)
and the worker start time.
"""

from __future__ import annotations

import csv
import heapq
import itertools
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.queue.run_times import KEPT as RUN_TIMES_KEPT
from autoscale.policy import Decision, Observation, WorkerView
from autoscale.simulate.policies import Policy
from autoscale.target_wait import summarize


@dataclass
class Task:
    arrival: float
    duration: float
    started: float | None = None
    finished: float | None = None
    interrupted: int = 0


@dataclass
class SimWorker:
    name: str
    spawned_at: float
    standby: bool
    state: str = "starting"  # starting | idle | busy | draining | standby | terminating | stopped
    task: Task | None = None
    busy_since: float | None = None
    stopped_at: float | None = None

    @property
    def alive(self) -> bool:
        return self.state != "stopped"


@dataclass
class SimResult:
    policy: str
    worker_seconds: float
    waits: list[float]
    spawns: int
    stops: int
    interrupted: int
    horizon: float
    timeline: list[tuple[float, int, int, int]]  # (t, load, live workers, desired)
    events: list[tuple[float, str]]  # (t, "spawn" | "stop")
    busy_seconds: float = 0.0  # worker time spent running tasks, cut runs included
    unfinished: int = 0  # tasks still not done when the replay ended (cut again and again)
    settings: dict[str, Any] = field(default_factory=dict)  # what the run was made with (start time, grace, redelivery)

    @property
    def idle_seconds(self) -> float:
        """Worker time not spent on a task: starts, idle waits, drains; what a policy can save."""
        return self.worker_seconds - self.busy_seconds

    def quantile(self, q: float) -> float:
        xs = sorted(self.waits)
        return xs[min(int(q * len(xs)), len(xs) - 1)] if xs else 0.0

    @property
    def p50(self) -> float:
        return self.quantile(0.50)

    @property
    def p95(self) -> float:
        return self.quantile(0.95)


def load_trace(path: str | Path) -> list[tuple[float, float]]:
    """``arrival,duration`` rows (seconds; a header row is allowed), sorted by arrival."""
    out = []
    if not Path(path).is_file():
        raise ValueError(f"trace {path}: no such file")
    with open(path, newline="") as f:
        for n, row in enumerate(csv.reader(f), 1):
            if not row or row[0].strip().startswith("#"):
                continue
            try:
                arrival, duration = float(row[0]), float(row[1])
            except (ValueError, IndexError):
                if n == 1:
                    continue  # header
                raise ValueError(f"{path}:{n}: expected 'arrival,duration' in seconds, got {','.join(row)!r}") from None
            if duration < 0:
                raise ValueError(f"{path}:{n}: negative duration {duration}")
            out.append((arrival, duration))
    return sorted(out)


MAX_REDELIVERIES = 3  # the replay runs on for at most this many redelivery delays past the trace


class _Run:
    """One replay; the state the event handlers share."""

    pending_wake: bool  # set by run(), read by handle()

    def __init__(self, trace: list[tuple[float, float]], policy: Policy, start_time: float, grace: float,
                 redelivery: float, tail: float) -> None:
        self.policy, self.start_time, self.grace = policy, start_time, grace
        self.redelivery, self.tail = redelivery, tail
        # grows when a cut task comes back late
        self.horizon = self.base_horizon = (max(a + d for a, d in trace) if trace else 0.0) + tail
        self.tasks = [Task(a, d) for a, d in trace]
        self.events: list[tuple[float, int, str, Any]] = []
        self.seq, self.names = itertools.count(), itertools.count()
        self.queue: deque[Task] = deque()
        # alive ones; stopped ones move to ``gone`` (keeps each event O(live workers))
        self.workers: list[SimWorker] = []
        self.gone: list[SimWorker] = []
        self.log: list[tuple[float, str]] = []
        self.timeline: list[tuple[float, int, int, int]] = []
        self.recent: deque[float] = deque(maxlen=RUN_TIMES_KEPT)
        self.desired = 0
        self.busy = 0.0

    def push(self, t: float, kind: str, data: Any = None) -> None:
        heapq.heappush(self.events, (t, next(self.seq), kind, data))

    def spawn(self, now: float, standby: bool) -> None:
        w = SimWorker(f"w{next(self.names)}", now, standby)
        self.workers.append(w)
        self.log.append((now, "spawn"))
        self.push(now + self.start_time, "ready", w)

    def stop(self, w: SimWorker, now: float) -> None:
        if w.alive:
            w.state, w.stopped_at = "stopped", now
            self.log.append((now, "stop"))
            self.workers.remove(w)
            self.gone.append(w)

    def dispatch(self, now: float) -> None:
        for w in self.workers:
            if not self.queue:
                return
            if w.state == "idle":
                t = self.queue.popleft()
                t.started, w.task, w.state, w.busy_since = now, t, "busy", now
                self.push(now + t.duration, "done", (w, t))

    def views(self) -> tuple[WorkerView, ...]:
        out = []
        for w in self.workers:
            if w.state == "stopped":
                continue
            if w.state == "starting" and w.standby:
                state = "standby"
            else:
                state = {"terminating": "draining"}.get(w.state, w.state)
            out.append(WorkerView(w.name, state, busy_since=w.busy_since))
        return tuple(out)

    def tick(self, now: float) -> None:
        running = sum(1 for w in self.workers if w.task is not None)
        obs = Observation(waiting=len(self.queue), running=running, workers=self.views(),
                          run_times=summarize(list(self.recent)), start_seconds=self.start_time)
        d = self.policy.decide(obs, now)
        self.desired = d.desired
        self.apply(d, now)

    def apply(self, d: Decision, now: float) -> None:
        by_name = {w.name: w for w in self.workers}
        for name in d.victims:
            w = by_name[name]
            if not w.alive:
                continue
            if w.state in ("starting", "idle", "standby"):
                self.stop(w, now)
            elif w.state == "busy" and self.policy.drains:
                w.state = "draining"
            elif w.state == "busy":
                w.state = "terminating"
                self.push(now + self.grace, "kill", w)
        for name in d.activate:
            w = by_name[name]
            w.standby = False
            if w.state == "standby":
                w.state = "idle"
        gone = set(d.victims)
        live = [w for w in self.workers if w.alive and w.name not in gone]
        consuming = sum(1 for w in live if w.state in ("starting", "idle", "busy") and not w.standby)
        spare = sum(1 for w in live if w.standby and w.state in ("starting", "standby"))
        for _ in range(d.desired - consuming):
            self.spawn(now, False)
        for _ in range(d.standby - spare):
            self.spawn(now, True)
        self.dispatch(now)

    def handle(self, now: float, kind: str, data: Any) -> None:
        if kind == "arrive":
            self.queue.append(data)
            self.dispatch(now)
            if self.policy.wake_on_enqueue and self.queue and not self.pending_wake:
                self.pending_wake = True
                self.push(now, "wake")
        elif kind == "wake":
            self.pending_wake = False
            self.tick(now)
        elif kind == "tick":
            self.tick(now)
            self.push(now + self.policy.period, "tick")
        elif kind == "ready":
            if data.state == "starting":
                data.state = "standby" if data.standby else "idle"
                self.dispatch(now)
        elif kind == "done":
            self.done(now, *data)
        elif kind == "kill":
            self.kill(now, data)
        elif kind == "redeliver":
            self.queue.appendleft(data)
            self.dispatch(now)

    def done(self, now: float, w: SimWorker, t: Task) -> None:
        if w.task is not t or not w.alive:
            return  # killed before it finished
        t.finished, w.task, w.busy_since = now, None, None
        self.busy += t.duration
        self.recent.append(t.duration)
        if w.state in ("draining", "terminating"):
            self.stop(w, now)
        else:
            w.state = "idle"
        self.dispatch(now)

    def kill(self, now: float, w: SimWorker) -> None:
        """SIGKILL after the termination grace: the task is cut and comes back after the redelivery delay."""
        if w.state != "terminating" or w.task is None:
            return
        t, w.task = w.task, None
        self.busy += now - (t.started or now)
        t.started, t.interrupted = None, t.interrupted + 1
        self.push(now + self.redelivery, "redeliver", t)
        # it still runs, later; but not past MAX_REDELIVERIES delays: a task cut again and again is a livelock,
        # reported unfinished
        latest = self.base_horizon + MAX_REDELIVERIES * (self.redelivery + self.tail)
        self.horizon = min(max(self.horizon, now + self.redelivery + t.duration + self.tail), latest)
        self.stop(w, now)

    def run(self) -> None:
        for _ in range(self.policy.cfg.min):  # the floor is up at t=0
            self.workers.append(SimWorker(f"w{next(self.names)}", 0.0, False, state="idle"))
        self.policy.reset(len(self.workers))
        for t in self.tasks:
            self.push(t.arrival, "arrive", t)
        self.push(0.0, "tick")
        self.pending_wake = False
        while self.events:
            now, _, kind, data = heapq.heappop(self.events)
            if now > self.horizon:
                break
            self.handle(now, kind, data)
            load = len(self.queue) + sum(1 for w in self.workers if w.task is not None)
            self.timeline.append((now, load, sum(1 for w in self.workers if w.alive and not w.standby), self.desired))


def simulate(
    trace: list[tuple[float, float]], policy: Policy, start_time: float = 0.6, grace: float = 30.0, tail: float = 600.0,
    redelivery: float = 3600.0,
) -> SimResult:
    """Run ``trace`` through ``policy``; workers take ``start_time`` s from spawn to first task.

    ``grace``: seconds from SIGTERM to SIGKILL of a busy victim (Kubernetes'
    terminationGracePeriodSeconds); ``redelivery``: seconds until a cut task is back in the queue
    (Celery on Redis: ``visibility_timeout``, 3600 s by default).
    """
    sim = _Run(trace, policy, start_time, grace, redelivery, tail)
    sim.run()
    horizon = sim.horizon
    cost = sum((w.stopped_at if w.stopped_at is not None else horizon) - w.spawned_at for w in sim.workers + sim.gone)
    busy = sim.busy + sum(horizon - w.busy_since for w in sim.workers
                          if w.task is not None and w.busy_since is not None)
    return SimResult(
        policy=policy.name,
        worker_seconds=cost,
        # never started: waited to the end, at least
        waits=[(t.started if t.started is not None else horizon) - t.arrival for t in sim.tasks],
        spawns=sum(1 for _, e in sim.log if e == "spawn"),
        stops=sum(1 for _, e in sim.log if e == "stop"),
        interrupted=sum(t.interrupted for t in sim.tasks),
        horizon=horizon,
        timeline=sim.timeline,
        events=sim.log,
        busy_seconds=busy,
        unfinished=sum(1 for t in sim.tasks if t.finished is None),
        settings={"start_time": start_time, "grace": grace, "redelivery": redelivery},
    )
