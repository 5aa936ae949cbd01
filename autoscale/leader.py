"""One autoscaler per deployment: a Redis lock with a TTL, renewed every tick.

The leader holds ``keys.autoscaler_lock()`` (value = its id) for ``autoscaler_lock_ttl`` seconds
and renews it each tick; a second autoscaler polls the same lock as a hot standby and takes over
within one TTL of the leader dying (a SIGKILLed leader simply stops renewing). Renewal and release
are compare-and-set scripts, so an instance that lost the lock can never extend or drop the new
leader's.
"""

from __future__ import annotations

import os
import socket
import uuid

import redis

from app import keys

_RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class Leadership:
    """Take, keep and give back the autoscaler lock."""

    def __init__(self, r: redis.Redis, ttl: float, scope: str = "") -> None:
        self.r, self.ttl_ms = r, int(ttl * 1000)
        self.me = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.key = keys.autoscaler_lock() + (f":{scope}" if scope else "")

    def hold(self) -> bool:
        """True when this instance is the leader for the next TTL (acquired or renewed now)."""
        if self.r.set(self.key, self.me, nx=True, px=self.ttl_ms):
            return True
        return bool(self.r.eval(_RENEW, 1, self.key, self.me, self.ttl_ms))

    def holder(self) -> str | None:
        raw = self.r.get(self.key)
        return raw.decode() if raw else None

    def release(self) -> None:
        self.r.eval(_RELEASE, 1, self.key, self.me)
