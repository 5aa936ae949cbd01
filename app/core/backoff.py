"""Crash-loop backoff, as Kubernetes' CrashLoopBackOff: a pure function of (failures, now, config).

A *failed start* is a worker that exits (or is reaped) before it registers as ready: an init
command that fails, a user app that never opens its port, an import error. Without a backoff
the autoscaler would replace it on the very next tick, forever (one spawn per tick). With it,
the n-th consecutive failure holds the next spawn back ``initial * 2**(n-1)`` seconds, capped
at ``cap``; a worker that stays ready ``reset_after`` seconds (or a new spec) clears the count.

No clock reads and no I/O here: ``app/queue/health.py`` stores the counts, the controller asks
:func:`wait_left` before it spawns. That keeps the schedule table-testable.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackoffConfig:
    """How long to hold spawns back after consecutive failed starts."""

    initial: float = 1.0  # after the first failure
    cap: float = 300.0  # never more than this (5 min)
    reset_after: float = 60.0  # a worker ready this long clears the failure count


def delay(failures: int, cfg: BackoffConfig = BackoffConfig()) -> float:
    """Seconds the next spawn waits after ``failures`` consecutive failed starts (0: none)."""
    if failures <= 0:
        return 0.0
    return min(cfg.cap, cfg.initial * 2.0 ** min(failures - 1, 60))


def wait_left(failures: int, last_failure_at: float | None, now: float, cfg: BackoffConfig = BackoffConfig()) -> float:
    """Seconds until a spawn is allowed again (0.0: spawn now)."""
    if failures <= 0 or last_failure_at is None:
        return 0.0
    return max(0.0, last_failure_at + delay(failures, cfg) - now)


def should_reset(failures: int, ready_since: float | None, now: float, cfg: BackoffConfig = BackoffConfig()) -> bool:
    """True when a worker has been ready for ``reset_after`` s without a break: the loop is over."""
    return failures > 0 and ready_since is not None and now - ready_since >= cfg.reset_after
