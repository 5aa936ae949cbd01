"""The run-time and start-time figures the wait-target rule plans with, kept per service.

Run times are stored by the workers' finish script (:mod:`app.queue.run_times` owns the key);
:func:`run_times` summarizes them for the policy.

Start times: how long a spawned worker took to register, measured by the controller from the
backend's spawn time (``meta["started_at"]``) to the first tick that sees it registered; an EWMA
per service in memory (a new leader measures again; until then the policy uses its prior).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import redis

from app.queue import run_times as stored
from autoscale.backends.base import WorkerHandle
from autoscale.target_wait import RunTimes, summarize

START_WEIGHT = 0.3  # weight of a new start-time sample in the EWMA


def run_times(r: redis.Redis, service: str) -> RunTimes | None:
    """The figures of the service's recent run times, or None before any task finished."""
    return summarize(stored.recent(r, service))


@dataclass
class StartTimes:
    """Worker start seconds per service, learned from the spawns the controller sees register.

    Why from the controller's own ticks: a spawn is first seen as a backend handle that has not
    registered yet (``meta["start_by"]`` set); the first tick that finds it registered ends the
    measurement. Every backend has that, and the error is at most one tick (0.5 s).
    """

    ewma: dict[str, float] = field(default_factory=dict)
    # service -> spawn not yet registered -> when first seen
    pending: dict[str, dict[str, float]] = field(default_factory=dict)

    def observe(self, service: str, handles: list[WorkerHandle], registered: set[str] | frozenset[str],
                now: float) -> float | None:
        """Measure the spawns that registered since the last tick; the service's estimate (None: none yet)."""
        was, now_pending = self.pending.get(service, {}), {}
        for h in handles:
            if h.name not in registered and h.meta.get("start_by"):
                now_pending[h.name] = was.get(h.name, now)
            elif h.name in registered and h.name in was:
                sample = max(now - was[h.name], 0.0)
                old = self.ewma.get(service)
                self.ewma[service] = sample if old is None else (1 - START_WEIGHT) * old + START_WEIGHT * sample
        self.pending[service] = now_pending  # a spawn gone before it registered is forgotten
        return self.ewma.get(service)
