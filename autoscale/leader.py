"""One autoscaler per deployment: a Redis lock with a TTL, renewed every tick, and a fenced term.

The leader holds ``keys.autoscaler_lock()`` (value = its id) for ``autoscaler_lock_ttl`` seconds
and renews it each tick; a second autoscaler polls the same lock as a hot standby and takes over
within one TTL of the leader dying (a SIGKILLed leader simply stops renewing). Renewal and release
are compare-and-set scripts, so an instance that lost the lock can never extend or drop the new
leader's.

Why a term as well as the lock: a leader can lose the lock without knowing it (paused, cut off
from Redis, or in the middle of a tick when the TTL ran out). Each acquisition increments
``keys.autoscaler_term()``; every spawn or stop a backend makes is recorded through
:meth:`Leadership.write` / :meth:`Leadership.check`, which succeed only while the lock is ours
*and* the term is still the one we took it with. A spawn decided by an old term after a new one
began is refused before anything is forked, so two leaders can never both grow the pool.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from pathlib import Path

import redis
from redis.commands.core import Script

from app.core import keys, replies
from app.queue import scripts

log = logging.getLogger(__name__)
LUA = scripts.Library(Path(__file__).parent / "lua")  # the autoscaler's own scripts: autoscale/lua/*.lua


def lua(name: str) -> Script:
    """``autoscale/lua/<name>.lua``, read once per process; call it with ``client=``."""
    return LUA.script(name)


def held(r: redis.Redis) -> bool:
    """Whether some autoscaler leads now (its lock is held): ``up`` and ``cancel`` wait on it."""
    return bool(r.exists(keys.autoscaler_lock()))


class Fenced(RuntimeError):
    """This autoscaler's term is over: the write it tried was refused (a newer leader acts now)."""


class Leadership:
    """Take, keep and give back the autoscaler lock; fence writes to the term that holds it."""

    def __init__(self, r: redis.Redis, ttl: float, scope: str = "") -> None:
        self.r, self.ttl_ms = r, int(ttl * 1000)
        self.me = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        suffix = f":{scope}" if scope else ""
        self.key, self.term_key = keys.autoscaler_lock() + suffix, keys.autoscaler_term() + suffix
        self.term = 0  # the term this instance leads in; 0 when it does not lead
        self.refused = 0  # writes refused because the term was over (logged each time)
        self._acquire, self._release, self._fenced = lua("acquire"), lua("release"), lua("fenced")

    def hold(self) -> bool:
        """True when this instance is the leader for the next TTL (acquired or renewed now)."""
        self.term = int(
            self._acquire(
                keys=[self.key, self.term_key], args=[self.me, self.ttl_ms, str(self.term or "")], client=self.r
            )
        )
        return self.term > 0

    def holder(self) -> str | None:
        raw = self.r.get(self.key)
        return replies.text(raw) if raw else None

    def release(self) -> None:
        self._release(keys=[self.key], args=[self.me], client=self.r)
        self.term = 0

    # -- fencing -------------------------------------------------------------------------------
    def write(self, hash_key: str, field: str, value: str, what: str) -> None:
        """HSET ``field`` of ``hash_key`` only in our term; else :class:`Fenced`."""
        self._run([self.key, self.term_key, hash_key], ("hset", field, value), what)

    def check(self, what: str) -> None:
        """Raise :class:`Fenced` unless this instance still leads in its term (before a stop or drain)."""
        self._run([self.key, self.term_key], ("check", "", ""), what)

    def _run(self, script_keys: list[str], op: tuple[str, str, str], what: str) -> None:
        if self.term and self._fenced(keys=script_keys, args=[self.me, str(self.term), *op], client=self.r):
            return
        self.refused += 1
        log.warning(
            "autoscaler %s: %s refused: term %d is over (the lock is held by %s)",
            self.me,
            what,
            self.term,
            self.holder(),
        )
        raise Fenced(f"{what}: term {self.term} of autoscaler {self.me} is over")
