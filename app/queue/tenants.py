"""Fair sharing of one service between tenants: one Celery queue per tenant, consumed in rotation.

Why a queue per tenant: a single FIFO queue makes tenant B's one task wait behind tenant A's 500.
With one queue per tenant, every worker of the service consumes all of them, and kombu's Redis
transport polls them round robin: ``Channel._brpop_start`` issues one ``BRPOP`` over the queues
in the order of ``_queue_cycle`` (a ``round_robin_cycle``), and ``_brpop_read`` rotates the
queue it just got a message from to the back (``self._queue_cycle.rotate(dest)``). So after a
task of A, the next free slot looks at B's queue before A's again: B's task starts at the next
completion. (RabbitMQ delivers to the consumers of a channel per queue with prefetch 1, which
is round robin in practice but not guaranteed by the protocol.)

Queues: the default tenant keeps ``scalejob.<service>`` exactly (the contract); tenant ``t``
gets ``scalejob.<service>.t.<t>``. The tenants of a service are a Redis set (owner: this
module, ``keys.service_tenants``). A worker consumes every known tenant queue at start; a
tenant seen for the first time is announced with a Celery ``add_consumer`` broadcast to the
service's workers, and each worker also re-reads the set every few seconds
(:class:`TenantWatcher`), which closes the race with a worker that was starting meanwhile.
"""

from __future__ import annotations

import logging
import re
import threading

import redis

from app.core import keys, replies
from app.core.celery_app import celery_app
from app.core.connections import endpoints
from app.core.settings import get_settings
from app.core.specs import ServiceSpec
from app.queue.depth import waiting_on
from app.queue.workers import list_workers, state_of

log = logging.getLogger(__name__)

DEFAULT_TENANT = "default"
TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
TENANT_QUEUE_MARK = ".t."


class TenantError(ValueError):
    """A tenant name or a tenant's quota refuses a put; ``status`` is the HTTP status."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def check_name(tenant: str) -> str:
    if not TENANT_RE.match(tenant):
        raise TenantError(
            400, f"tenant {tenant!r}: expected 1-64 characters of A-Z a-z 0-9 _ . - starting with a letter or digit"
        )
    return tenant


def queue_name(service: str, tenant: str = DEFAULT_TENANT) -> str:
    """The Celery queue of ``tenant``'s tasks for ``service``."""
    base = keys.celery_queue(service)
    return base if tenant == DEFAULT_TENANT else f"{base}{TENANT_QUEUE_MARK}{tenant}"


def known_tenants(r: redis.Redis, service: str) -> list[str]:
    """Tenants (other than the default) that ever put work on ``service``, sorted."""
    return sorted(x.decode() for x in replies.members(r.smembers(keys.service_tenants(service))))


def service_queues(r: redis.Redis, service: str) -> list[str]:
    """Every Celery queue of ``service``: the default one first, then one per known tenant.

    The autoscaler sums waiting tasks over these; workers consume all of them.
    """
    return [queue_name(service)] + [queue_name(service, t) for t in known_tenants(r, service)]


def waiting_by_queue(r: redis.Redis, service: str) -> dict[str, int]:
    """Messages waiting on the broker per queue of ``service`` (not yet taken by a worker)."""
    url = endpoints().broker_url
    return {q: waiting_on(url, q) for q in service_queues(r, service)}


def waiting(r: redis.Redis, service: str) -> int:
    """Messages waiting for ``service`` over all its tenant queues."""
    return sum(waiting_by_queue(r, service).values())


def announce(r: redis.Redis, service: str, queue: str) -> None:
    """Tell the live workers of ``service`` to consume ``queue`` too (a Celery control broadcast)."""
    names = [w.name for w in list_workers(r, service) if w.state not in ("draining", "standby")]
    if names:
        celery_app.control.add_consumer(queue, destination=names, reply=False)


def register(r: redis.Redis, service: str, tenant: str) -> str:
    """Make sure ``tenant`` has its queue on ``service`` and the workers consume it; returns it.

    Called by the first put of a tenant, and ahead of time by ``scalejob token create --tenant``
    (so even a tenant's first task finds its queue already consumed).
    """
    if tenant == DEFAULT_TENANT:
        return queue_name(service)
    queue = queue_name(service, check_name(tenant))
    if r.sadd(keys.service_tenants(service), tenant):
        announce(r, service, queue)
    return queue


def queue_for(r: redis.Redis, spec: ServiceSpec, tenant: str) -> str:
    """The queue a put of ``tenant`` goes to; registers and announces a tenant seen first.

    Raises :class:`TenantError` (429) when the tenant is at ``metadata.tenant_max_waiting``.
    """
    queue = register(r, spec.name, tenant)
    limit = spec.metadata.tenant_max_waiting
    if limit is not None and waiting_on(endpoints().broker_url, queue) >= limit:
        detail = f"tenant {tenant} has {limit} tasks waiting on service {spec.name} (metadata.tenant_max_waiting)"
        raise TenantError(429, detail)
    return queue


def forget(r: redis.Redis, service: str) -> None:
    """Drop the tenant set of a deleted service (its queues must be empty or kept on purpose)."""
    r.delete(keys.service_tenants(service))


class TenantWatcher(threading.Thread):
    """Inside a worker: keep its tenant-queue consumers in line with the service and its state.

    While the worker is ``idle``/``busy`` it consumes every tenant queue of its service (new
    tenants are picked up within a poll even if the broadcast was missed). When it becomes
    ``draining`` (a scale-in, which cancels the default queue) it stops consuming its tenant
    queues too, so a drain is not held up by tenant work; a ``standby`` worker consumes none
    until it is activated. Requests go through Celery's control channel to its own worker:
    the consumer is not thread-safe, and control messages run on the consumer's thread.
    The default queue is never touched here; the autoscaler owns it.
    """

    ACTIVE = ("idle", "busy")

    def __init__(
        self, r: redis.Redis, service: str, worker: str, consumed: set[str], stopping: threading.Event
    ) -> None:
        super().__init__(name="scalejob-tenants", daemon=True)
        self.r, self.service, self.worker, self.stopping = r, service, worker, stopping
        self.consumed = {q for q in consumed if TENANT_QUEUE_MARK in q}
        self._stop_event = threading.Event()

    def check_once(self) -> tuple[list[str], list[str]]:
        """``(added, cancelled)`` tenant queues of this pass."""
        state = state_of(self.r, self.worker)
        if state is None:  # not registered yet (or expired): change nothing
            return [], []
        control = celery_app.control
        if self.stopping.is_set() or state not in self.ACTIVE:
            gone = sorted(self.consumed) if state in ("draining", "standby") and not self.stopping.is_set() else []
            for q in gone:
                control.cancel_consumer(q, destination=[self.worker], reply=False)
            self.consumed -= set(gone)
            return [], gone
        wanted = [q for q in service_queues(self.r, self.service)[1:] if q not in self.consumed]
        for q in wanted:
            control.add_consumer(q, destination=[self.worker], reply=False)
            self.consumed.add(q)
        return wanted, []

    def run(self) -> None:
        interval = get_settings().heartbeat_interval
        while not self._stop_event.wait(interval):
            try:
                self.check_once()
            except Exception:  # noqa: BLE001 - a Redis blip must not end fair sharing for this worker
                log.exception("tenant watcher")

    def stop(self) -> None:
        self._stop_event.set()
