"""The one seam between the autoscaler and wherever workers run.

A backend only starts and stops worker instances; it never decides how many there should be
(that is :mod:`autoscale.policy`) and never reads the queue. Implementations: ``local.py``
(processes on this machine) and ``kubernetes.py`` (a Deployment per service).
"""

from __future__ import annotations

import abc
import builtins
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from app.queue.health import FailedStart
    from autoscale.leader import Leadership


@dataclass(frozen=True)
class WorkerHandle:
    """A worker instance as a backend knows it.

    ``name`` is the worker's registry name when known (the controller joins handles to registry
    entries on it); ``ref`` is the backend's own id (a pid, a pod name) and ``meta`` anything else
    the backend wants back on :meth:`WorkerBackend.drain` / :meth:`WorkerBackend.stop`.
    """

    name: str
    service: str
    ref: str = ""
    pid: int | None = None
    meta: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


class WorkerBackend(abc.ABC):
    """Start, list, drain and stop the worker instances of services.

    ``fence``: the autoscaler's :class:`~autoscale.leader.Leadership`; every spawn, drain and stop
    goes through it, so an autoscaler whose leader term is over cannot act (None: unfenced).

    ``on_exit``: set by the controller; a backend that can tell the moment a worker and everything
    it started have ended calls it with ``(name, service)``, so the worker's requests are requeued
    at once instead of when their leases expire. One that cannot (Kubernetes) never calls it.
    """

    fence: Leadership | None = None
    on_exit: Callable[[str, str], object] | None = None

    def check_fence(self, what: str) -> None:
        """Raise :class:`autoscale.leader.Fenced` when this autoscaler no longer leads in its term."""
        if self.fence is not None:
            self.fence.check(what)

    @abc.abstractmethod
    def list(self, service: str) -> list[WorkerHandle]:
        """The instances of ``service`` this backend runs now, including ones it adopted after a
        restart (so a restarted controller neither duplicates nor orphans workers)."""

    @abc.abstractmethod
    def spawn(self, service: str, env: dict[str, str]) -> WorkerHandle:
        """Start one more instance of ``service`` with extra environment ``env`` (for example
        ``CUDA_VISIBLE_DEVICES`` from GPU placement, or ``SCALEJOB_STANDBY=1``).

        Returns at once; the instance shows up in the worker registry as ``starting`` and then
        ``idle``. Raises :class:`BackendError` when the instance cannot be started."""

    @abc.abstractmethod
    def drain(self, handle: WorkerHandle) -> None:
        """First half of scale-in: the instance stops taking tasks (Celery ``cancel_consumer``)
        and its handle reports ``meta["draining"]``; its running task, if any, goes on. The
        controller calls :meth:`stop` once the registry shows it idle. Returns at once;
        idempotent."""

    @abc.abstractmethod
    def stop(self, handle: WorkerHandle) -> None:
        """Warm shutdown of an instance (Celery waits for a task still in its pool; force only
        after a timeout and only when it holds no task); its handle reports ``meta["stopping"]``.
        Used for drained instances that went idle, for ones that never consumed (standby,
        starting) and on controller exit. Idempotent."""

    def services(self) -> set[str]:
        """The services this backend runs instances of now, deployed or not.

        The controller scales the ones no longer deployed to zero, so an undeployed service's
        workers do not run on. Default: none known, for a backend that finds instances by service
        name only (Kubernetes: the Deployment of a service); their instances are then not scaled in."""
        return set()

    def started(self, handle: WorkerHandle) -> None:  # noqa: B027 - optional hook, a no-op by default
        """The instance showed up in the registry: it no longer counts as a spawn that may fail to start."""

    def failed_starts(self, service: str) -> builtins.list[FailedStart]:  # builtins: the method list() shadows it
        """Take the instances of ``service`` that ended before they became ready since the last
        call (:class:`app.queue.health.FailedStart`); the controller backs off on them. Default: none seen."""
        return []

    def abandon(self, handle: WorkerHandle) -> None:
        """A spawn that never registered within its start deadline (``meta["start_by"]``): end it.

        It cannot hold a task (it never consumed), so a backend may kill it at once."""
        self.stop(handle)

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release the backend's own resources (clients, threads); workers keep running."""


class BackendError(RuntimeError):
    """A backend could not act; ``str()`` is one line naming the service and the cause."""
