"""Task start latency (enqueue → task body starts), p50/p99, on the embedded Redis and the machine's.

``python -m benchmarks.latency [MACHINE_REDIS_URL] [-n N]``

One idle worker; tasks are sent one at a time (the next only after the previous finished), so
each figure is pure start latency, never queueing. Per broker:
- scalejob: ``app.queue.put.put`` of a command task, to the record's ``started_at`` (lease taken,
  state running: the instant before the command is spawned), and to the command itself running
  (payload ``date +%s.%N``: the user's process printing its first line).
- plain Celery (same Celery settings, threads pool, concurrency 1): ``send_task`` to the task
  body's first line.
The embedded Redis is started by ``app.core.embedded.ensure_embedded`` in a temp dir (AOF on,
appendfsync everysec) and stopped afterwards.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks.common import DEFAULT_REDIS, World, markdown_table, percentile, wait_until, world


def scalejob_latencies(w: World, n: int) -> dict[str, list[float]]:
    from app.queue import records
    from app.queue.put import put

    spec = w.deploy_command_service("lat")
    w.scalejob_worker(spec.name, f"{spec.name}@bench")
    w.wait_scalejob_idle(spec.name, 1)
    started, running = [], []
    for _ in range(n):
        rid = put(w.r, spec, "command", b"date +%s.%N")[1]
        rec = wait_until(lambda: (x := records.get(w.r, rid)) and x.done and x, 30, f"request {rid}", 0.002)
        assert rec.state == "succeeded", rec.error
        started.append(rec.started_at - rec.queued_at)
        running.append(float(rec.result["tail"][0]) - rec.queued_at)
    return {"record started": started, "command running": running}


def plain_latencies(w: World, n: int) -> dict[str, list[float]]:
    from app.core import keys
    from benchmarks.plain_app import tuned

    queue, run = w.name("lat-plain"), uuid.uuid4().hex
    name = f"{queue}@bench"
    w.plain_worker("tuned", queue, name, pool="threads", same_flags=True)
    w.wait_plain_ready([name])
    out = []
    for _ in range(n):
        tid = uuid.uuid4().hex
        sent = time.time()
        tuned.send_task("bench.timed", kwargs={"run": run}, queue=queue, task_id=tid)
        raw = wait_until(lambda: w.r.hget(keys.bench(run), tid), 30, f"plain task {tid}", 0.002)
        out.append(json.loads(raw)["start"] - sent)
    return {"task body": out}


def measure(redis_url: str, n: int) -> dict[str, dict[str, float]]:
    with world(redis_url, "lat") as w:
        series = {**{f"scalejob {k}": v for k, v in scalejob_latencies(w, n).items()},
                  **{f"plain Celery {k}": v for k, v in plain_latencies(w, n).items()}}
    return {k: {"p50_ms": percentile(v, 50) * 1000, "p99_ms": percentile(v, 99) * 1000} for k, v in series.items()}


def run(redis_url: str = DEFAULT_REDIS, n: int = 100) -> dict:
    """Start latency on the embedded Redis and on ``redis_url``."""
    from app.core.embedded import ensure_embedded, stop_embedded

    with tempfile.TemporaryDirectory(prefix="scalejob-lat-emb-") as tmp:
        server = ensure_embedded(Path(tmp))
        try:
            embedded = measure(server.url, n)
        finally:
            stop_embedded(server)
    result = {"embedded": embedded, "machine": measure(redis_url, n), "n": n, "machine_url": redis_url}
    print(render(result))
    return result


def render(res: dict) -> str:
    rows = []
    for broker, label in (("embedded", "embedded Redis (AOF everysec)"), ("machine", f"machine Redis {res['machine_url']}")):
        for what, fig in res[broker].items():
            rows.append((label, what, fig["p50_ms"], fig["p99_ms"]))
    head = f"Task start latency, enqueue → start, {res['n']} sequential tasks, 1 idle worker"
    return "\n".join([head, "", markdown_table(["broker", "measured to", "p50 (ms)", "p99 (ms)"], rows)])


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("redis_url", nargs="?", default=DEFAULT_REDIS)
    ap.add_argument("-n", type=int, default=100)
    a = ap.parse_args()
    run(a.redis_url, a.n)
