"""The controller's side of crash-loop backoff: take failed starts, keep the count, say how long to hold.

Kept out of ``controller.py`` so the loop stays readable: the controller asks :meth:`CrashLoops.observe`
once per service per tick and spawns nothing while it answers a wait > 0. The schedule is the pure
:mod:`app.core.backoff`; the stored document is :mod:`app.queue.health`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import redis

from app.core.backoff import BackoffConfig, should_reset, wait_left
from app.queue import health
from autoscale.backends.base import WorkerBackend

log = logging.getLogger(__name__)


@dataclass
class CrashLoops:
    """Per service: the stored :class:`~app.queue.health.Health` and since when a worker is ready."""

    r: redis.Redis
    cfg: BackoffConfig = field(default_factory=BackoffConfig)
    states: dict[str, health.Health] = field(default_factory=dict)
    ready_since: dict[str, float] = field(default_factory=dict)

    def forget_cache(self) -> None:
        """A new leader term: re-read what the previous leader stored (never restart a loop at full speed)."""
        self.states.clear()
        self.ready_since.clear()

    def observe(self, service: str, spec_hash: str, backend: WorkerBackend, ready: bool,
                now: float) -> tuple[float, list[str]]:
        """Seconds to hold spawns of ``service`` (0: spawn freely) and the actions to log.

        ``ready``: some worker of the service is registered now. A new ``spec_hash`` (a redeploy)
        ends the loop at once: the fix deserves an immediate try.
        """
        h = self.states.get(service)
        if h is None:
            h = self.states[service] = health.get(self.r, service)
        notes: list[str] = []
        for f in backend.failed_starts(service):
            h = health.failed(self.r, h, f, spec_hash, self.cfg)
            notes.append(f"failed-start {f.worker}: {f.reason}; backoff {health.delay(h.failures, self.cfg):.0f}s")
            log.warning("%s: worker %s exited before it was ready (%s); failure %d, next start in %.0fs",
                        service, f.worker, f.reason, h.failures, health.delay(h.failures, self.cfg))
        if ready:
            self.ready_since.setdefault(service, now)
        else:
            self.ready_since.pop(service, None)
        redeployed = bool(spec_hash and h.spec_hash and h.spec_hash != spec_hash)
        if h.failures and (redeployed or should_reset(h.failures, self.ready_since.get(service), now, self.cfg)):
            why = "spec changed" if h.spec_hash != spec_hash else f"a worker was ready {self.cfg.reset_after:.0f}s"
            h = health.reset(self.r, service, h, spec_hash)
            notes.append(f"backoff-reset ({why})")
        self.states[service] = h
        return wait_left(h.failures, (h.last_failure or {}).get("at"), now, self.cfg), notes
