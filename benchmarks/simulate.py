"""The wait-target policy against every static configuration, on five traces, two worker start times.

``python -m benchmarks.simulate [--traces bursty,shift] [--png docs/img/simulate_frontier.png] [--json out.json]``

Traces: the shipped ``benchmarks/traces/bursty.csv`` (seed 7) and the four of ``make_traces.py``
(bursts-long seed 11, diurnal seed 3, heavy-tail seed 5, shift seed 13). Worker start 0.6 s (a
``scalejob worker`` process on this machine) and 20 s (a container start). min 0, max 30 for all.

Static configurations: scalejob's EAS rule ``avg_waiting_length`` 1-5 (grace 60 s, window 1 s:
the spec defaults); KEDA's Redis list scaler, ``listLength`` 1-10, otherwise KEDA's and the HPA's
defaults (30 s poll, 300 s cooldown, 15 s sync, 300 s scale-down window); an HPA on waiting +
running, target 1-5. Kubernetes kills victims without regard to work: SIGKILL 30 s after SIGTERM,
the cut task back after 3600 s (Celery's Redis ``visibility_timeout`` default). The target mode:
``target_wait_seconds`` 60 and 120 s at start 20 s, 10 and 30 s at start 0.6 s, nothing tuned.

Per trace, start and target: whether a static configuration reaches a wait p95 within the target
(then the target mode must too), the cheapest one that does, and the target mode's worker-hours
and idle worker-hours (worker-hours minus busy task-hours) against it. No Celery or Redis: the
numbers are the policies', so the run is deterministic.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

from autoscale.policy import AutoscalerConfig
from autoscale.simulate import ScalejobPolicy, hpa_policy, keda_policy, load_trace, row, scalejob_label, simulate

ROOT = Path(__file__).resolve().parents[1]
TRACE_DIR = ROOT / "benchmarks" / "traces"
TRACES = ("bursty", "bursts-long", "diurnal", "heavy-tail", "shift")
STEADY = ("bursty", "bursts-long")  # duration mix does not change over the trace
SHIFTING = ("shift",)
BASE = AutoscalerConfig(min=0, max=30, scale_down_grace=60, stabilization=1)
TARGETS = {0.6: (10.0, 30.0), 20.0: (60.0, 120.0)}


def policies(start: float) -> list:
    out: list = [ScalejobPolicy(replace(BASE, avg_waiting_length=n), name=f"scalejob avg_waiting_length {n}") for n in range(1, 6)]
    out += [keda_policy(BASE, list_length=n) for n in range(1, 11)]
    out += [hpa_policy(BASE, target=n) for n in range(1, 6)]
    out += [ScalejobPolicy(c, name=scalejob_label(c)) for c in (replace(BASE, target_wait_seconds=t) for t in TARGETS[start])]
    return out


def _one(args: tuple[str, float, int]) -> dict:
    name, start, i = args
    p = policies(start)[i]
    r = simulate(load_trace(TRACE_DIR / f"{name}.csv"), p, start_time=start)
    return {"trace": name, "static": p.name.startswith(("KEDA", "HPA")) or "avg_waiting_length" in p.name, **row(r)}


def sweep(traces: tuple[str, ...], jobs: int) -> list[dict]:
    work = [(n, s, i) for n in traces for s in TARGETS for i in range(len(policies(s)))]
    with ProcessPoolExecutor(jobs) as ex:
        return list(ex.map(_one, work, chunksize=4))


def verdicts(rows: list[dict]) -> list[dict]:
    """Per trace, start and target: met wherever a static config meets it; cost vs the cheapest that does."""
    out = []
    for (trace, start) in sorted({(r["trace"], r["start_time"]) for r in rows}):
        here = [r for r in rows if r["trace"] == trace and r["start_time"] == start]
        for target in TARGETS[start]:
            mode = next(r for r in here if r["policy"] == f"scalejob target {target:g} s")
            ok = [r for r in here if r["static"] and r["wait_p95"] <= target]
            best = min(ok, key=lambda r: r["worker_seconds"]) if ok else None
            idle = lambda r: r["worker_seconds"] - r["busy_seconds"]  # noqa: E731
            out.append({
                "trace": trace, "start": start, "target": target, "target_p95": mode["wait_p95"],
                "met": mode["wait_p95"] <= target if best else None,
                "cheapest_static": best["policy"] if best else "none reaches it",
                "static_p95": best["wait_p95"] if best else None,
                "cost_ratio": round(mode["worker_seconds"] / best["worker_seconds"], 3) if best else None,
                "idle_ratio": round(idle(mode) / max(idle(best), 1e-9), 3) if best else None,
                "target_worker_h": round(mode["worker_seconds"] / 3600, 2), "static_worker_h": round(best["worker_seconds"] / 3600, 2) if best else None,
            })
    return out


def frontier(rows: list[dict], path: Path) -> Path:
    """Worker-hours vs wait p95, every configuration and the target mode, one panel per trace and start."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({(r["trace"], r["start_time"]) for r in rows}, key=lambda k: (TRACES.index(k[0]) if k[0] in TRACES else 9, k[1]))
    fig, axes = plt.subplots(len(keys) // 2 + len(keys) % 2, 2, figsize=(12, 3.2 * ((len(keys) + 1) // 2)), squeeze=False)
    styles = {"scalejob avg": ("tab:blue", "o"), "KEDA": ("tab:red", "s"), "HPA": ("tab:gray", "^"), "scalejob target": ("tab:green", "*")}
    for ax, (trace, start) in zip(axes.flat, keys, strict=False):
        for prefix, (color, marker) in styles.items():
            pts = [r for r in rows if r["trace"] == trace and r["start_time"] == start and r["policy"].startswith(prefix)]
            ax.scatter([r["wait_p95"] for r in pts], [r["worker_seconds"] / 3600 for r in pts], c=color, marker=marker, s=120 if "target" in prefix else 28, label=prefix)
            if "target" in prefix:
                for r in pts:
                    ax.annotate(r["policy"].removeprefix("scalejob "), (r["wait_p95"], r["worker_seconds"] / 3600), fontsize=7, xytext=(4, 4), textcoords="offset points")
        ax.set_xscale("symlog", linthresh=10)
        ax.set_title(f"{trace}, worker start {start:g} s", fontsize=10)
        ax.set_xlabel("wait p95 (s)")
        ax.set_ylabel("worker-hours")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Cost vs wait: static configurations (EAS avg_waiting_length 1-5, KEDA listLength 1-10, HPA target 1-5) and the wait target; max 30", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _md(headers: list[str], rows: list[list]) -> str:
    return "\n".join(["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)] + ["| " + " | ".join(str(x) for x in r) + " |" for r in rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", default=",".join(TRACES))
    ap.add_argument("--png", default=str(ROOT / "docs" / "img" / "simulate_frontier.png"))
    ap.add_argument("--json", default="", help="also write every row and verdict here")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    traces = tuple(args.traces.split(","))
    t0 = time.perf_counter()
    rows = sweep(traces, args.jobs)
    print(f"simulated {len(rows)} runs in {time.perf_counter() - t0:.1f} s")
    for name in traces:
        tr = load_trace(TRACE_DIR / f"{name}.csv")
        print(f"{name}: {len(tr)} tasks, {sum(d for _, d in tr) / 3600:.2f} task-hours")
    v = verdicts(rows)
    print(f"frontier: {frontier(rows, Path(args.png))}\n")
    print(_md(["trace", "start s", "target s", "target mode p95 s", "met", "cheapest static meeting it", "its p95 s", "worker-h target / static", "cost ratio", "idle ratio"],
              [[x["trace"], f"{x['start']:g}", f"{x['target']:g}", x["target_p95"], {True: "yes", False: "**no**", None: "n/a"}[x["met"]], x["cheapest_static"],
                x["static_p95"], f"{x['target_worker_h']} / {x['static_worker_h']}", x["cost_ratio"], x["idle_ratio"]] for x in v]))
    print()
    print(_md(["trace", "start s", "policy", "worker-h", "idle worker-h", "wait p50 s", "wait p95 s", "wait max s", "spawns", "cut"],
              [[r["trace"], f"{r['start_time']:g}", r["policy"], f"{r['worker_seconds'] / 3600:.2f}", f"{(r['worker_seconds'] - r['busy_seconds']) / 3600:.2f}",
                r["wait_p50"], r["wait_p95"], r["wait_max"], r["spawns"], r["cut"]] for r in rows]))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "verdicts": v}, indent=1))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
