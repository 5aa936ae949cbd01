"""The run-time and start-time figures the wait-target rule plans with, kept per service.

Run times: one Redis list per service, ``keys.run_times(service)``, newest first, capped at
``RUN_TIMES_KEPT`` seconds-values. This module owns it: :data:`RECORD_FN` is the Lua that writes it,
composed into the finish script of ``workers/lifecycle.py`` (so recording costs no round trip: the
record's ``started_at`` and the finish time are both at hand there), and :func:`run_times` reads it.
Only a delivery that held the lease records, and only a succeeded or failed run (a cancelled one
says nothing about how long tasks take).

Start times: how long a spawned worker took to register, measured by the controller from the
backend's spawn time (``meta["started_at"]``) to the first tick that sees it registered; an EWMA
per service in memory (a new leader measures again; until then the policy uses its prior).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis

from app.core import keys
from autoscale.target_wait import RUN_TIMES_KEPT, RunTimes, summarize

# record_run(list key, started_at, finished_at): push one run time, keep the newest RUN_TIMES_KEPT.
RECORD_FN = """
local function record_run(k, started, finished)
  local s, f = tonumber(started), tonumber(finished)
  if s and f and f >= s then
    redis.call('LPUSH', k, string.format('%.3f', f - s))
    redis.call('LTRIM', k, 0, """ + str(RUN_TIMES_KEPT - 1) + """)
  end
end
"""

START_WEIGHT = 0.3  # weight of a new start-time sample in the EWMA


def run_times(r: redis.Redis, service: str) -> RunTimes | None:
    """The figures of the service's recent run times, or None before any task finished."""
    return summarize([float(v) for v in r.lrange(keys.run_times(service), 0, RUN_TIMES_KEPT - 1)])


@dataclass
class StartTimes:
    """Worker start seconds per service, learned from the spawns the controller sees register.

    Why from the controller's own ticks: a spawn is first seen as a backend handle that has not
    registered yet (``meta["start_by"]`` set); the first tick that finds it registered ends the
    measurement. Every backend has that, and the error is at most one tick (0.5 s).
    """

    ewma: dict[str, float] = field(default_factory=dict)
    pending: dict[str, dict[str, float]] = field(default_factory=dict)  # service -> spawn not yet registered -> when first seen

    def observe(self, service: str, handles: list[Any], registered: set[str] | frozenset[str], now: float) -> float | None:
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
