"""Where a scalejob task's time goes: ``workers.tasks.execute`` profiled in this process.

``python -m benchmarks.profile_execute [REDIS_URL] [-n N] [--command CMD]``

Runs ``execute()`` N times on requests put with ``app.queue.put.put`` (no Celery delivery, so
only scalejob's own work is measured) and reports:
- Redis round trips per task, by command (a pipeline counts once): the bookkeeping cost;
- the wall-time share of the parts of ``execute()`` (cProfile, cumulative): spawn, wait for the
  command, Redis, the rest.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import redis
from redis.client import Pipeline

from benchmarks.common import DEFAULT_REDIS, markdown_table, world

PARTS = {  # label -> (file suffix, function) whose cumulative time is reported
    "spawn the command (spawn server round trip)": ("workers/process/spawner.py", "spawn"),
    "wait for the command to exit and read its output": ("workers/command.py", "ready"),
    "Redis round trips (redis-py execute_command + pipelines)": ("redis/retry.py", "call_with_retry"),
    "run_command total": ("workers/command.py", "run_command"),
    "execute total": ("workers/tasks.py", "execute"),
}


@contextmanager
def count_round_trips() -> Iterator[Counter[str]]:
    """Count what this process sends to Redis: one per command, one per pipeline."""
    counts: Counter[str] = Counter()
    real_cmd, real_pipe = redis.Redis.execute_command, Pipeline.execute

    def cmd(self: redis.Redis, *args: object, **kw: object) -> object:
        counts[str(args[0])] += 1
        return real_cmd(self, *args, **kw)

    def pipe(self: Pipeline, *args: object, **kw: object) -> object:
        counts["PIPELINE(" + "+".join(str(c[0][0]) for c in self.command_stack) + ")"] += 1
        return real_pipe(self, *args, **kw)

    redis.Redis.execute_command, Pipeline.execute = cmd, pipe  # type: ignore[method-assign]
    try:
        yield counts
    finally:
        redis.Redis.execute_command, Pipeline.execute = real_cmd, real_pipe  # type: ignore[method-assign]


def run(redis_url: str = DEFAULT_REDIS, n: int = 40, command: str = "true") -> dict:
    from app.queue.put import put
    from workers import command as command_mod
    from workers import steps, tasks
    from workers.process import spawner

    with world(redis_url, "prof") as w:
        spec = w.deploy_command_service("prof")
        ids = [put(w.r, spec, "command", command.encode())[1] for _ in range(n + 1)]
        hostname = f"{spec.name}@bench"
        # as in a `scalejob worker`: shells spawned by the spawn server its SpawnServerStep starts
        steps.runtime_at(hostname).spawner = spawner.start(command_mod.REAPER)
        delivery = {"routing_key": f"scalejob.{spec.name}"}  # the queue it came from: the service's own
        task = SimpleNamespace(request=SimpleNamespace(id=None, hostname=hostname, delivery_info=delivery,
                                                       get=lambda *_: None))
        tasks.execute(task, "command", spec.name, command, None, ids.pop())  # warm-up: imports, script cache
        with count_round_trips() as counts:
            tasks.execute(task, "command", spec.name, command, None, ids.pop())
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.enable()
        for rid in ids:
            tasks.execute(task, "command", spec.name, command, None, rid)
        prof.disable()
        per_task_ms = (time.perf_counter() - t0) / len(ids) * 1000
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    total = next(v[3] for (f, _, fn), v in stats.items() if f.endswith("workers/tasks.py") and fn == "execute")
    shares = {}
    for label, (suffix, fn) in PARTS.items():
        cum = sum(v[3] for (f, _, name), v in stats.items() if f.endswith(suffix) and name == fn)
        shares[label] = 100 * cum / total
    result = {"command": command, "per_task_ms": per_task_ms, "round_trips": sum(counts.values()),
              "round_trips_by_command": dict(counts), "wall_share_pct": shares}
    print(render(result))
    return result


def render(res: dict) -> str:
    rt = markdown_table(["Redis call", "per task"], sorted(res["round_trips_by_command"].items()))
    sh = markdown_table(["part of execute()", "% of wall time"], [(k, f"{v:.1f}") for k, v in res["wall_share_pct"].items()])
    head = (f"execute() of command {res['command']!r}: {res['per_task_ms']:.1f} ms per task under cProfile, "
            f"{res['round_trips']} Redis round trips per task")
    return "\n".join([head, "", rt, "", sh])


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("redis_url", nargs="?", default=DEFAULT_REDIS)
    ap.add_argument("-n", type=int, default=40)
    ap.add_argument("--command", default="true")
    a = ap.parse_args()
    run(a.redis_url, a.n, a.command)
