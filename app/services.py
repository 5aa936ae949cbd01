"""The service registry: deployed specs in Redis (owner of ``keys.services``)."""

from __future__ import annotations

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
