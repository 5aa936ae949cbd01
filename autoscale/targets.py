"""What the autoscaler scales: a list of :class:`Target` the controller reads every tick.

Either the deployed scalejob services (:class:`ScalejobTargets`: spec changes apply on the next
tick) or one queue of a plain Celery project (a fixed list, ``autoscale/main.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import redis

from app.core.specs import parse_spec
from app.queue import services, tenants
from app.queue.services import spec_hash
from autoscale.config import from_spec
from autoscale.policy import AutoscalerConfig

GONE = AutoscalerConfig(min=0, max=0, scale_down_grace=0, stabilization=0)  # an undeployed service


@dataclass(frozen=True)
class Target:
    """One pool of workers to scale: a service name, the queue it consumes, its config."""

    service: str
    queues: tuple[str, ...]  # a scalejob service has one queue per tenant (app/queue/tenants.py)
    cfg: AutoscalerConfig
    spec_hash: str = ""  # services.spec_hash of the deployed spec; workers with another one roll ("": never)


class ScalejobTargets:
    """The deployed services (re-read each tick; a spec is re-parsed only when its JSON changed)."""

    def __init__(self, r: redis.Redis) -> None:
        self.r = r
        self._cache: dict[str, tuple[bytes, AutoscalerConfig, str]] = {}

    def __call__(self) -> list[Target]:
        out = []
        for name, raw in services.raw_specs(self.r).items():
            cached = self._cache.get(name)
            if cached is None or cached[0] != raw:
                spec = parse_spec(json.loads(raw))
                cached = (raw, from_spec(spec), spec_hash(spec))
                self._cache[name] = cached
            out.append(Target(name, tuple(tenants.service_queues(self.r, name)), cached[1], cached[2]))
        return out
