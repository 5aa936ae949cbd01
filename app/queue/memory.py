"""Puts are refused before the state Redis runs out of memory: queued work is never evicted.

Why: every put is a record, an input-queue entry and a broker message in Redis; a flood (or one
huge output) can take it to its memory limit, and then either Redis refuses writes half-way
through a put or, with an eviction policy, drops queued tasks. Past ``FRACTION`` of the limit a
put answers 507 (Insufficient Storage, with Retry-After) and writes nothing; results and log
lines of running work still fit in the rest. The limit is ``SCALEJOB_REDIS_MEMORY_LIMIT``, else
Redis's own ``maxmemory``; none set: no guard (the embedded Redis runs with ``noeviction``).
"""

from __future__ import annotations

import time

import redis

from app.core.settings import get_settings

FRACTION = 0.9
CHECK_EVERY_S = 1.0  # INFO costs a round trip: one look a second is enough to stop a flood
_last: dict[int, tuple[float, str | None]] = {}


def refusal(r: redis.Redis) -> str | None:
    """Why a put must be refused now (Redis near its memory limit), or None."""
    configured = get_settings().redis_memory_limit
    hit = _last.get(configured)
    if hit is not None and time.monotonic() - hit[0] < CHECK_EVERY_S:
        return hit[1]
    info = r.info("memory")
    limit = configured or int(info.get("maxmemory") or 0)
    used = int(info.get("used_memory") or 0)
    why = None
    if limit and used >= FRACTION * limit:
        why = (f"the state store is at {used / limit:.0%} of its memory limit ({limit >> 20} MiB): "
               "new tasks are refused until results are consumed or the limit is raised; retry later")
    _last[configured] = (time.monotonic(), why)
    return why
