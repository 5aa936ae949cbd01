"""What the controller reads each tick, as interfaces: queue depth, worker states, GPU state.

Why Protocols and not base classes: the sources already exist apart from the controller and
share no code (a broker connection, a Redis registry read or Celery's ``inspect``, NVML), and a
test or benchmark can hand in any object of the right shape. The controller is typed with these,
so mypy checks every source it is given against what it calls.

Implementations: :class:`QueueDepth` by :class:`autoscale.metrics.broker.BrokerDepth` (a Redis or
AMQP broker, scalejob services and plain Celery queues alike); :class:`WorkerObserver` by
:class:`autoscale.metrics.registry.RegistryObserver` (scalejob's worker registry) and
:class:`~autoscale.metrics.registry.InspectObserver` (plain Celery, ``inspect active``);
:class:`GpuSource` by :class:`app.core.gpu.GpuMonitor` (NVML, or ``tests/fake_nvml.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from app.core.gpu import GpuSnapshot, WorkerLike
from autoscale.backends.base import WorkerHandle
from autoscale.policy import WorkerView

__all__ = ["GpuSource", "QueueDepth", "WorkerObserver"]


@dataclass(frozen=True)
class Workers:
    """One service's workers at one tick."""

    running: int  # running tasks
    views: tuple[WorkerView, ...]
    busy: frozenset[str] = frozenset()  # names of workers that hold at least one task
    seen: frozenset[str] = frozenset()  # names the registry / inspect reported (the rest: backend only)
    infos: tuple = ()  # registry entries (WorkerInfo), for GPU mapping; empty for plain Celery
    complete: bool = True  # False when a worker did not answer: its tasks are missing from ``running``
    hashes: Mapping[str, str] = field(default_factory=dict)  # name -> spec hash it started with (autoscale/rolling.py)

    def by_name(self) -> dict[str, WorkerView]:
        return {v.name: v for v in self.views}

    def count(self, *states: str) -> int:
        return sum(1 for v in self.views if v.state in states)



class QueueDepth(Protocol):
    """Tasks waiting on a queue, not yet taken by a worker."""

    def waiting(self, queue: str) -> int:
        """How many messages wait on ``queue``: O(1) broker calls, never O(tasks); 0 for an unknown queue."""
        ...


class WorkerObserver(Protocol):
    """The workers of one service as the policy sees them, joined with the backend's handles."""

    def observe(self, service: str, handles: list[WorkerHandle], pending_activation: set[str] = ...) -> Workers:
        """One service's workers now: registered ones plus the backend's not yet visible processes.

        ``pending_activation``: standby workers activated before they were ready (they count as
        ``starting``)."""
        ...

    def mark(self, name: str, state: str) -> None:
        """Record ``state`` for worker ``name`` at once (``draining``, ``idle``), so the next tick
        does not pick it again before the worker itself reports it; a no-op where there is no registry."""
        ...

    def is_busy(self, name: str) -> bool:
        """Whether worker ``name`` holds a task (unknown: True, so nothing is force-killed blindly)."""
        ...


class GpuSource(Protocol):
    """The GPU state of this host, sampled once per tick."""

    @property
    def enabled(self) -> bool:
        """False when there is no driver: GPU features are off."""
        ...

    def snapshot(self, workers: Iterable[WorkerLike]) -> GpuSnapshot | None:
        """Devices joined with ``workers`` (who is on which device); None when GPU features are off."""
        ...
