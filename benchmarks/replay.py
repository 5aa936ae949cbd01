"""A trace replayed against real stacks: scalejob (each policy), Celery ``--autoscale``, a fixed pool.

``python -m benchmarks.replay [TRACE] [--compress 20] [--max 4] [--rows eas,target,celery-autoscale,fixed]
[--png docs/img/replay_bursty.png] [--json replay.json] [--redis URL]``

The trace (``arrival,duration`` rows, ``autoscale.simulate.load_trace``; default
``benchmarks/traces/bursty.csv``) is compressed in time by ``--compress`` (arrivals and durations
both divided), so an hour replays in a few minutes. Each row, one after the other on the same
machine and Redis, gets the same tasks at the same (real-clock) offsets: ``command`` tasks that
sleep their duration (``benchmarks/replay_stack.py``). Rows:

- ``eas``: ``scalejob up`` with ``avg_waiting_length`` (the EAS rule), min 0, max ``--max``;
- ``target``: ``scalejob up`` with ``target_wait_seconds`` (when this checkout's spec has it);
- ``celery-autoscale``: plain ``celery worker --autoscale=MAX,0`` (Celery's defaults);
- ``fixed``: plain ``celery worker -c MAX``, a fixed pool.

Per row: worker-seconds (sum over worker processes of their lifetimes from the replay's start
until the last task ended and the row's workers were back at its floor), wait p50/p95/max (put ->
start), lost (never finished), ran twice (the command ran more than once), and a timeline panel.
For each scalejob row the simulator (``autoscale.simulate``) replays the same compressed trace
through the same policy config with the worker start time measured in that row, and the
measured and predicted worker-seconds are printed side by side.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from autoscale.simulate import ScalejobPolicy, load_trace, simulate
from benchmarks.common import DEFAULT_REDIS, markdown_table, percentile, world
from benchmarks.replay_stack import Target, autoscaler_block, celery_worker, feed, ran_counts, scalejob_up

ROOT = Path(__file__).resolve().parents[1]
BURSTY = ROOT / "benchmarks" / "traces" / "bursty.csv"
ROWS = ("eas", "target", "celery-autoscale", "fixed")
TICK_S = 0.5  # the controller's poll interval (settings.poll_interval), given to the simulator too


@dataclass
class Options:
    """Everything a replay run is configured with (printed and written with the rows)."""

    max_workers: int = 4
    avg_waiting_length: float = 2.0
    target_wait: float = 3.0
    grace: float = 3.0  # behavior.onZero.scaleDownGracePeriodSeconds
    window: float = 1.0  # behavior.scaleDown.stabilizationWindowSeconds
    finish_timeout: float = 300.0  # after the last put: tasks not finished by then are lost
    settle_cap: float = 45.0  # after the last task: wait this long at most for workers to go


@dataclass
class Row:
    """One stack's figures on the trace."""

    row: str
    policy: str
    settings: str
    tasks: int
    finished: int
    lost: int
    ran_twice: int
    worker_seconds: float
    wait_p50: float
    wait_p95: float
    wait_max: float
    workers_started: int
    worker_start_s: float | None  # median process start -> ready (scalejob rows)
    span_s: float  # replay start -> the end of the row's accounting
    predicted_worker_seconds: float | None = None
    predicted_wait_p95: float | None = None
    diff_pct: float | None = None  # (measured - predicted) / predicted
    predicted_without_run_times: float | None = None  # wait-target rows: the simulator with the policy not told run times
    timeline: list[tuple[float, int, int]] = field(default_factory=list)  # (t, workers alive, tasks waiting)


def compress(trace: list[tuple[float, float]], factor: float, head: float | None = None) -> list[tuple[float, float]]:
    """Arrivals and durations divided by ``factor``; ``head``: keep only arrivals before it (unscaled s)."""
    kept = [(a, d) for a, d in trace if head is None or a < head]
    return [(round(a / factor, 3), round(d / factor, 3)) for a, d in kept]


def _wait_finished(target: Target, n: int, timeout: float) -> dict[int, tuple[float | None, float | None]]:
    deadline = time.time() + timeout
    while True:
        got = target.timings()
        if sum(1 for s, e in got.values() if e is not None) >= n or time.time() > deadline:
            return got
        time.sleep(0.5)


def _settle(target: Target, last_end: float) -> float:
    """Wait until the row's workers are back at its floor (capped); returns the end of accounting."""
    if target.floor > 0:
        return last_end  # a fixed pool never shrinks: it is counted until the work is done
    deadline = max(time.time(), last_end) + target.settle_cap
    while target.sampler.alive() > target.floor and time.time() < deadline:
        time.sleep(0.1)
    return time.time()


def timeline(t0: float, end: float, lives: list[tuple[float, float]], sent: list[float], starts: list[float | None], step: float = 0.25) -> list[tuple[float, int, int]]:
    out, t = [], t0
    while t <= end:
        alive = sum(1 for a, b in lives if a <= t < b)
        waiting = sum(1 for s, st in zip(sent, starts, strict=False) if s <= t and (st is None or st > t))
        out.append((round(t - t0, 3), alive, waiting))
        t += step
    return out


def measure(target: Target, trace: list[tuple[float, float]], tmp: Path, opts: Options) -> Row:
    """Feed the trace to one stack and account for it."""
    ran_log = tmp / f"ran-{target.label}.log"
    target.sampler.start()
    try:
        t0, sent = feed(trace, target, ran_log)
        got = _wait_finished(target, len(trace), opts.finish_timeout)
        ends = [e for _, e in got.values() if e is not None]
        end = _settle(target, max(ends, default=time.time()))
    finally:
        target.sampler.stop()
    starts = [got.get(i, (None, None))[0] for i in range(len(trace))]
    waits = [s - p for s, p in zip(starts, sent, strict=False) if s is not None]
    lives = target.sampler.intervals(t0, end)
    start_times = target.sampler.start_times()
    ran = ran_counts(ran_log)
    finished = sum(1 for i in range(len(trace)) if got.get(i, (None, None))[1] is not None)
    return Row(
        row=target.label, policy=_policy_name(target), settings=target.settings, tasks=len(trace), finished=finished,
        lost=len(trace) - finished, ran_twice=sum(1 for c in ran.values() if c > 1),
        worker_seconds=round(sum(b - a for a, b in lives), 2), wait_p50=round(percentile(waits, 50), 3),
        wait_p95=round(percentile(waits, 95), 3), wait_max=round(max(waits, default=float("nan")), 3),
        workers_started=len(target.sampler.lives), worker_start_s=round(statistics.median(start_times), 3) if start_times else None,
        span_s=round(end - t0, 2), timeline=timeline(t0, end, lives, sent, starts),
    )


def _policy_name(target: Target) -> str:
    if target.spec_cfg is None:
        return target.label
    (k, v), = target.spec_cfg["strategies"].items()
    return f"scalejob {k} {v:g}"


def predict(row: Row, target: Target, trace: list[tuple[float, float]], opts: Options) -> None:
    """The simulator on the same compressed trace, policy config and measured worker start time."""
    from app.core.specs import parse_spec
    from autoscale.config import from_spec

    assert target.spec_cfg is not None
    cfg = from_spec(parse_spec({"metadata": {"name": "replay-sim"}, "autoscaler": target.spec_cfg}))
    start = row.worker_start_s if row.worker_start_s is not None else 0.6
    sim = simulate(trace, ScalejobPolicy(cfg, period=TICK_S), start_time=start, tail=opts.settle_cap)
    if cfg.target_wait_seconds is not None:
        blind = simulate(trace, _NoRunTimes(cfg, period=TICK_S), start_time=start, tail=opts.settle_cap)
        row.predicted_without_run_times = round(blind.worker_seconds, 2)
    row.predicted_worker_seconds = round(sim.worker_seconds, 2)
    row.predicted_wait_p95 = round(sim.p95, 3)
    row.diff_pct = round(100 * (row.worker_seconds - sim.worker_seconds) / sim.worker_seconds, 1) if sim.worker_seconds else None


class _NoRunTimes(ScalejobPolicy):
    """The policy as a controller that feeds it neither run times nor a measured worker start:
    run beside the full simulation, it tells whether a wait-target row's gap is that."""

    def decide(self, obs: Any, now: float) -> Any:
        return super().decide(replace(obs, run_times=None, start_seconds=None), now)


def target_supported() -> bool:
    """Whether this checkout's spec knows ``strategies.target_wait_seconds`` (issue 18, item 1)."""
    from app.core.specs import SpecError, parse_spec

    try:
        parse_spec({"metadata": {"name": "probe"}, "autoscaler": {"strategies": {"target_wait_seconds": 5}}})
        return True
    except (SpecError, ValueError):
        return False


def run_row(name: str, trace: list[tuple[float, float]], opts: Options, redis_url: str) -> Row:
    """One row in its own world (key prefix, temp dir), torn down after."""
    m = opts.max_workers
    with world(redis_url, "replay") as w:
        if name in ("eas", "target"):
            policy = {"avg_waiting_length": opts.avg_waiting_length} if name == "eas" else {"target_wait_seconds": opts.target_wait}
            cm = scalejob_up(w, name, autoscaler_block(policy, m, opts.grace, opts.window), opts.settle_cap)
        elif name == "celery-autoscale":
            cm = celery_worker(w, name, f"--autoscale={m},0", 0, opts.settle_cap)
        elif name == "fixed":
            cm = celery_worker(w, name, f"--concurrency={m}", m, 0)
        else:
            raise ValueError(f"unknown row {name!r}: one of {', '.join(ROWS)}")
        with cm as target:
            row = measure(target, trace, w.tmp, opts)
        if target.spec_cfg is not None:
            predict(row, target, trace, opts)
        return row


def run(trace: list[tuple[float, float]], rows: list[str], opts: Options, redis_url: str = DEFAULT_REDIS) -> list[Row]:
    out = []
    for name in rows:
        if name == "target" and not target_supported():
            print("skipping the target row: this checkout's spec has no strategies.target_wait_seconds", flush=True)
            continue
        t = time.time()
        out.append(run_row(name, trace, opts, redis_url))
        r = out[-1]
        print(f"{r.policy}: {r.worker_seconds:.1f} worker-s, wait p95 {r.wait_p95:.2f} s, lost {r.lost}, ran twice {r.ran_twice} ({time.time() - t:.0f} s)", flush=True)
    return out


def table(rows: list[Row]) -> str:
    head = ["row", "worker-s", "x fixed", "wait p50 s", "wait p95 s", "wait max s", "lost", "ran twice", "workers started",
            "worker start s", "simulator worker-s", "measured vs simulator"]
    fixed = next((r.worker_seconds for r in rows if r.row == "fixed"), None)
    body = [[r.policy, f"{r.worker_seconds:,.1f}", f"{r.worker_seconds / fixed:.2f}" if fixed else "-", r.wait_p50, r.wait_p95, r.wait_max,
             r.lost, r.ran_twice, r.workers_started, "-" if r.worker_start_s is None else f"{r.worker_start_s:.2f}",
             "-" if r.predicted_worker_seconds is None else f"{r.predicted_worker_seconds:,.1f}"
             + ("" if r.predicted_without_run_times is None else f" ({r.predicted_without_run_times:,.1f} without run times)"),
             "-" if r.diff_pct is None else f"{r.diff_pct:+.1f}%"] for r in rows]
    return markdown_table(head, body)


def plot(rows: list[Row], path: Path, title: str) -> Path:
    """One panel per row: worker processes alive and tasks waiting over the replay."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 1, figsize=(11, 2.3 * len(rows)), sharex=True, squeeze=False)
    for ax, r in zip(axes[:, 0], rows, strict=True):
        ts = [p[0] for p in r.timeline]
        ax.step(ts, [p[2] for p in r.timeline], where="post", color="tab:gray", lw=0.8, label="tasks waiting")
        ax.step(ts, [p[1] for p in r.timeline], where="post", color="tab:blue", lw=1.4, label="worker processes")
        ax.set_title(f"{r.policy}: {r.worker_seconds:,.0f} worker-s, wait p95 {r.wait_p95:.1f} s, lost {r.lost}", fontsize=9)
        ax.set_ylabel("count")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("seconds since the replay started")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trace", nargs="?", default=str(BURSTY))
    ap.add_argument("--compress", type=float, default=20.0, help="time compression (arrivals and durations divided)")
    ap.add_argument("--head", type=float, default=None, help="only the trace's arrivals before this (trace seconds)")
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--max", type=int, default=Options.max_workers)
    ap.add_argument("--avg-waiting-length", type=float, default=Options.avg_waiting_length)
    ap.add_argument("--target-wait", type=float, default=None, help="target_wait_seconds (default: 60 s of the trace, compressed)")
    ap.add_argument("--grace", type=float, default=None, help="scale-to-zero grace (default: 60 s of the trace, compressed)")
    ap.add_argument("--redis", default=DEFAULT_REDIS)
    ap.add_argument("--png", default=str(ROOT / "docs" / "img" / "replay_bursty.png"))
    ap.add_argument("--json", default=None, help="write the rows here")
    args = ap.parse_args()
    c = args.compress
    opts = Options(max_workers=args.max, avg_waiting_length=args.avg_waiting_length,
                   target_wait=args.target_wait if args.target_wait is not None else round(60 / c, 3),
                   grace=args.grace if args.grace is not None else round(60 / c, 3))
    trace = compress(load_trace(args.trace), c, args.head)
    work = sum(d for _, d in trace)
    print(f"trace {args.trace} compressed {c:g}x: {len(trace)} tasks over {trace[-1][0]:.0f} s, {work:,.0f} task-seconds; {opts}", flush=True)
    rows = run(trace, [x for x in args.rows.split(",") if x], opts, args.redis)
    print()
    print(table(rows))
    title = f"{Path(args.trace).name} compressed {c:g}x ({len(trace)} tasks), max {opts.max_workers}, one machine"
    print(f"\ntimeline: {plot(rows, Path(args.png), title)}")
    doc = {"trace": args.trace, "compress": c, "head": args.head, "options": asdict(opts), "rows": [asdict(r) for r in rows]}
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1))
    print("@@JSON " + json.dumps({**doc, "rows": [{k: v for k, v in asdict(r).items() if k != "timeline"} for r in rows]}))


if __name__ == "__main__":
    main()
