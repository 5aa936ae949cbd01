"""Recent run times per service (owner of ``keys.run_times``): written by a task's finish, read by the autoscaler.

One Redis list per service, newest first, capped at :data:`KEPT` seconds-values.
``lua/lib/record_run.lua`` is the Lua that writes it, included in the task's end script
(``lua/task_end.lua``, run by ``app/queue/lifecycle.py``, which passes :data:`KEPT`; so
recording costs no round trip: the record's ``started_at`` and the finish time are both at hand
there), and :func:`recent` reads it. Only a delivery that held the lease records, and only a
succeeded or failed run (a cancelled one says nothing about how long tasks take).
"""

from __future__ import annotations

import redis

from app.core import keys

KEPT = 50  # recent finished tasks the wait-target estimate is made of


def recent(r: redis.Redis, service: str) -> list[float]:
    """The service's recent run times in seconds, newest first (empty before any task finished)."""
    return [float(v) for v in r.lrange(keys.run_times(service), 0, KEPT - 1)]
