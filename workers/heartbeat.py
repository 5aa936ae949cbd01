"""The worker's heartbeat thread: its registry entry, its leases, and a turn at recovery.

It lives with the worker, not in :mod:`app.queue.workers`, because it runs inside the worker
process and drives the worker's lease clock; the registry keys it writes are still written only
through :mod:`app.queue.workers`.
"""

from __future__ import annotations

import logging
import threading

import redis

from app.core.settings import get_settings
from app.queue import records, recovery
from app.queue.workers import heartbeat, is_registered, register, running_of, set_state, unregister
from workers import leases

log = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    """Refreshes a worker's entry until stopped; survives Redis outages (it just retries)."""

    def __init__(self, r: redis.Redis, name: str, service: str, state: str = "idle", gpus: str = "",
                 spec_hash: str = "") -> None:
        super().__init__(name="scalejob-heartbeat", daemon=True)
        self.r, self.worker, self.service = r, name, service
        self.state, self.gpus, self.spec_hash = state, gpus, spec_hash
        self._stop_event = threading.Event()

    def run(self) -> None:
        interval = get_settings().heartbeat_interval
        registered = False
        send = recovery.celery_sender()
        while not self._stop_event.is_set():
            try:
                if not registered or not is_registered(self.r, self.worker):
                    register(self.r, self.worker, self.service, self.state, self.gpus, self.spec_hash)
                    registered = True
                # Remember the state the entry holds, so an entry lost with a Redis restart comes
                # back as the autoscaler left it (``draining``: it no longer consumes), not as new.
                self.state = heartbeat(self.r, self.worker) or self.state
                running = running_of(self.r, self.worker)
                leases.CLOCK.renewed(running, records.renew_leases(self.r, running, self.worker))
                if recovery.try_lead(self.r, self.worker):
                    recovery.recover_once(self.r, send)
            except redis.RedisError:
                registered = False
            except Exception:  # noqa: BLE001 - the heartbeat must outlive any single failure
                log.exception("heartbeat")
            self._stop_event.wait(interval)

    def set_state(self, state: str) -> None:
        self.state = state
        try:
            set_state(self.r, self.worker, state)
        except redis.RedisError:
            pass

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)
        try:
            unregister(self.r, self.worker, self.service)
        except redis.RedisError:
            pass
