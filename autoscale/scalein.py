"""The scale-in protocol, and its mirror image, standby activation, over Celery remote control.

Scale-in never interrupts a task:

1. ``cancel_consumer(queue, destination=[victim])``: the victim takes nothing new. With
   prefetch 1 and ``worker_disable_prefetch`` it holds no reserved message either; a message it
   received in the race window before the cancel is simply run to completion.
2. its registry state becomes ``draining`` (so nobody counts it as capacity, and ``status``
   shows it);
3. once its registry entry shows no running task, a warm shutdown (SIGTERM to its main process,
   or Celery's ``shutdown`` control for a worker no backend owns). Celery's warm shutdown waits
   for anything still in its pool, so even a task that raced past step 1 completes.

Activation of a warm-standby worker is one ``add_consumer(queue, destination=[name])``: the
process is already initialised, so it is capacity in milliseconds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class Control:
    """Celery remote control addressed to one worker at a time."""

    app: Any  # celery.Celery
    timeout: float = 1.0

    def cancel_consumer(self, queue: str, name: str) -> bool:
        """Tell ``name`` to stop consuming ``queue``; True when it confirmed."""
        return self._call("cancel_consumer", queue, name)

    def add_consumer(self, queue: str, name: str) -> bool:
        """Tell ``name`` to start consuming ``queue``; True when it confirmed."""
        return self._call("add_consumer", queue, name)

    def shutdown(self, name: str) -> None:
        """Warm shutdown of a worker that no backend of ours owns (it was started by hand)."""
        self.app.control.shutdown(destination=[name])

    def _call(self, command: str, queue: str, name: str) -> bool:
        try:
            replies = getattr(self.app.control, command)(queue, destination=[name], reply=True, timeout=self.timeout)
        except Exception as exc:  # noqa: BLE001 - a broker hiccup must not stop the loop
            log.warning("%s %s -> %s failed: %s", command, queue, name, exc)
            return False
        ok = any(name in reply for reply in replies or [])
        if not ok:
            log.warning("%s %s -> %s: no reply within %.1fs", command, queue, name, self.timeout)
        return ok
