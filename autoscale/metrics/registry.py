"""Running tasks and worker states, as the policy sees them (:class:`WorkerView`).

Two sources, one shape:

- :class:`RegistryObserver`: scalejob workers keep a registry entry (``app/queue/workers.py``)
  with their state and running request ids; one round trip per tick (``workers.snapshot``).
- :class:`InspectObserver`: plain Celery workers have no registry; Celery's own
  ``inspect active`` (addressed to the workers the backend started) says who runs what.

Both merge in the backend's handles: a process that was spawned but is not registered yet is
``starting`` (or ``standby`` when spawned as warm standby), one being stopped is ``draining``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import redis

from app.queue import workers as registry
from autoscale.backends.base import WorkerHandle
from autoscale.metrics.base import Workers
from autoscale.policy import WorkerView


@dataclass(frozen=True)
class GpuHolder:
    """A worker as GPU mapping sees it: spawned or queued, not yet registered, it may hold devices already."""

    name: str
    pid: int
    gpus: str
    host: str = ""


def _unregistered(h: WorkerHandle, pending: set[str]) -> WorkerView:
    """The view of a process the backend runs but the registry/inspect does not show."""
    if h.meta.get("draining") or h.meta.get("stopping"):
        return WorkerView(h.name, "draining")
    if h.meta.get("standby") and h.name not in pending:
        return WorkerView(h.name, "standby")
    return WorkerView(h.name, "starting")


def merge(
    known: Iterable[WorkerView], handles: Iterable[WorkerHandle], pending_activation: set[str]
) -> tuple[WorkerView, ...]:
    """Registry/inspect views plus the backend's not-yet-visible processes, sorted by name.

    A worker being stopped by the backend is ``draining`` whatever it reports; a worker whose
    activation is pending (spawned standby, activated before it was ready) counts as ``starting``.
    """
    views = {v.name: v for v in known}
    for h in handles:
        v = views.get(h.name)
        if v is None:
            views[h.name] = _unregistered(h, pending_activation)
        elif (h.meta.get("draining") or h.meta.get("stopping")) and v.state != "draining":
            views[h.name] = WorkerView(v.name, "draining", v.busy_since, v.gpu_util, v.healthy)
        elif h.name in pending_activation and v.state == "standby":
            views[h.name] = WorkerView(v.name, "starting", v.busy_since, v.gpu_util, v.healthy)
    return tuple(views[n] for n in sorted(views))


@dataclass
class RegistryObserver:
    """Worker states of scalejob services from the worker registry."""

    r: redis.Redis

    def snapshot(self, service: str) -> tuple[list[registry.WorkerInfo], dict[str, float]]:
        """Live registry entries of ``service`` and, per busy worker, when its task started (one round trip)."""
        return registry.snapshot(self.r, service)

    def observe(
        self, service: str, handles: list[WorkerHandle], pending_activation: set[str] = frozenset()  # type: ignore[assignment]
    ) -> Workers:
        infos, started = self.snapshot(service)
        first_task = {w.name: w.running[0] for w in infos if w.running}
        views = [WorkerView(w.name, w.state, started.get(w.name)) for w in infos]
        running = sum(len(w.running) for w in infos)
        busy = frozenset(first_task)
        started_with = {h.name: h.meta.get("gpus", "") for h in handles}
        gpu_holders = tuple(GpuHolder(w.name, w.pid, w.gpus or started_with.get(w.name, ""), w.host) for w in infos)
        gpu_holders += tuple(
            GpuHolder(h.name, h.pid or 0, started_with[h.name])
            for h in handles
            if h.name not in {w.name for w in infos}
        )
        hashes = {w.name: w.spec_hash for w in infos}
        return Workers(
            running,
            merge(views, handles, set(pending_activation)),
            busy,
            frozenset(w.name for w in infos),
            gpu_holders,
            hashes=hashes,
        )

    def mark(self, name: str, state: str) -> None:
        registry.set_state_if_present(self.r, name, state)

    def is_busy(self, name: str) -> bool:
        w = registry.get_worker(self.r, name)
        return bool(w and w.running)


@dataclass
class InspectObserver:
    """Worker states of a plain Celery project from ``inspect active`` (no registry needed).

    Only the workers the backend started are asked (``destination``), and the call returns as soon
    as all of them replied, so a tick costs one round trip unless a worker is still starting.
    """

    app: object  # a celery.Celery
    timeout: float = 0.3
    last: dict[str, int] = field(default_factory=dict)  # name -> running tasks at the last tick

    def observe(
        self, service: str, handles: list[WorkerHandle], pending_activation: set[str] = frozenset()  # type: ignore[assignment]
    ) -> Workers:
        names = [h.name for h in handles if not h.meta.get("stopping")]
        replies = self._active(names)
        self.last = {n: len(tasks) for n, tasks in replies.items()}
        views = [WorkerView(n, "busy" if tasks else "idle") for n, tasks in replies.items()]
        running = sum(len(tasks) for tasks in replies.values())
        busy = frozenset(n for n, tasks in replies.items() if tasks)
        complete = set(names) <= set(replies)
        return Workers(
            running, merge(views, handles, set(pending_activation)), busy, frozenset(replies), complete=complete
        )

    def _active(self, names: list[str]) -> dict[str, list]:
        if not names:
            return {}
        control = self.app.control  # type: ignore[attr-defined]
        inspect = control.inspect(destination=names, timeout=self.timeout, limit=len(names))
        return {n: list(t or []) for n, t in (inspect.active() or {}).items() if n in names}

    def mark(self, name: str, state: str) -> None:
        """Plain Celery workers have no registry; the backend handle carries ``draining``."""

    def is_busy(self, name: str) -> bool:
        return self.last.get(name, 1) > 0  # unknown: assume busy, never force-kill blindly
