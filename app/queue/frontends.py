"""A front end's published state (owner of ``keys.frontend``).

Written by the stack that runs it, read by status and the API.

The state carries a TTL (:data:`STATE_TTL`, refreshed on every sync of ``app/cli/frontends.py``),
so a stack that died does not leave a "running" front end behind.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import redis

from app.core import keys
from app.core.specs import ServiceSpec

STATE_TTL = 10  # seconds: refreshed every sync
NOT_RUNNING = {"state": "not running", "last_failure": None, "restarts": 0, "restart_in": 0.0}


def wants_front_end(spec: ServiceSpec) -> bool:
    return spec.metadata.type == "ScalableJobService" and spec.front_end is not None and bool(spec.front_end.script)


def state(r: redis.Redis, service: str) -> dict[str, Any] | None:
    """The published state of ``service``'s front end, or None (none runs, or no stack runs it)."""
    raw = r.get(keys.frontend(service))
    return json.loads(raw) if raw else None


def view(r: redis.Redis, spec: ServiceSpec) -> dict[str, Any] | None:
    """What status and the API show: None when the spec wants no front end, ``not running`` when no stack runs it."""
    if not wants_front_end(spec):
        return None
    return state(r, spec.name) or dict(NOT_RUNNING)


def publish(r: redis.Redis, states: Mapping[str, dict[str, Any]]) -> None:
    """Publish the state of each running front end (one round trip), each with its TTL."""
    with r.pipeline(transaction=False) as p:
        for name, data in states.items():
            p.set(keys.frontend(name), json.dumps(data), ex=STATE_TTL)
        p.execute()


def forget(r: redis.Redis, service: str) -> None:
    """The front end stopped: its state goes at once, not after the TTL."""
    r.delete(keys.frontend(service))
