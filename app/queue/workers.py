"""The worker registry (owner of ``keys.worker*`` and ``keys.service_workers``).

Each worker keeps a hash with a short TTL, refreshed every ``heartbeat_interval`` by a thread in
its main process, plus a set of the request ids it is running (written by the task itself).
Running-task counts therefore come from here, whatever the broker: the autoscaler reads
O(workers) keys per tick, and a worker that died simply expires.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from app.core import keys, replies
from app.core.settings import get_settings
from app.queue import scripts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerInfo:
    """One registry entry as the autoscaler and the API see it."""

    name: str
    service: str
    pid: int
    host: str
    state: str
    running: tuple[str, ...]
    started_at: float
    heartbeat_at: float
    gpus: str = ""
    spec_hash: str = ""  # services.spec_hash of the spec it started with: a different one means roll it

    @property
    def busy(self) -> bool:
        return bool(self.running)


def register(
    r: redis.Redis, name: str, service: str, state: str = "starting", gpus: str = "", spec_hash: str = ""
) -> None:
    s = get_settings()
    now = time.time()
    with r.pipeline() as p:
        p.hset(
            keys.worker(name),
            mapping={
                "name": name,
                "service": service,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "state": state,
                "started_at": f"{now:.6f}",
                "heartbeat_at": f"{now:.6f}",
                "gpus": gpus,
                "spec_hash": spec_hash,
            },
        )
        p.expire(keys.worker(name), int(s.heartbeat_ttl) + 1)
        p.sadd(keys.service_workers(service), name)
        p.execute()


def set_state(r: redis.Redis, name: str, state: str) -> None:
    r.hset(keys.worker(name), "state", state)


_SET_STATE_IF_PRESENT = scripts.load("set_state_if_present")


def set_state_if_present(r: redis.Redis, name: str, state: str) -> bool:
    """Set a live worker's state (the autoscaler: draining, idle); never resurrects an expired entry."""
    return int(_SET_STATE_IF_PRESENT(keys=[keys.worker(name)], args=[state], client=r)) >= 0


def heartbeat(r: redis.Redis, name: str) -> str | None:
    """Refresh ``name``'s entry; returns the state it holds (the autoscaler may have changed it)."""
    ttl = int(get_settings().heartbeat_ttl) + 1
    with r.pipeline() as p:
        p.hset(keys.worker(name), "heartbeat_at", f"{time.time():.6f}")
        p.expire(keys.worker(name), ttl)
        p.expire(keys.worker_tasks(name), ttl)
        p.hget(keys.worker(name), "state")
        state = p.execute()[-1]
    return state.decode() if state else None


def task_started(r: redis.Redis, name: str, request_id: str) -> None:
    with r.pipeline() as p:
        p.sadd(keys.worker_tasks(name), request_id)
        p.expire(keys.worker_tasks(name), int(get_settings().heartbeat_ttl) + 1)
        p.execute()


def task_finished(r: redis.Redis, name: str, request_id: str) -> None:
    r.srem(keys.worker_tasks(name), request_id)


def unregister(r: redis.Redis, name: str, service: str) -> None:
    with r.pipeline() as p:
        p.delete(keys.worker(name), keys.worker_tasks(name))
        p.srem(keys.service_workers(service), name)
        p.execute()


def _decode(name: str, h: dict[bytes, bytes], running: set[bytes]) -> WorkerInfo:
    """A registry entry from its hash and task set; ``busy``/``idle`` follow the task set."""
    g = lambda k: h.get(k.encode(), b"").decode()  # noqa: E731
    state = g("state") or "starting"
    if running and state == "idle":
        state = "busy"
    elif not running and state == "busy":
        state = "idle"
    return WorkerInfo(
        name=name,
        service=g("service"),
        pid=int(g("pid") or 0),
        host=g("host"),
        state=state,
        running=tuple(sorted(x.decode() for x in running)),
        started_at=float(g("started_at") or 0),
        heartbeat_at=float(g("heartbeat_at") or 0),
        gpus=g("gpus"),
        spec_hash=g("spec_hash"),
    )


def list_workers(r: redis.Redis, service: str) -> list[WorkerInfo]:
    """Live workers of a service (expired entries are pruned from the service set)."""
    names = sorted(x.decode() for x in replies.members(r.smembers(keys.service_workers(service))))
    if not names:
        return []
    with r.pipeline(transaction=False) as p:
        for n in names:
            p.hgetall(keys.worker(n))
            p.smembers(keys.worker_tasks(n))
        raw = p.execute()
    out, dead = [], []
    for i, n in enumerate(names):
        h, running = raw[2 * i], raw[2 * i + 1]
        if not h:
            dead.append(n)
            continue
        out.append(_decode(n, h, running))
    if dead:
        r.srem(keys.service_workers(service), *dead)
    return out


def state_of(r: redis.Redis, name: str) -> str | None:
    """The state a worker's entry holds, or None while it is not registered (or expired)."""
    raw = r.hget(keys.worker(name), "state")
    return raw.decode() if isinstance(raw, bytes) else raw


def is_registered(r: redis.Redis, name: str) -> bool:
    return bool(r.exists(keys.worker(name)))


def running_of(r: redis.Redis, name: str) -> list[str]:
    """The request ids the worker's task set holds (written by the task itself)."""
    return [x.decode() for x in replies.members(r.smembers(keys.worker_tasks(name)))]


def get_worker(r: redis.Redis, name: str) -> WorkerInfo | None:
    h = replies.fields(r.hgetall(keys.worker(name)))
    return _decode(name, h, replies.members(r.smembers(keys.worker_tasks(name)))) if h else None


_SNAPSHOT = scripts.load("snapshot")


def _around(key: Callable[[str], str]) -> list[str]:
    """What comes before and after the name in the keys ``key`` makes (the snapshot script builds them)."""
    before, after = key("\0").split("\0")
    return [before, after]


def snapshot(r: redis.Redis, service: str) -> tuple[list[WorkerInfo], dict[str, float]]:
    """Live workers of ``service`` sorted by name and, per busy worker, when its first task started.

    One round trip (``lua/snapshot.lua``): what the autoscaler reads every tick. Expired entries are
    pruned from the service set as :func:`list_workers` does.
    """
    args = [*_around(keys.worker), *_around(keys.worker_tasks), *_around(keys.request)]
    rows = _SNAPSHOT(keys=[keys.service_workers(service)], args=args, client=r)
    infos, started, dead = [], {}, False
    for raw_name, flat, running, start in rows:
        name = replies.text(raw_name)
        if not flat:
            dead = True
            continue
        h = dict(zip(flat[::2], flat[1::2], strict=False)) if isinstance(flat, list) else flat
        infos.append(_decode(name, h, set(running)))
        if start:
            started[name] = float(start)
    if dead:
        list_workers(r, service)  # prunes the expired names
    return sorted(infos, key=lambda w: w.name), started
