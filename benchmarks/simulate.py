"""Autoscaling policies on a bursty trace: worker-seconds (cost) and task waits, one run.

``python -m benchmarks.simulate [TRACE] [--png docs/img/simulate_bursty.png]``

Replays ``benchmarks/traces/bursty.csv`` (one hour, 533 tasks; ``make_bursty.py`` regenerates
it) through scalejob's policy (``autoscale.policy.decide``, 0.5 s tick plus wake on enqueue,
with and without one warm standby worker) and through models of KEDA's and the HPA's defaults,
all with the same min 0 / max 20 / avg_waiting_length 2, for two worker start times: 0.6 s (a
``scalejob worker`` process on this machine) and 10 s (a container start). No Celery or Redis
involved: the numbers are the policies', so the run is deterministic.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from autoscale.policy import AutoscalerConfig
from autoscale.simulate import ScalejobPolicy, SimResult, hpa_policy, keda_policy, load_trace, plot, simulate
from benchmarks.common import markdown_table

ROOT = Path(__file__).resolve().parents[1]
CFG = AutoscalerConfig(min=0, max=20, avg_waiting_length=2, scale_down_grace=60, stabilization=1)


def run(trace: list[tuple[float, float]], start_time: float) -> list[SimResult]:
    policies = [
        ScalejobPolicy(CFG),
        ScalejobPolicy(replace(CFG, warm_standby=1), name="scalejob + warmStandby 1"),
        keda_policy(CFG),
        hpa_policy(CFG),
    ]
    return [simulate(trace, p, start_time=start_time) for p in policies]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trace", nargs="?", default=str(ROOT / "benchmarks" / "traces" / "bursty.csv"))
    ap.add_argument("--png", default=str(ROOT / "docs" / "img" / "simulate_bursty.png"))
    args = ap.parse_args()
    trace = load_trace(args.trace)
    work = sum(d for _, d in trace)
    print(f"trace {args.trace}: {len(trace)} tasks over {trace[-1][0]:.0f} s, {work:,.0f} task-seconds")
    print(f"config: min {CFG.min}, max {CFG.max}, avg_waiting_length {CFG.avg_waiting_length:g}, grace {CFG.scale_down_grace:g} s, window {CFG.stabilization:g} s\n")
    headers = ["worker start", "policy", "worker-seconds", "x task-seconds", "wait p50 s", "wait p95 s", "wait max s", "spawns", "tasks cut"]
    rows = []
    for start_time in (0.6, 10.0):
        t0 = time.perf_counter()
        results = run(trace, start_time)
        elapsed = time.perf_counter() - t0
        for r in results:
            rows.append([f"{start_time:g} s", r.policy, f"{r.worker_seconds:,.0f}", f"{r.worker_seconds / work:.2f}", f"{r.p50:.2f}", f"{r.p95:.2f}", f"{max(r.waits):.2f}", r.spawns, r.interrupted])
        if start_time == 0.6:
            print(f"timeline: {plot([results[0], results[2], results[3]], args.png, title=f'{Path(args.trace).name}, worker start {start_time:g} s')}")
        print(f"simulated 4 policies at start {start_time:g} s in {elapsed:.2f} s")
    print()
    print(markdown_table(headers, rows))


if __name__ == "__main__":
    main()
