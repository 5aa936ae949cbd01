"""Per-task overhead of a long-lived instance vs a fresh process per task.

The same short task, the command ``true`` run through ``/bin/sh -c``, n times one after the
other, each timed from the moment it is handed over to the moment it has finished:

- **scalejob, long-lived instance**: ``inqueue.put`` → the request record is ``succeeded``
  (one idle ``scalejob worker`` that stays up: queue, lease, record, output queue included);
- **plain Celery, long-lived worker**: ``send_task`` → the task body has run the command
  (scalejob's Celery settings, threads pool: the floor scalejob's bookkeeping adds to);
- **fresh Celery worker per task**: ``send_task``, then start a new ``celery worker`` process
  that takes that one task → the task body has run the command (what "a container/process per
  job" costs: interpreter start, imports, broker connect); the worker is killed after, untimed;
- **fresh ``python -c`` per task**: ``python -c "subprocess.run(['/bin/sh','-c','true'])"``
  (no broker at all: the floor of any process-per-task design in Python).

Run: ``python -m benchmarks.instance_overhead [REDIS_URL] [-n 20]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import uuid

from benchmarks.common import DEFAULT_REDIS, World, markdown_table, percentile, wait_until, world

FRESH_PY = "import subprocess; subprocess.run(['/bin/sh', '-c', 'true'])"


def scalejob_long_lived(w: World, n: int) -> list[float]:
    from app.queue import records
    from app.queue.put import put

    spec = w.deploy_command_service("ovh")
    w.scalejob_worker(spec.name, f"{spec.name}@bench")
    w.wait_scalejob_idle(spec.name, 1)
    out = []
    for _ in range(n + 2):  # 2 warm-up tasks, not counted
        t0 = time.time()
        rid = put(w.r, spec, "command", b"true")[1]
        rec = wait_until(lambda: (x := records.get(w.r, rid)) and x.done and x, 30, f"request {rid}", 0.002)
        assert rec.state == "succeeded", rec.error
        out.append(time.time() - t0)
    return out[2:]


def _plain_end(w: World, run: str, tid: str) -> float:
    from app.core import keys

    return float(json.loads(wait_until(lambda: w.r.hget(keys.bench(run), tid), 60, f"plain task {tid}", 0.002))["end"])


def plain_long_lived(w: World, n: int) -> list[float]:
    from benchmarks.plain_app import tuned

    queue, run = w.name("ovh-plain"), uuid.uuid4().hex
    w.plain_worker("tuned", queue, f"{queue}@bench", pool="threads", same_flags=True)
    w.wait_plain_ready([f"{queue}@bench"])
    out = []
    for i in range(n + 2):
        t0 = time.time()
        tuned.send_task("bench.timed", kwargs={"run": run, "command": "true"}, queue=queue, task_id=f"t{i}")
        out.append(_plain_end(w, run, f"t{i}") - t0)
    return out[2:]


def fresh_worker_per_task(w: World, n: int) -> list[float]:
    from benchmarks.plain_app import tuned

    queue, run = w.name("ovh-fresh"), uuid.uuid4().hex
    out = []
    for i in range(n):
        t0 = time.time()
        tuned.send_task("bench.timed", kwargs={"run": run, "command": "true"}, queue=queue, task_id=f"t{i}")
        proc = w.plain_worker("tuned", queue, f"{queue}-{i}@bench", pool="threads", same_flags=True)
        out.append(_plain_end(w, run, f"t{i}") - t0)
        w.stop(proc)
    return out


def fresh_python_per_task(n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.time()
        subprocess.run([sys.executable, "-c", FRESH_PY], check=True)
        out.append(time.time() - t0)
    return out


def run(redis_url: str = DEFAULT_REDIS, n: int = 20) -> dict:
    """p50/p95 per-task seconds of every variant; ``overhead`` = fresh Celery worker p50 / scalejob p50."""
    series: dict[str, list[float]] = {}
    with world(redis_url, "ovh") as w:
        series["scalejob, long-lived instance"] = scalejob_long_lived(w, n)
        series["plain Celery, long-lived worker"] = plain_long_lived(w, n)
        series["fresh Celery worker per task"] = fresh_worker_per_task(w, n)
    series["fresh `python -c` per task (no broker)"] = fresh_python_per_task(n)
    figs = {k: {"p50_ms": percentile(v, 50) * 1000, "p95_ms": percentile(v, 95) * 1000} for k, v in series.items()}
    sj = figs["scalejob, long-lived instance"]["p50_ms"]
    result = {"per_task": figs, "n": n, "fresh_worker_over_scalejob": figs["fresh Celery worker per task"]["p50_ms"] / sj,
              "fresh_python_over_scalejob": figs["fresh `python -c` per task (no broker)"]["p50_ms"] / sj}
    print(render(result))
    return result


def render(res: dict) -> str:
    rows = [(k, v["p50_ms"], v["p95_ms"]) for k, v in res["per_task"].items()]
    head = f"Per-task time of the command `true`, {res['n']} sequential tasks (hand-over → finished)"
    tail = (f"fresh Celery worker per task / scalejob instance (p50): {res['fresh_worker_over_scalejob']:.1f}x; "
            f"fresh `python -c` / scalejob: {res['fresh_python_over_scalejob']:.1f}x")
    return "\n".join([head, "", markdown_table(["variant", "p50 (ms)", "p95 (ms)"], rows), "", tail])


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("redis_url", nargs="?", default=DEFAULT_REDIS)
    ap.add_argument("-n", type=int, default=20)
    a = ap.parse_args()
    run(a.redis_url, a.n)
