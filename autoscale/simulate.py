"""Replay an arrival trace through a scaling policy and count what it costs and how long tasks wait.

The scalejob policy runs through exactly :func:`autoscale.policy.decide` (so the numbers are the
controller's, minus I/O). Two reference policies model what people run Celery with today:

- **KEDA defaults** (Redis list scaler): the scaler polls every 30 s and counts *waiting* tasks
  only (a running task has left the list); activation 0 -> 1 at a poll; 1..N by the HPA it
  creates (15 s sync, 300 s scale-down window, scale-up at most max(+4, x2) per sync, 10%
  tolerance); back to zero 300 s (``cooldownPeriod``) after the last poll that saw work.
- **HPA defaults** on the same load metric (waiting + running): 15 s sync, 300 s scale-down
  window, same scale-up limit and tolerance, never below one replica.

Both let Kubernetes pick pods on scale-down (newest first, busy or not): a busy pod gets SIGTERM
and ``grace`` seconds (30 s by default) before SIGKILL, so a longer task is cut and redelivered
(``interrupted``). scalejob drains instead. Workers cost from spawn to exit (start time included).
The model is discrete-event: arrivals, policy ticks, worker ready, task done.
"""

from __future__ import annotations

import csv
import heapq
import itertools
import math
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from autoscale.policy import AutoscalerConfig, Decision, Observation, PolicyState, WorkerView, decide


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
    kill_at: float | None = None

    @property
    def alive(self) -> bool:
        return self.state != "stopped"


class Policy(Protocol):
    name: str
    period: float  # seconds between ticks
    wake_on_enqueue: bool  # an enqueue wakes the loop at once (scalejob's pub/sub)
    drains: bool  # busy victims finish their task; else they get SIGTERM + grace

    def decide(self, obs: Observation, now: float) -> Decision: ...


@dataclass
class ScalejobPolicy:
    """scalejob's policy, :func:`autoscale.policy.decide`, with its state kept between ticks."""

    cfg: AutoscalerConfig
    period: float = 0.5
    name: str = "scalejob"
    wake_on_enqueue: bool = True
    drains: bool = True
    state: PolicyState = field(default_factory=PolicyState)

    def decide(self, obs: Observation, now: float) -> Decision:
        d, self.state = decide(obs, self.state, self.cfg, now)
        return d


@dataclass
class HpaPolicy:
    """The Kubernetes HPA algorithm with its defaults, optionally fronted by KEDA's activation."""

    cfg: AutoscalerConfig
    name: str = "HPA defaults"
    period: float = 15.0
    window: float = 300.0  # behavior.scaleDown.stabilizationWindowSeconds
    tolerance: float = 0.1
    waiting_only: bool = False  # KEDA's Redis list scaler sees the list length, not running tasks
    keda_poll: float | None = None  # KEDA pollingInterval; None = plain HPA (never below 1)
    cooldown: float = 300.0  # KEDA cooldownPeriod: to zero this long after the last active poll
    wake_on_enqueue: bool = False
    drains: bool = False
    current: int = 0
    history: list[tuple[float, int]] = field(default_factory=list)
    last_active: float = -math.inf
    next_poll: float = 0.0

    def decide(self, obs: Observation, now: float) -> Decision:
        metric = obs.waiting if self.waiting_only else obs.waiting + obs.running
        target, cur = self.cfg.avg_waiting_length, self.current
        new, rule = cur, "hold"
        if self.keda_poll is not None and now + 1e-9 >= self.next_poll:  # KEDA's own poll
            self.next_poll = now + self.keda_poll
            if obs.waiting > 0:
                self.last_active = now
            if cur == 0 and obs.waiting > 0:
                new, rule = max(self.cfg.min, 1), "keda_activate"
            elif cur > 0 and self.cfg.min == 0 and now - self.last_active >= self.cooldown:
                new, rule = 0, "keda_cooldown"
        if cur > 0 and rule == "hold":  # the HPA's sync
            ratio = metric / (target * cur)
            rec = cur if abs(ratio - 1) <= self.tolerance else math.ceil(metric / target)
            rec = min(max(rec, self.cfg.min, 1), self.cfg.max)
            self.history = [(t, r) for t, r in self.history if t > now - self.window] + [(now, rec)]
            down = max(r for _, r in self.history)
            if rec > cur:
                new, rule = min(rec, max(2 * cur, cur + 4)), "scale_up"
            elif down < cur:
                new, rule = down, "scale_down"
        if self.keda_poll is None:  # a plain HPA never goes below one replica
            new = max(new, 1)
        self.current = new
        consuming = [w for w in obs.workers if w.state in ("starting", "idle", "busy")]
        # the ReplicaSet removes starting pods first, then the newest, busy or not
        order = [w for w in reversed(consuming) if w.state == "starting"] + [w for w in reversed(consuming) if w.state != "starting"]
        victims = tuple(w.name for w in order[: max(len(consuming) - new, 0)])
        return Decision(new, 0, f"{self.name}: metric {metric} / target {target:g}", rule, victims)


def keda_policy(cfg: AutoscalerConfig) -> HpaPolicy:
    return HpaPolicy(cfg, name="KEDA defaults", waiting_only=True, keda_poll=30.0)


def hpa_policy(cfg: AutoscalerConfig) -> HpaPolicy:
    return HpaPolicy(replace(cfg, min=max(cfg.min, 1)), name="HPA defaults")


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


def simulate(trace: list[tuple[float, float]], policy: Policy, start_time: float = 0.6, grace: float = 30.0, tail: float = 600.0) -> SimResult:
    """Run ``trace`` through ``policy``; workers take ``start_time`` s from spawn to first task."""
    tasks = [Task(a, d) for a, d in trace]
    horizon = (max(a + d for a, d in trace) if trace else 0.0) + tail
    events: list[tuple[float, int, str, object]] = []
    seq = itertools.count()
    push = lambda t, kind, data=None: heapq.heappush(events, (t, next(seq), kind, data))  # noqa: E731
    queue: deque[Task] = deque()
    workers: list[SimWorker] = []
    log: list[tuple[float, str]] = []
    timeline: list[tuple[float, int, int, int]] = []
    names = itertools.count()
    desired = 0

    def spawn(now: float, standby: bool) -> None:
        w = SimWorker(f"w{next(names)}", now, standby)
        workers.append(w)
        log.append((now, "spawn"))
        push(now + start_time, "ready", w)

    def stop(w: SimWorker, now: float) -> None:
        if w.alive:
            w.state, w.stopped_at = "stopped", now
            log.append((now, "stop"))

    def dispatch(now: float) -> None:
        for w in workers:
            if not queue:
                return
            if w.state == "idle":
                t = queue.popleft()
                t.started, w.task, w.state, w.busy_since = now, t, "busy", now
                push(now + t.duration, "done", (w, t))

    def views() -> tuple[WorkerView, ...]:
        out = []
        for w in workers:
            if w.state in ("stopped",):
                continue
            state = {"terminating": "draining"}.get(w.state, w.state)
            if w.state == "starting" and w.standby:
                state = "standby"
            out.append(WorkerView(w.name, state, busy_since=w.busy_since))
        return tuple(out)

    def tick(now: float) -> None:
        nonlocal desired
        running = sum(1 for w in workers if w.state in ("busy", "draining", "terminating") and w.task)
        obs = Observation(waiting=len(queue), running=running, workers=views())
        d = policy.decide(obs, now)
        desired = d.desired
        by_name = {w.name: w for w in workers}
        victims = set(d.victims)
        for name in d.victims:
            w = by_name[name]
            if w.state in ("starting", "idle", "standby"):
                stop(w, now)
            elif w.state == "busy":
                if policy.drains:
                    w.state = "draining"
                else:
                    w.state, w.kill_at = "terminating", now + grace
                    push(now + grace, "kill", w)
        for name in d.activate:
            w = by_name[name]
            w.standby = False
            if w.state == "standby":
                w.state = "idle"
        live = [w for w in workers if w.name not in victims]
        consuming = sum(1 for w in live if w.state in ("starting", "idle", "busy") and not w.standby)
        spare = sum(1 for w in live if w.standby and w.state in ("starting", "standby"))
        for _ in range(d.desired - consuming):
            spawn(now, False)
        for _ in range(d.standby - spare):
            spawn(now, True)
        dispatch(now)

    for _ in range(getattr(policy, "cfg", AutoscalerConfig()).min):  # the floor is up at t=0
        w = SimWorker(f"w{next(names)}", 0.0, False, state="idle")
        workers.append(w)
    if isinstance(policy, ScalejobPolicy):
        policy.state = PolicyState(current=len(workers))
    elif isinstance(policy, HpaPolicy):
        policy.current = len(workers)
    for t in tasks:
        push(t.arrival, "arrive", t)
    push(0.0, "tick")
    pending_wake = False
    while events:
        now, _, kind, data = heapq.heappop(events)
        if now > horizon:
            break
        if kind == "arrive":
            queue.append(data)  # type: ignore[arg-type]
            dispatch(now)
            if policy.wake_on_enqueue and queue and not pending_wake:
                pending_wake = True
                push(now, "wake")
        elif kind == "wake":
            pending_wake = False
            tick(now)
        elif kind == "tick":
            tick(now)
            push(now + policy.period, "tick")
        elif kind == "ready":
            w = data  # type: ignore[assignment]
            if w.state == "starting":
                w.state = "standby" if w.standby else "idle"
                dispatch(now)
        elif kind == "done":
            w, t = data  # type: ignore[misc]
            if w.task is not t or not w.alive:
                continue  # killed before it finished
            t.finished, w.task, w.busy_since = now, None, None
            if w.state in ("draining", "terminating"):
                stop(w, now)
            else:
                w.state = "idle"
            dispatch(now)
        elif kind == "kill":
            w = data  # type: ignore[assignment]
            if w.state == "terminating" and w.task is not None:
                t, w.task = w.task, None
                t.started, t.interrupted = None, t.interrupted + 1
                queue.appendleft(t)  # acks_late: redelivered
                stop(w, now)
                dispatch(now)
        load = len(queue) + sum(1 for w in workers if w.task is not None)
        timeline.append((now, load, sum(1 for w in workers if w.alive and not w.standby), desired))

    cost = sum((w.stopped_at if w.stopped_at is not None else horizon) - w.spawned_at for w in workers)
    waits = [t.started - t.arrival for t in tasks if t.started is not None]
    return SimResult(
        policy=policy.name,
        worker_seconds=cost,
        waits=waits,
        spawns=sum(1 for _, e in log if e == "spawn"),
        stops=sum(1 for _, e in log if e == "stop"),
        interrupted=sum(t.interrupted for t in tasks),
        horizon=horizon,
        timeline=timeline,
        events=log,
    )


def compare(trace: list[tuple[float, float]], cfg: AutoscalerConfig, start_time: float = 0.6, poll: float = 0.5) -> list[SimResult]:
    """scalejob, KEDA defaults and HPA defaults on the same trace and the same min/max/target."""
    policies: list[Policy] = [ScalejobPolicy(cfg, period=poll), keda_policy(cfg), hpa_policy(cfg)]
    return [simulate(trace, p, start_time=start_time) for p in policies]


def table(results: list[SimResult]) -> list[dict[str, str]]:
    """One row per policy, formatted for printing."""
    return [
        {
            "policy": r.policy,
            "worker-s": f"{r.worker_seconds:,.0f}",
            "wait p50": f"{r.p50:.2f}",
            "wait p95": f"{r.p95:.2f}",
            "wait max": f"{max(r.waits, default=0):.2f}",
            "spawns": str(r.spawns),
            "stops": str(r.stops),
            "cut": str(r.interrupted),
        }
        for r in results
    ]


def plot(results: list[SimResult], path: str | Path, title: str = "") -> Path:
    """A PNG timeline per policy: load, live workers, desired, and spawn/stop marks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(12, 2.6 * len(results)), sharex=True, squeeze=False)
    for ax, r in zip(axes[:, 0], results, strict=True):
        ts = [p[0] for p in r.timeline]
        ax.step(ts, [p[1] for p in r.timeline], where="post", color="tab:gray", lw=0.8, label="load (waiting + running)")
        ax.step(ts, [p[2] for p in r.timeline], where="post", color="tab:blue", lw=1.4, label="workers")
        ax.step(ts, [p[3] for p in r.timeline], where="post", color="tab:orange", lw=0.8, ls="--", label="desired")
        for kind, color, y in (("spawn", "tab:green", 0.97), ("stop", "tab:red", 0.93)):
            xs = [t for t, e in r.events if e == kind]
            ax.plot(xs, [y] * len(xs), "|", color=color, transform=ax.get_xaxis_transform(), ms=6, label=kind)
        ax.set_ylabel("count")
        ax.set_title(f"{r.policy}: {r.worker_seconds:,.0f} worker-s, p95 wait {r.p95:.2f} s, {r.interrupted} interrupted", fontsize=10)
        ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", fontsize=8, ncol=5)
    axes[-1, 0].set_xlabel("time (s)")
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def config_for(spec_path: str | Path | None, overrides: dict[str, float | int | None]) -> AutoscalerConfig:
    """The config to simulate: the spec's autoscaler block (or min 0 when none), then overrides."""
    if spec_path is not None:
        from app.specs import load_spec

        cfg = AutoscalerConfig.from_spec(load_spec(spec_path))
    else:
        cfg = AutoscalerConfig(min=0)
    cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    if cfg.max < cfg.min or cfg.max < 1 or cfg.avg_waiting_length <= 0:
        raise ValueError(f"bad autoscaler config: min {cfg.min}, max {cfg.max}, avg_waiting_length {cfg.avg_waiting_length:g}")
    return cfg


def run_cli(console, trace_path: Path, spec_path: Path | None, overrides: dict, start_time: float = 0.6, poll: float = 0.5, with_references: bool = True, png: Path | None = None) -> list[SimResult]:  # noqa: ANN001
    """``scalejob simulate``: print the table (and write the PNG)."""
    from rich import box
    from rich.table import Table

    cfg = config_for(spec_path, overrides)
    trace = load_trace(trace_path)
    if with_references:
        results = compare(trace, cfg, start_time=start_time, poll=poll)
    else:
        results = [simulate(trace, ScalejobPolicy(cfg, period=poll), start_time=start_time)]
    rows = table(results)
    console.print(
        f"{trace_path}: {len(trace)} tasks; min {cfg.min} max {cfg.max} avg_waiting_length {cfg.avg_waiting_length:g} "
        f"grace {cfg.scale_down_grace:g}s window {cfg.stabilization:g}s warm standby {cfg.warm_standby}; worker start {start_time:g}s; waits in s; cut = tasks killed mid-run",
        highlight=False,
    )
    t = Table(box=box.SIMPLE, pad_edge=False, collapse_padding=True)
    for col in rows[0]:
        t.add_column(col, justify="left" if col == "policy" else "right", no_wrap=True)
    for row in rows:
        t.add_row(*row.values())
    console.print(t)
    if png is not None:
        console.print(f"timeline: {plot(results, png, title=str(trace_path))}")
    return results
