"""Self-fencing: when each running request's lease was last known to be this worker's.

Why the worker's own clock: a worker cut off from Redis cannot ask Redis whether its lease is
still alive. It knows when it last renewed it. Once that is older than the lease TTL minus a
margin, the lease may have expired and the request may already run on another host, so the
worker stops its copy (:func:`workers.tasks._command` asks :meth:`LeaseClock.lost`) and reports
nothing; the fencing epoch (``app/queue/lua/lib/stale.lua``) refuses whatever it might still write.

Before it gives up, the worker tries one renewal itself on a client with a short timeout: a
heartbeat thread that was merely slow (a loaded machine) must not cost a running job.
"""

from __future__ import annotations

import functools
import threading
import time

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from app.core.connections import endpoints
from app.core.settings import get_settings
from app.queue import records


class LeaseClock:
    """Request id -> monotonic time of the last renewal known to have succeeded (thread-safe)."""

    def __init__(self) -> None:
        self._ok: dict[str, float] = {}
        self._lock = threading.Lock()

    def taken(self, request_id: str) -> None:
        with self._lock:
            self._ok[request_id] = time.monotonic()

    def renewed(self, held: list[str], renewed: list[str]) -> None:
        """A heartbeat's outcome: ``renewed`` are fresh; the rest of ``held`` are not ours any more."""
        now, fresh = time.monotonic(), set(renewed)
        with self._lock:
            for rid in held:
                if rid in self._ok:
                    self._ok[rid] = now if rid in fresh else float("-inf")

    def forget(self, request_id: str) -> None:
        with self._lock:
            self._ok.pop(request_id, None)

    def age(self, request_id: str) -> float:
        with self._lock:
            at = self._ok.get(request_id)
        return 0.0 if at is None else time.monotonic() - at

    def stale(self, request_id: str) -> bool:
        """Not renewed for TTL minus the margin: the lease may be gone (Redis need not be asked)."""
        return self.age(request_id) > fence_after()

    def lost(self, request_id: str, worker: str) -> bool:
        """True when the lease of ``request_id`` must be taken as lost: :meth:`stale` and not renewable now."""
        if not self.stale(request_id):
            return False
        try:
            ok = records.renew_leases(fencing_redis(), [request_id], worker)
        except redis.RedisError:
            ok = []
        self.renewed([request_id], ok)
        return not ok


CLOCK = LeaseClock()  # one per worker process: the heartbeat writes it, the tasks read it


def _timeout() -> float:
    return min(max(0.25 * get_settings().heartbeat_ttl, 0.5), 1.0)


def fence_after() -> float:
    """Seconds without a renewal after which a worker stops its copy.

    The lease TTL minus a margin (a heartbeat interval, at least a quarter of the TTL) minus the
    time the last renewal attempt may take, so the copy is gone before its lease can expire.
    """
    s = get_settings()
    return max(s.heartbeat_ttl - max(s.heartbeat_interval, 0.25 * s.heartbeat_ttl) - _timeout(), 0.1)


@functools.cache
def fencing_redis() -> redis.Redis:
    """A state-Redis client that answers or fails fast (a partition must not hang the heartbeat or the fence)."""
    timeout = _timeout()
    return redis.Redis.from_url(endpoints().redis_url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                socket_keepalive=True,
                                retry=Retry(NoBackoff(), 0))  # one try: the caller's own loop retries
