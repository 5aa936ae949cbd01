"""The service registry: deployed specs in Redis (owner of ``keys.services`` and ``keys.service_tokens``).

A spec's ``metadata.token`` is not stored with the spec: every worker and the autoscaler read
specs, and a worker's Redis credential must not open other services (docs/security.md). The
token goes to ``keys.service_tokens()``, outside the key prefix that their ACL users are granted;
:func:`token` reads it back for the API.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import redis

from app.core import keys, replies
from app.core.specs import ServiceSpec, parse_spec
from app.queue import health, tenants
from app.queue.workers import list_workers


class UnknownService(LookupError):
    """No service of that name is deployed."""


def save(r: redis.Redis, spec: ServiceSpec) -> int:
    """Register or replace a spec atomically; returns the service's new version number."""
    stored = _without_token(spec)
    with r.pipeline() as p:
        p.hset(keys.services(), spec.name, stored.to_json())
        if spec.metadata.token:
            p.hset(keys.service_tokens(), spec.name, spec.metadata.token)
        else:
            p.hdel(keys.service_tokens(), spec.name)
        p.incr(keys.service_version(spec.name))
        *_, version = p.execute()
    return int(version)


def _without_token(spec: ServiceSpec) -> ServiceSpec:
    if not spec.metadata.token:
        return spec
    return spec.model_copy(update={"metadata": spec.metadata.model_copy(update={"token": None})})


def get(r: redis.Redis, name: str) -> ServiceSpec:
    """The stored spec (its ``metadata.token`` is always None: see :func:`token`)."""
    raw = r.hget(keys.services(), name)
    if raw is None:
        raise UnknownService(name)
    return _without_token(parse_spec(json.loads(raw)))


def token(r: redis.Redis, name: str) -> str | None:
    """The service's own ``metadata.token`` (API processes only: workers' ACL users can't read it)."""
    raw = r.hget(keys.service_tokens(), name)
    return replies.text(raw) if raw else None


def tokens(r: redis.Redis) -> list[str]:
    """Every service's own token, to tell "a valid token" from "none" before naming anything."""
    return [replies.text(v) for v in r.hvals(keys.service_tokens())]


def migrate_tokens(r: redis.Redis) -> int:
    """Move tokens that specs stored before this release kept inline into ``keys.service_tokens``.

    Why: an upgraded deployment must not keep tokens where workers can read them. Idempotent;
    returns how many specs it rewrote.
    """
    moved = 0
    for name, raw in r.hgetall(keys.services()).items():
        spec = parse_spec(json.loads(raw))
        if spec.metadata.token:
            with r.pipeline() as p:
                p.hsetnx(keys.service_tokens(), spec.name, spec.metadata.token)
                p.hset(keys.services(), name, _without_token(spec).to_json())
                p.execute()
            moved += 1
    return moved


def version(r: redis.Redis, name: str) -> int:
    return int(r.get(keys.service_version(name)) or 0)


def raw_specs(r: redis.Redis) -> dict[str, bytes]:
    """Every deployed spec as its stored JSON: the autoscaler re-parses one only when it changed."""
    return {k.decode(): v for k, v in replies.fields(r.hgetall(keys.services())).items()}


def all_specs(r: redis.Redis) -> dict[str, ServiceSpec]:
    return {
        k.decode(): _without_token(parse_spec(json.loads(v)))
        for k, v in replies.fields(r.hgetall(keys.services())).items()
    }


def delete(r: redis.Redis, name: str) -> bool:
    with r.pipeline() as p:
        p.hdel(keys.services(), name)
        p.hdel(keys.service_tokens(), name)
        gone, _ = p.execute()
    return bool(gone)


# --- rolling updates: which changes need a worker restart --------------------------------------

def restart_relevant(spec: ServiceSpec) -> dict:
    """The parts of a spec a running worker has baked in: changing any of them needs new workers.

    A worker reads its spec once at start (init commands, user app, env, storage, GPU placement,
    thread count, log options, max_runtime). Everything else (autoscaler, queue limits, token,
    task types, front end) is read on every use by the API or the autoscaler and applies at once.
    """
    data = json.loads(spec.to_json())
    meta = data["metadata"]
    return {
        "containers": data["containers"],
        "storage": data.get("storage", []),
        "scalable_job": data.get("scalable_job", {}),
        "metadata": {k: meta.get(k) for k in ("gpu", "cpu", "memory", "rpc.worker_threads", "max_runtime")},
    }


def spec_hash(spec: ServiceSpec) -> str:
    """A short stable hash of :func:`restart_relevant`: workers whose hash differs must roll."""
    canonical = json.dumps(restart_relevant(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# --- deletion: drain or keep, never drop ----------------------------------------------------

def deleting(r: redis.Redis, name: str) -> str | None:
    """``"drain"`` while a service is being drained for deletion (puts are refused), else None."""
    raw = r.get(keys.service_deleting(name))
    return replies.text(raw) if raw else None


def begin_drain(r: redis.Redis, name: str) -> None:
    """Refuse new puts; the service stays deployed (its workers keep consuming) until drained."""
    if r.hget(keys.services(), name) is None:
        raise UnknownService(name)
    r.set(keys.service_deleting(name), "drain")


def pending(r: redis.Redis, name: str) -> tuple[int, int]:
    """``(waiting, running)`` tasks of a service: what a drain waits for."""
    running = sum(len(w.running) for w in list_workers(r, name))
    return tenants.waiting(r, name), running


def remove(r: redis.Redis, name: str) -> bool:
    """Unregister a service now. Its queued tasks stay on the broker (and their records), so
    deploying the same name again runs them; its workers are scaled in by the autoscaler, each
    after its running task."""
    with r.pipeline() as p:
        p.hdel(keys.services(), name)
        p.hdel(keys.service_tokens(), name)
        p.delete(keys.service_deleting(name))
        health.forget(p, name)  # a new deploy of the name starts healthy
        gone, *_ = p.execute()
    return bool(gone)


def public(r: redis.Redis, spec: ServiceSpec) -> dict[str, Any]:
    """The spec as JSON with its token masked: tokens are never sent back, only that there is one."""
    data = json.loads(spec.to_json())
    if token(r, spec.name):
        data.setdefault("metadata", {})["token"] = "***"
    return data
