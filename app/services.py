"""The service registry: deployed specs in Redis (owner of ``keys.services``)."""

from __future__ import annotations

import hashlib
import json

import redis

from app import keys
from app.specs import ServiceSpec, parse_spec


class UnknownService(LookupError):
    """No service of that name is deployed."""


def save(r: redis.Redis, spec: ServiceSpec) -> int:
    """Register or replace a spec atomically; returns the service's new version number."""
    with r.pipeline() as p:
        p.hset(keys.services(), spec.name, spec.to_json())
        p.incr(keys.service_version(spec.name))
        _, version = p.execute()
    return int(version)


def get(r: redis.Redis, name: str) -> ServiceSpec:
    raw = r.hget(keys.services(), name)
    if raw is None:
        raise UnknownService(name)
    return parse_spec(json.loads(raw))


def version(r: redis.Redis, name: str) -> int:
    return int(r.get(keys.service_version(name)) or 0)


def all_specs(r: redis.Redis) -> dict[str, ServiceSpec]:
    return {k.decode(): parse_spec(json.loads(v)) for k, v in r.hgetall(keys.services()).items()}


def delete(r: redis.Redis, name: str) -> bool:
    return bool(r.hdel(keys.services(), name))


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

DELETE_MODES = ("drain", "keep")


def deleting(r: redis.Redis, name: str) -> str | None:
    """``"drain"`` while a service is being drained for deletion (puts are refused), else None."""
    raw = r.get(keys.service_deleting(name))
    return raw.decode() if raw else None


def begin_drain(r: redis.Redis, name: str) -> None:
    """Refuse new puts; the service stays deployed (its workers keep consuming) until drained."""
    if r.hget(keys.services(), name) is None:
        raise UnknownService(name)
    r.set(keys.service_deleting(name), "drain")


def cancel_drain(r: redis.Redis, name: str) -> None:
    r.delete(keys.service_deleting(name))


def pending(r: redis.Redis, name: str) -> tuple[int, int]:
    """``(waiting, running)`` tasks of a service: what a drain waits for."""
    from app import tenants
    from workers.registry import list_workers

    running = sum(len(w.running) for w in list_workers(r, name))
    return tenants.waiting(r, name), running


def remove(r: redis.Redis, name: str) -> bool:
    """Unregister a service now. Its queued tasks stay on the broker (and their records), so
    deploying the same name again runs them; its workers are scaled in by the autoscaler, each
    after its running task."""
    with r.pipeline() as p:
        p.hdel(keys.services(), name)
        p.delete(keys.service_deleting(name))
        p.delete(keys.service_health(name))  # autoscale/health.py: a new deploy of the name starts healthy
        gone, *_ = p.execute()
    return bool(gone)
