"""Re-enqueue the requests of dead workers, fast and whatever the broker.

Every running request has a lease (``req:<id>:lease``) that its worker's heartbeat renews. When
a worker dies its leases expire within ``heartbeat_ttl`` seconds; the recovery leader (one at a
time, elected with a Redis lock) then puts those requests back on their service queue from the
message stored in the record. That is the only way to learn of the death of a worker on another
host: a slow worker and a dead one look alike from afar.

A worker of the local autoscaler backend needs no TTL: the backend sees its process and every
command it started exit (``autoscale/backends/exits.py``) and :func:`requeue_dead` releases the
leases it still holds at once. Only leases held by that worker name are released, compare-and-
delete in one script, so a request that already started again elsewhere is never touched, and
``attempts`` still fences any write of the dead copy. The broker's own redelivery (kombu's visibility timeout, RabbitMQ
redelivery) can also hand the old message out again: the lease makes that copy harmless, since a
request runs only for the delivery that takes its lease.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis

from app.core import keys
from app.core.settings import get_settings
from app.queue import messages, records
from app.queue import workers as registry
from app.queue.records import RequestState

log = logging.getLogger(__name__)

Send = Callable[[messages.TaskMessage], None]  # re-enqueues one message (celery_sender: app/queue/messages.py)


def try_lead(r: redis.Redis, me: str) -> bool:
    """Take or keep the recovery leadership for ~3 heartbeats."""
    ttl = int(get_settings().heartbeat_ttl * 1000)
    if r.set(keys.recovery_lock(), me, nx=True, px=ttl):
        return True
    if r.get(keys.recovery_lock()) == me.encode():
        r.pexpire(keys.recovery_lock(), ttl)
        return True
    return False


def recover_once(r: redis.Redis, send: Send) -> list[str]:
    """Re-enqueue every running request whose lease expired; returns their ids."""
    recovered = []
    for request_id in records.running_requests(r):
        if records.lease_alive(r, request_id):
            continue
        if not records.requeue_if_orphaned(r, request_id):
            continue
        msg = _stored(r, request_id)
        if msg is None:
            log.error("request %s lost its worker but has no stored message; marking failed", request_id)
            continue
        send(msg)
        recovered.append(request_id)
        log.warning("request %s: its worker died; re-enqueued on %s", request_id, msg.queue)
    return recovered


def requeue_dead(r: redis.Redis, worker: str, service: str, send: Send) -> list[str]:
    """Re-enqueue now what ``worker`` held: the caller saw it (and every process it started) exit.

    Its registry entry goes too: a dead worker must not count as capacity, nor its request as
    running, for the seconds its entry would take to expire.
    """
    recovered = []
    for request_id, holder in records.running_requests(r).items():
        if holder != worker or not records.requeue_of_dead(r, request_id, worker):
            continue
        msg = _stored(r, request_id)
        if msg is None:
            continue
        send(msg)
        recovered.append(request_id)
        log.warning("request %s: its worker %s exited; re-enqueued on %s at once", request_id, worker, msg.queue)
    registry.unregister(r, worker, service)
    return recovered


def _stored(r: redis.Redis, request_id: str) -> messages.TaskMessage | None:
    """The message a put or a first delivery stored in the record; without one the request fails."""
    stored = records.message(r, request_id)
    if stored is None:
        records.finish(r, request_id, RequestState.FAILED, error="worker died and the task message was not recorded")
        return None
    return messages.TaskMessage.from_stored(stored)


def celery_sender() -> Send:
    """Re-send through the Celery app: the same message a put sent (a new Celery task id)."""
    return messages.send
