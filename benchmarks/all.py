"""``python -m benchmarks.all [--quick]``: every comparison side by side, one summary table, PNG charts.

Each benchmark runs as its own child process (one at a time: they time things on a 2-core
machine), with the arguments of its CLI; this script reads back the figures (the JSON of its
``run()`` where it has one, its printed markdown table otherwise), then writes

- the summary table at the top of ``docs/performance.md`` (between the ``summary`` markers; the
  per-benchmark sections below it belong to their benchmarks and are left alone);
- one bar chart per comparison into ``docs/img/bench_*.png``.

``--quick`` shrinks every benchmark (fewer rounds, trials and kills: ~3 minutes); the default
sizes are those of the per-benchmark sections (~8 minutes). A benchmark that fails or runs past
its time limit gets a "failed" row; the others still run.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import charts
from benchmarks.common import DEFAULT_REDIS
from tests.helpers import ROOT, free_port

DOC = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- summary:begin (written by python -m benchmarks.all) -->", "<!-- summary:end -->"
Row = tuple[str, str, str, str, str]  # metric, scalejob, baseline, ratio / target, command


@dataclass
class Bench:
    """One benchmark: how to run it (quick and full) and how to turn its output into summary rows."""

    name: str
    command: Callable[[bool, str], str]  # (quick, redis) -> the shell-free CLI shown in the table
    child: Callable[[bool, str], list[str]]  # the argv actually run
    summarize: Callable[[str, str], list[Row]]  # (stdout, command) -> rows (+ charts)
    timeout: float


def via_run(module: str, kwargs: str) -> list[str]:
    """Run ``benchmarks.<module>.run(**kwargs)`` in a child and print its result as one JSON line."""
    code = f"import json; from benchmarks import {module} as m; print('@@JSON ' + json.dumps(m.run({kwargs}), default=str))"
    return [sys.executable, "-c", code]


def result_json(out: str) -> dict[str, Any]:
    return json.loads(next(line for line in reversed(out.splitlines()) if line.startswith("@@JSON "))[7:])


def last_table(out: str) -> list[dict[str, str]]:
    """The last markdown table a benchmark printed, as dicts keyed by its header."""
    blocks, cur = [], []
    for line in out.splitlines() + [""]:
        if line.startswith("|"):
            cur.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif cur:
            blocks.append(cur)
            cur = []
    head, _, *rows = blocks[-1]
    return [dict(zip(head, r, strict=False)) for r in rows]


def f(x: float, unit: str = "", nd: int = 2) -> str:
    return f"{x:,.{nd}f}{unit}"


# --- per-benchmark summaries ------------------------------------------------------------------
def throughput(out: str, cmd: str) -> list[Row]:
    res = result_json(out)
    t, ra = res["tasks_per_s"], res["ratio"]
    charts.bars("bench_throughput.png", "No-op throughput, 1 worker (tasks/s, higher is better)",
                {"no-op task": {"scalejob": t["sj_bare"], "plain Celery": t["plain_bare"]},
                 "request, empty body": {"scalejob": t["sj_noop"], "plain Celery": t["plain_bare"]},
                 "command `true`": {"scalejob": t["sj_true"], "plain Celery": t["plain_sh_true"]}}, "tasks/s")
    return [("throughput, no-op task on a scalejob worker (tasks/s)", f(t["sj_bare"], nd=0), f(t["plain_bare"], nd=0),
             f"{ra['instance_only']:.2f} (target >= 0.9)", cmd),
            ("throughput, no-op task vs plain Celery defaults (tasks/s)", f(t["sj_bare"], nd=0), f(t["plain_defaults_bare"], nd=0) + " (prefork, prefetch 4)",
             f"{ra['instance_vs_defaults']:.2f} (target >= 0.9)", cmd),
            ("throughput, command `true` (tasks/s)", f(t["sj_true"], nd=0), f(t["plain_sh_true"], nd=0) + " (`sh -c true`)",
             f"{ra['command_true']:.2f}", cmd),
            ("throughput, request with an empty body (tasks/s)", f(t["sj_noop"], nd=0), f(t["plain_bare"], nd=0), f"{ra['dispatch_only']:.2f}", cmd)]


def hol(out: str, cmd: str) -> list[Row]:
    res = result_json(out)
    sj, pl = res["scalejob"], res["plain_celery_defaults"]
    charts.bars("bench_hol.png", "Head-of-line blocking: 2 workers, 1 long then 10 short tasks (s, lower is better)",
                {"short-task wait p95": {"scalejob": sj["p95_wait_s"], "Celery defaults": pl["p95_wait_s"]},
                 "makespan": {"scalejob": sj["makespan_s"], "Celery defaults": pl["makespan_s"]}}, "seconds")
    return [("HOL: short-task wait p95 (s)", f(sj["p95_wait_s"], nd=3), f(pl["p95_wait_s"], nd=3) + " (Celery defaults)",
             f"{res['improvement']['p95_wait']:.1f}x better (target >= 4x)", cmd),
            ("HOL: makespan (s)", f(sj["makespan_s"]), f(pl["makespan_s"]), f"{pl['makespan_s'] / sj['makespan_s']:.2f}x", cmd)]


def latency(out: str, cmd: str) -> list[Row]:
    res = result_json(out)["machine"]
    sj, pl = res["scalejob record started"], res["plain Celery task body"]
    charts.bars("bench_latency.png", "Enqueue -> task start, 1 idle worker (ms, lower is better)",
                {"p50": {"scalejob put": sj["p50_ms"], "Celery apply_async": pl["p50_ms"]},
                 "p99": {"scalejob put": sj["p99_ms"], "Celery apply_async": pl["p99_ms"]}}, "ms")
    return [("enqueue -> start p50 / p99 (ms)", f"{sj['p50_ms']:.1f} / {sj['p99_ms']:.1f}", f"{pl['p50_ms']:.1f} / {pl['p99_ms']:.1f} (apply_async)",
             f"{sj['p50_ms'] / pl['p50_ms']:.2f}x p50", cmd)]


def ingress(out: str, cmd: str) -> list[Row]:
    num = r"([\d.,]+)"
    http = re.search(rf"HTTP put \(scalejob\)\s+p50 {num} ms\s+p99 {num} ms", out)
    celery = re.search(rf"send_task \(plain Celery\) p50 {num} ms\s+p99 {num} ms", out)
    rate_http = re.search(rf"HTTP put \(scalejob\)\s+{num} puts/s", out)
    rate_celery = re.search(rf"send_task \(plain Celery\) {num} sends/s", out)
    assert http and celery and rate_http and rate_celery, out[-2000:]
    v = lambda m, i: float(m.group(i).replace(",", ""))  # noqa: E731
    charts.bars("bench_ingress.png", "HTTP put -> task start vs direct send_task (ms, lower is better)",
                {"p50": {"scalejob HTTP put": v(http, 1), "Celery send_task": v(celery, 1)},
                 "p99": {"scalejob HTTP put": v(http, 2), "Celery send_task": v(celery, 2)}}, "ms")
    return [("HTTP put -> start p50 / p99 (ms)", f"{v(http, 1):.1f} / {v(http, 2):.1f}", f"{v(celery, 1):.1f} / {v(celery, 2):.1f} (send_task)",
             f"{v(http, 1) / v(celery, 1):.2f}x p50", cmd),
            ("sustained put rate (puts/s)", f(v(rate_http, 1), nd=0), f(v(rate_celery, 1), nd=0) + " (send_task)",
             f"{v(rate_http, 1) / v(rate_celery, 1):.2f}x", cmd)]


def reaction(out: str, cmd: str) -> list[Row]:
    rows = {r["scenario"]: r for r in last_table(out)}
    pick = lambda prefix: next(r for k, r in rows.items() if k.startswith(prefix))  # noqa: E731
    cold, warm = pick("scalejob, cold, at zero (forked"), pick("scalejob, warm standby")
    spawn, auto = pick("plain Celery: `celery worker` spawned"), pick("plain Celery `--autoscale=4,1`, saturated: 1 busy, 3 sent -> first")
    s = lambda r: float(r["p50 s"]), lambda r: float(r["p95 s"])  # noqa: E731
    charts.bars("bench_reaction.png", f"Autoscaler reaction: task sent -> task starts (s, n={cold['n']})",
                {"scalejob cold (fork)": {"p50": s[0](cold), "p95": s[1](cold)},
                 "scalejob warm standby": {"p50": s[0](warm), "p95": s[1](warm)},
                 "celery worker by hand": {"p50": s[0](spawn), "p95": s[1](spawn)},
                 "celery --autoscale": {"p50": s[0](auto), "p95": s[1](auto)}}, "seconds")
    return [(f"reaction cold, at zero p50 / p95 (s, n={cold['n']})", f"{cold['p50 s']} / {cold['p95 s']}",
             f"{spawn['p50 s']} / {spawn['p95 s']} (spawn by hand, no detection)", f"{s[0](spawn) / s[0](cold):.1f}x faster p50", cmd),
            (f"reaction warm standby p50 / p95 (s, n={warm['n']})", f"{warm['p50 s']} / {warm['p95 s']}",
             f"{auto['p50 s']} / {auto['p95 s']} (`--autoscale`, in-worker)", f"{s[0](auto) / max(s[0](warm), 1e-3):.1f}x faster p50", cmd)]


def tick_cost(out: str, cmd: str) -> list[Row]:
    rows = [x for x in last_table(out) if x["code"] == "this checkout"]
    idle = [x for x in rows if x["tick"] == "no action"]
    r = next(x for x in idle if x["waiting tasks"].replace(",", "") == "10000")
    charts.bars("bench_tick_cost.png", "Autoscaler tick cost (ms) by waiting tasks, 100 workers",
                {x["waiting tasks"]: {"p50": float(x["p50 ms"]), "p95": float(x["p95 ms"])} for x in idle}, "ms")
    out_rows = [(f"autoscaler tick at 10,000 waiting / {r['registered workers']} workers p50 / p95 (ms)", f"{r['p50 ms']} / {r['p95 ms']}",
                 "-", "target < 5 ms", cmd)]
    for x in (x for x in rows if x["tick"] != "no action"):
        out_rows.append((f"autoscaler tick that {x['tick']} workers, p50 / p95 (ms)", f"{x['p50 ms']} / {x['p95 ms']}", "-", "actions run off the loop", cmd))
    return out_rows


def simulate(out: str, cmd: str) -> list[Row]:
    """The wait target vs KEDA's defaults and the cheapest static config, shipped bursty trace, worker start 20 s."""
    rows = [r for r in last_table(out) if r["trace"] == "bursty" and r["start s"] == "20"]
    by = {r["policy"]: r for r in rows}
    sj, keda = by["scalejob target 60 s"], by["KEDA listLength 5 (defaults)"]
    wh = lambda r: float(r["worker-h"])  # noqa: E731
    charts.bars("bench_simulate.png", "Simulated bursty trace (worker start 20 s): cost and wait by policy",
                {"worker-hours": {p: wh(r) for p, r in by.items() if not p.startswith(("KEDA listLength 1", "HPA"))},
                 "wait p95 (s)": {p: float(r["wait p95 s"]) for p, r in by.items() if not p.startswith(("KEDA listLength 1", "HPA"))}}, "")
    return [("simulated bursty trace, start 20 s: worker-hours, target 60 s", sj["worker-h"], f"{keda['worker-h']} (KEDA listLength 5, defaults)",
             f"{wh(keda) / wh(sj):.2f}x less", cmd),
            ("simulated bursty trace, start 20 s: wait p95 (s), target 60 s", sj["wait p95 s"], f"{keda['wait p95 s']} (KEDA listLength 5, defaults)",
             f"{float(keda['wait p95 s']) / float(sj['wait p95 s']):.2f}x shorter", cmd)]


def recovery(out: str, cmd: str) -> list[Row]:
    rows = {r["setup"]: r for r in last_table(out)}
    sj = rows["scalejob, local autoscaler backend, Redis broker"]
    ttl_rows = {k: r for k, r in rows.items() if k.startswith("scalejob, unowned workers")}
    base = rows.get("plain Celery acks-late + reject_on_worker_lost, RabbitMQ")
    plain_redis = next(r for k, r in rows.items() if k.startswith("plain Celery acks-late + reject_on_worker_lost, Redis"))
    groups = {"scalejob local, Redis": {"p50": float(sj["kill→restart p50 (s)"]), "p95": float(sj["p95 (s)"])}}
    for k, x in [("scalejob local, RabbitMQ", rows.get("scalejob, local autoscaler backend, RabbitMQ broker")), *ttl_rows.items()]:
        if x is not None:
            groups[k.replace("scalejob, unowned workers, ", "unowned, ")] = {"p50": float(x["kill→restart p50 (s)"]), "p95": float(x["p95 (s)"])}
    if base:
        groups["Celery acks-late, RabbitMQ"] = {"p50": float(base["kill→restart p50 (s)"]), "p95": float(base["p95 (s)"])}
    charts.bars("bench_recovery.png", "Worker SIGKILL -> job restarted elsewhere (s)", groups, "seconds")
    ttl = re.search(r"heartbeat_ttl = ([\d.]+) s", out)
    baseline = f"{base['kill→restart p50 (s)']} (acks-late, RabbitMQ); " if base else ""
    return [(f"local worker SIGKILL -> job restarted p50 / p95 (s, {sj['kills']} kills, Redis)", f"{sj['kill→restart p50 (s)']} / {sj['p95 (s)']}",
             f"{baseline}{plain_redis['kill→restart p50 (s)']} (acks-late, Redis visibility timeout)",
             f"unowned workers: bounded by heartbeat_ttl {ttl.group(1) if ttl else '?'} s + a beat", cmd)]


def instance_overhead(out: str, cmd: str) -> list[Row]:
    res = result_json(out)
    p = res["per_task"]
    charts.bars("bench_instance_overhead.png", "Per-task time of `true`: long-lived instance vs fresh process (ms, log)",
                {k: {"p50": v["p50_ms"], "p95": v["p95_ms"]} for k, v in p.items()}, "ms", log=True)
    sj, fresh = p["scalejob, long-lived instance"], p["fresh Celery worker per task"]
    return [("per-task time, long-lived vs fresh worker per task p50 (ms)", f(sj["p50_ms"], nd=1), f(fresh["p50_ms"], nd=0) + " (fresh `celery worker`)",
             f"{res['fresh_worker_over_scalejob']:.0f}x less", cmd)]


def benches(port: int) -> list[Bench]:
    py = "python -m benchmarks."
    return [
        Bench("throughput", lambda q, r: f"{py}throughput {r} --rounds {1 if q else 3}",
              lambda q, r: via_run("throughput", f"{r!r}, rounds={1 if q else 3}"), throughput, 300),
        Bench("hol", lambda q, r: f"{py}hol {r}", lambda q, r: via_run("hol", f"{r!r}"), hol, 120),
        Bench("latency", lambda q, r: f"{py}latency {r} -n {30 if q else 100}",
              lambda q, r: via_run("latency", f"{r!r}, n={30 if q else 100}"), latency, 120),
        Bench("ingress", lambda q, r: f"{py}ingress --redis {r} --samples {50 if q else 200} --seconds {2 if q else 5}",
              lambda q, r: [sys.executable, "-m", "benchmarks.ingress", "--redis", r, "--samples", str(50 if q else 200),
                            "--seconds", str(2 if q else 5), "--port", str(port)], ingress, 150),
        Bench("reaction", lambda q, r: f"{py}reaction {r} -n {5 if q else 20}",
              lambda q, r: [sys.executable, "-m", "benchmarks.reaction", r, "-n", str(5 if q else 20)], reaction, 420),
        Bench("tick_cost", lambda q, r: f"{py}tick_cost {r} --ticks {50 if q else 300}",
              lambda q, r: [sys.executable, "-m", "benchmarks.tick_cost", r, "--ticks", str(50 if q else 300)], tick_cost, 180),
        Bench("simulate", lambda q, r: f"{py}simulate", lambda q, r: [sys.executable, "-m", "benchmarks.simulate"], simulate, 120),
        Bench("recovery", lambda q, r: f"{py}recovery --kills {3 if q else 10}",
              lambda q, r: [sys.executable, "-m", "benchmarks.recovery", "--kills", str(3 if q else 10)], recovery, 600),  # local backend on both brokers, TTL 5 s and 2 s, plain Celery
        Bench("instance_overhead", lambda q, r: f"{py}instance_overhead {r} -n {5 if q else 20}",
              lambda q, r: via_run("instance_overhead", f"{r!r}, n={5 if q else 20}"), instance_overhead, 180),
    ]


def run_all(quick: bool, redis_url: str, only: set[str] | None = None) -> list[Row]:
    rows: list[Row] = []
    for b in benches(free_port()):
        if only and b.name not in only:
            continue
        cmd = f"`{b.command(quick, redis_url)}`".replace(f" --redis {DEFAULT_REDIS}", "").replace(f" {DEFAULT_REDIS}", "")
        t0 = time.monotonic()
        print(f"== {b.name}: {cmd}", flush=True)
        try:
            proc = subprocess.run(b.child(quick, redis_url), capture_output=True, text=True, timeout=b.timeout, cwd=ROOT, check=False)
            print(proc.stdout, flush=True)
            if proc.returncode != 0:
                raise RuntimeError(f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}")
            rows += b.summarize(proc.stdout, cmd)
        except Exception as exc:  # one broken benchmark must not hide the others' numbers
            reason = f"timed out after {b.timeout:.0f}s" if isinstance(exc, subprocess.TimeoutExpired) else str(exc)[-200:]
            print(f"!! {b.name} failed: {reason}", flush=True)
            rows.append((b.name, "failed", "", reason.replace("|", "/").replace("\n", " "), cmd))
        print(f"-- {b.name}: {time.monotonic() - t0:.0f}s", flush=True)
    return rows


def rows_from_log(log: str) -> list[Row]:
    """Rebuild the rows (and charts) from the printed output of an earlier run, without running anything."""
    rows: list[Row] = []
    by_name = {b.name: b for b in benches(0)}
    for m in re.finditer(r"^== (\w+): (`[^`]*`)\n(.*?)^-- \1:", log, re.M | re.S):
        name, cmd, out = m.groups()
        try:
            rows += by_name[name].summarize(out, cmd)
        except Exception as exc:  # noqa: BLE001 - a failed run's section
            rows.append((name, "failed", "", str(exc)[-200:].replace("|", "/").replace("\n", " "), cmd))
    return rows


def write_summary(rows: list[Row], quick: bool, took: float) -> None:
    from benchmarks.common import markdown_table

    table = markdown_table(["metric", "scalejob", "baseline (plain Celery / KEDA / HPA)", "ratio / target", "command"], rows)
    block = "\n".join([BEGIN, "## Summary", "",
                       f"Written by `python -m benchmarks.all{' --quick' if quick else ''}` in {took / 60:.1f} min "
                       f"({time.strftime('%Y-%m-%d')}, 2-core VM, loopback Redis); charts in `docs/img/bench_*.png`. "
                       "Each row's command reproduces it alone; the sections below explain each benchmark.", "",
                       table, "", *[f"![{p.stem}](img/{p.name})" for p in charts.written], END])
    text = DOC.read_text()
    if BEGIN in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:  # right under the title and intro paragraph
        head, sep, rest = text.partition("\n\n\n")
        text = head + "\n\n" + block + "\n\n" + rest if sep else text + "\n\n" + block + "\n"
    DOC.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller runs (~3 min instead of ~8)")
    ap.add_argument("--redis", default=DEFAULT_REDIS, help="broker and state Redis of the benchmarks that take one")
    ap.add_argument("--only", nargs="*", help="run only these benchmarks (the table then has only their rows)")
    ap.add_argument("--no-write", action="store_true", help="print the table, leave docs/ alone")
    ap.add_argument("--from-log", help="re-render the table and charts from the saved output of an earlier run")
    args = ap.parse_args()
    t0 = time.monotonic()
    if args.from_log:
        log = Path(args.from_log).read_text()
        rows = rows_from_log(log)
        t0 -= sum(int(x) for x in re.findall(r"^-- \w+: (\d+)s$", log, re.M))  # the run's own duration
    else:
        rows = run_all(args.quick, args.redis, set(args.only) if args.only else None)
    from benchmarks.common import markdown_table

    print(markdown_table(["metric", "scalejob", "baseline", "ratio / target", "command"], rows))
    if not args.no_write:
        write_summary(rows, args.quick, time.monotonic() - t0)
        print(f"wrote the summary table into {DOC} and {len(charts.written)} charts into docs/img/")


if __name__ == "__main__":
    main()
