"""The plain-Celery baselines: the same benchmark tasks on two Celery apps, no scalejob code path.

- ``defaults``: Celery as it comes (prefetch multiplier 4, ack on receipt, prefork pool unless
  told otherwise) — what a user gets without scalejob, the HOL baseline.
- ``tuned``: exactly scalejob's Celery settings (``app.celery_app.celery_config``: acks_late,
  prefetch 1, disable_prefetch on Redis, events on) — so a scalejob-vs-tuned ratio measures only
  what scalejob adds around the task (records, leases, registry, output queue), not Celery knobs.

Run with ``celery -A benchmarks.plain_app:defaults worker`` (or ``:tuned``). Tasks record their
timings in Redis under ``keys.bench(run)`` so the benchmark process can read them back.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from celery import Celery, Task
from celery.signals import worker_ready

from app.core import keys
from app.core.celery_app import celery_config
from app.core.connections import endpoints, state_redis
from app.core.settings import get_settings


def ready_key(hostname: str) -> str:
    return keys.bench(f"ready:{hostname}")


def timed(self: Task, run: str, command: str | None = None) -> None:
    """Run ``command`` through a shell (like a scalejob command task) and record start/end/worker."""
    started = time.time()
    if command:
        subprocess.run(["/bin/sh", "-c", command], check=False)
    ended = time.time()
    entry = {"start": started, "end": ended, "worker": self.request.hostname}
    state_redis().hset(keys.bench(run), self.request.id, json.dumps(entry))


def count(run: str, argv: list[str] | None = None) -> None:
    """Run ``argv`` (or nothing) and count it: one pipelined round trip per task."""
    started = time.time()
    if argv:
        subprocess.run(argv, check=False)
    k = keys.bench(run)
    with state_redis().pipeline(transaction=False) as p:
        p.incr(f"{k}:n")
        p.setnx(f"{k}:first", f"{started:.6f}")
        p.set(f"{k}:last", f"{time.time():.6f}")
        p.execute()


def _make(name: str, config: Any) -> Celery:
    app = Celery(name)
    app.add_defaults(config)
    app.task(name="bench.timed", bind=True)(timed)
    app.task(name="bench.count")(count)
    return app


def _defaults_config() -> dict[str, Any]:
    return {"broker_url": endpoints().broker_url, "task_ignore_result": True, "broker_connection_retry_on_startup": True}


def _tuned_config() -> dict[str, Any]:
    return celery_config(endpoints().broker_url, get_settings().visibility_timeout)


defaults = _make("plain_defaults", _defaults_config)
tuned = _make("plain_tuned", _tuned_config)


@worker_ready.connect
def _ready(sender: Any = None, **_: Any) -> None:
    state_redis().set(ready_key(sender.hostname), "1", ex=600)
