"""Head-of-line blocking: 2 workers, one long task, then short tasks right behind it.

``python -m benchmarks.hol`` — scalejob workers (real ``scalejob worker`` processes, tasks put
with ``app.queue.put.put``, times from the request records) against plain Celery with its defaults
(prefetch multiplier 4, ack on receipt, prefork pool, concurrency 1, 2 worker processes) on the
same broker, in the same run. Both sides run the same shell commands (``sleep 2`` / ``sleep 0.05``).

Figures, over the short tasks:
- wait = enqueue → task start; p50, p95 (linear interpolation), max.
- idle worker-seconds while a task waits = ∫ min(idle workers, waiting tasks) dt from the first
  enqueue to the last start: time a worker sat idle although a task it could run was waiting.
  A worker counts as busy only inside task bodies, so scalejob's own per-task overhead counts
  against it.
- short-task cycle = median start → next start of short tasks on one worker (a 50 ms body plus
  each side's per-task cost): with one free worker, the 10th short task starts after 9 cycles,
  so the scalejob p95 is about 9 cycles.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from dataclasses import dataclass

from benchmarks.common import DEFAULT_REDIS, World, markdown_table, percentile, wait_until, world

LONG, SHORT = "sleep 2", "sleep 0.05"


@dataclass(frozen=True)
class Span:
    """One task's life: enqueued, started, finished (epoch seconds), and where it ran."""

    queued: float
    started: float
    finished: float
    worker: str


def idle_worker_seconds(spans: list[Span], n_workers: int) -> float:
    """∫ min(idle workers, waiting tasks) dt over the run (exact sweep over the span edges)."""
    edges = sorted({t for s in spans for t in (s.queued, s.started, s.finished)})
    total = 0.0
    for a, b in zip(edges, edges[1:], strict=False):
        mid = (a + b) / 2
        waiting = sum(1 for s in spans if s.queued <= mid < s.started)
        busy = len({s.worker for s in spans if s.started <= mid < s.finished})
        total += min(max(n_workers - busy, 0), waiting) * (b - a)
    return total


def cycle_s(spans: list[Span]) -> float:
    """Median start-to-next-start of short tasks on one worker: body plus per-task overhead."""
    gaps = []
    for worker in {s.worker for s in spans}:
        starts = sorted(s.started for s in spans if s.worker == worker)
        gaps += [b - a for a, b in zip(starts, starts[1:], strict=False)]
    return percentile(gaps, 50)


def summarize(spans: list[Span], n_workers: int) -> dict[str, float]:
    short = spans[1:]
    waits = [s.started - s.queued for s in short]
    return {
        "p50_wait_s": percentile(waits, 50),
        "p95_wait_s": percentile(waits, 95),
        "max_wait_s": max(waits),
        "idle_worker_s": idle_worker_seconds(spans, n_workers),
        "makespan_s": max(s.finished for s in spans) - min(s.queued for s in spans),
        "short_on_long_worker": sum(1 for s in short if s.worker == spans[0].worker),
        "short_cycle_ms": cycle_s(short) * 1000,
    }


def run_scalejob(w: World, shorts: int) -> list[Span]:
    from app.queue import records
    from app.queue.put import put

    spec = w.deploy_command_service("hol")
    names = [f"{spec.name}-{i}@bench" for i in range(2)]
    for n in names:
        w.scalejob_worker(spec.name, n)
    w.wait_scalejob_idle(spec.name, 2)
    ids = [put(w.r, spec, "command", LONG.encode())[1]]
    ids += [put(w.r, spec, "command", SHORT.encode())[1] for _ in range(shorts)]
    recs = wait_until(lambda: (rs := [records.get(w.r, i) for i in ids]) and all(x and x.done for x in rs) and rs, 60,
                      "scalejob HOL tasks", interval=0.05)
    assert all(x.state == "succeeded" for x in recs), [x.error for x in recs]
    return [Span(x.queued_at, x.started_at, x.finished_at, x.worker) for x in recs]


def run_plain(w: World, shorts: int) -> list[Span]:
    from app.core import keys
    from benchmarks.plain_app import defaults

    queue = w.name("hol-plain")
    names = [f"{queue}-{i}@bench" for i in range(2)]
    for n in names:
        w.plain_worker("defaults", queue, n)  # Celery defaults: prefork pool, prefetch 4, early ack
    w.wait_plain_ready(names)
    run = uuid.uuid4().hex
    queued: dict[str, float] = {}
    for cmd in [LONG] + [SHORT] * shorts:
        tid = uuid.uuid4().hex
        queued[tid] = time.time()
        defaults.send_task("bench.timed", kwargs={"run": run, "command": cmd}, queue=queue, task_id=tid)
    done = wait_until(lambda: (h := w.r.hgetall(keys.bench(run))) and len(h) == len(queued) and h, 60,
                      "plain HOL tasks", interval=0.05)
    out = []
    for tid, q in queued.items():  # insertion order = enqueue order: the long task first
        e = json.loads(done[tid.encode()])
        out.append(Span(q, e["start"], e["end"], e["worker"]))
    return out


def run(redis_url: str = DEFAULT_REDIS, shorts: int = 10) -> dict:
    """Both sides on one broker, one after the other; returns their figures and the ratios."""
    with world(redis_url, "hol") as w:
        sj = summarize(run_scalejob(w, shorts), 2)
        plain = summarize(run_plain(w, shorts), 2)
    eps = 1e-3  # an idle figure of ~0 would make the ratio meaningless: floor it at 1 ms
    ratios = {
        "p95_wait": plain["p95_wait_s"] / max(sj["p95_wait_s"], eps),
        "idle_worker_s": plain["idle_worker_s"] / max(sj["idle_worker_s"], eps),
    }
    result = {"scalejob": sj, "plain_celery_defaults": plain, "improvement": ratios,
              "passes_4x": all(v >= 4 for v in ratios.values()), "broker": redis_url.rsplit("@", 1)[-1]}
    print(render(result))
    return result


def render(res: dict) -> str:
    sj, pl, ra = res["scalejob"], res["plain_celery_defaults"], res["improvement"]
    rows = [
        ("short-task wait p50 (s)", sj["p50_wait_s"], pl["p50_wait_s"], ""),
        ("short-task wait p95 (s)", sj["p95_wait_s"], pl["p95_wait_s"], f"{ra['p95_wait']:.1f}x"),
        ("short-task wait max (s)", sj["max_wait_s"], pl["max_wait_s"], ""),
        ("idle worker-seconds while a task waits", sj["idle_worker_s"], pl["idle_worker_s"], f"{ra['idle_worker_s']:.1f}x"),
        ("short tasks run on the long task's worker", sj["short_on_long_worker"], pl["short_on_long_worker"], ""),
        ("short-task cycle on one worker, median (ms)", sj["short_cycle_ms"], pl["short_cycle_ms"], ""),
        ("makespan (s)", sj["makespan_s"], pl["makespan_s"], ""),
    ]
    head = "HOL: 2 workers, `sleep 2` then 10 x `sleep 0.05`, broker " + res["broker"]
    verdict = f"scalejob >= 4x better on both: {'yes' if res['passes_4x'] else 'NO'}"
    return "\n".join([head, "", markdown_table(["metric", "scalejob", "plain Celery defaults", "plain / scalejob"], rows), "", verdict])


if __name__ == "__main__":
    run(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_REDIS)
