"""Rolling update: workers started with an older spec are replaced one at a time, no task cut.

A worker bakes its spec in at start (command, env, init commands, user app ...); it registers
:func:`app.queue.services.spec_hash` of that spec (``app/queue/workers.py``). When a redeploy changes
the hash, the controller rolls the outdated workers, one at a time, idle ones first:

1. the worker being rolled is hidden from the policy's observation, so the policy, seeing one
   worker short of ``desired``, spawns the replacement (the usual scale-up path, GPU placement
   included) while the old worker goes on consuming: capacity never drops;
2. once the others that consume (the replacement among them) cover ``desired``, or after
   ``wait_limit`` seconds when no replacement can start, the old worker is drained with the
   scale-in protocol (``autoscale/scalein.py``): an idle one stops now, a busy one stops
   taking tasks and is warm-shut-down after its running task ends;
3. the next outdated worker is taken only when the previous one is gone.

Warm-standby workers with an older spec never ran a task: they are simply stopped (the policy
starts a fresh standby). A changed autoscaler config needs no roll: the controller re-reads it
every tick.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from autoscale.metrics.base import Workers

ROLLABLE = ("idle", "busy")


def outdated(workers: Workers, spec_hash: str, states: tuple[str, ...] = ROLLABLE) -> list[str]:
    """Workers in ``states`` that registered a hash other than ``spec_hash`` (idle ones first).

    A worker without a hash (started by an older scalejob, or not registered yet) is left alone.
    """
    views = [v for v in workers.views if v.state in states and workers.hashes.get(v.name, "") not in ("", spec_hash)]
    return [v.name for v in sorted(views, key=lambda v: (v.state != "idle", v.name))]


@dataclass
class Rollout:
    """Per-service progress of rolling updates (the controller keeps one)."""

    wait_limit: float = 60.0  # seconds to wait for a replacement before draining anyway
    rolling: dict[str, tuple[str, float]] = field(default_factory=dict)  # service -> (worker, since)
    drained: dict[str, set[str]] = field(default_factory=dict)  # service -> rolled workers not gone yet

    def hidden(self, service: str, spec_hash: str, workers: Workers) -> str | None:
        """The outdated worker to hide from the policy this tick (None: nothing to roll now)."""
        if not spec_hash:
            return None
        names = {v.name for v in workers.views}
        self.drained[service] = self.drained.get(service, set()) & names
        if self.drained[service]:
            return None  # one at a time: the previous one is still finishing its task
        current = self.rolling.get(service)
        if current is not None and current[0] in outdated(workers, spec_hash):
            return current[0]
        candidates = outdated(workers, spec_hash)
        if not candidates:
            self.rolling.pop(service, None)
            return None
        self.rolling[service] = (candidates[0], time.monotonic())
        return candidates[0]

    def ready_to_drain(self, service: str, workers: Workers, desired: int) -> bool:
        """True when the other consuming workers cover ``desired`` (or the wait ran out)."""
        name, since = self.rolling[service]
        others = sum(1 for v in workers.views if v.name != name and v.state in ROLLABLE and v.healthy)
        return others >= desired or time.monotonic() - since > self.wait_limit

    def drained_now(self, service: str) -> str:
        """Record that the hidden worker was drained; returns its name."""
        name, _ = self.rolling.pop(service)
        self.drained.setdefault(service, set()).add(name)
        return name
