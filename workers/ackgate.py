"""Ack-on-start for RabbitMQ, without giving up idle-first.

Why: RabbitMQ (3.8.15+) closes a channel whose delivery stays unacked longer than the server's
``consumer_timeout`` (30 min by default, global only before 3.11.15), so an acks-late training
job of a few hours kills its worker and is redelivered forever. On ``amqp://`` brokers a
scalejob task therefore acks its message as soon as it holds the request's lease: from then on
the lease (renewed by the worker heartbeat) owns the job, and the recovery loop re-enqueues it
from the request record if the worker dies (see ``app/queue/recovery.py``).

Acking early frees the delivery's prefetch slot, and RabbitMQ would at once push the next
message to the busy worker, where it would wait behind the running task while other workers
sit idle. The gate closes that hole: while tasks run, the channel's prefetch is lowered to the
worker's free slots, and at zero free slots the task consumer is cancelled (``basic.cancel``)
*before* the ack goes out; when a slot frees it consumes again. All channel operations run on
the consumer's own thread (``Consumer.call_soon``), as Celery does for its own acks.

On Redis nothing changes: kombu's ``worker_disable_prefetch`` already fetches only for a free
slot, and the DESIGN.md settings (acks late) stay as they are; the lease makes the broker's
visibility-timeout redelivery harmless instead.

Each worker has one :class:`AckGate`, on its runtime (``workers/steps.py``): the consumer bootstep
``GateStep`` binds it to the consumer at every (re)connect, and ``GatedRequest`` hands it each
delivery so the task can ack it from its pool thread.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

from celery.worker.request import Request

log = logging.getLogger(__name__)

DELIVERY_KEY = "scalejob_delivery"


class AckGate:
    """One worker's gate: its consumer, how many early-acked tasks run, whether it cancelled consuming."""

    def __init__(self) -> None:
        self.consumer: Any | None = None
        self.running = 0
        self.paused = False
        self._lock = threading.Lock()
        self._requests: weakref.WeakValueDictionary[str, Request] = weakref.WeakValueDictionary()

    def remember(self, token: str, request: Request) -> None:
        """A delivery's request, so the task (which only sees ``token``) can ack it early."""
        self._requests[token] = request

    def bind(self, c: Any) -> None:
        """The consumer (re)started: remember it and re-apply the gate (a reconnect consumes anew)."""
        with self._lock:
            self.consumer = c
            self.paused = False
        if early_ack_enabled(c):
            self._apply(c)

    def unbind(self) -> None:
        """The consumer stopped (its channel is gone): nothing is cancelled on the next one."""
        with self._lock:
            self.paused = False

    def _apply(self, c: Any) -> None:
        """On the consumer thread: prefetch = free slots, and no consumer at all when there are none."""
        tc = c.task_consumer
        if tc is None or c.qos is None:
            return
        with self._lock:
            free = _slots(c) - self.running
            paused = self.paused
        if free <= 0:
            if not paused:
                tc.cancel()  # basic.cancel: RabbitMQ delivers nothing more to this worker
                with self._lock:
                    self.paused = True
                log.debug("ack gate: no free slot, consumer cancelled")
            return
        if c.qos.prev != free:
            c.qos.value = free
            c.qos.set(free)  # basic.qos: at most `free` unacked (= waiting, not started) deliveries
            if not c.qos_global and not paused:
                tc.cancel()  # per-consumer QoS (quorum queues) binds at basic.consume: consume again
                paused = True
        if paused:
            tc.consume()  # only the queues still selected: a drained worker (cancel_consumer) stays off
            with self._lock:
                self.paused = False
            log.debug("ack gate: %d free slot(s), consuming", free)

    def lease_taken(self, task: Any) -> bool:
        """Called by a task right after it took its request's lease: ack the delivery now (AMQP).

        Returns True when this delivery was acked early (the caller must call :meth:`slot_freed`).
        """
        c = self.consumer
        if c is None or not early_ack_enabled(c):
            return False
        req = self._requests.pop(task.request.get(DELIVERY_KEY) or "", None)
        if req is None:
            return False
        with self._lock:
            self.running += 1

        def gate_then_ack() -> None:
            try:
                self._apply(c)
            finally:
                req.acknowledge()  # after the cancel: the freed prefetch slot cannot be refilled

        c.call_soon(gate_then_ack)
        return True

    def slot_freed(self) -> None:
        """A task that was acked early has ended: open the gate for the next message."""
        c = self.consumer
        with self._lock:
            self.running = max(0, self.running - 1)
        if c is not None:
            c.call_soon(self._apply, c)

    def drop(self, task: Any) -> None:
        """Forget the request of a delivery that will not run (duplicate/finished): Celery acks it."""
        self._requests.pop(task.request.get(DELIVERY_KEY) or "", None)


def early_ack_enabled(c: Any | None) -> bool:
    """Ack on start only where the broker needs it: AMQP (RabbitMQ)."""
    return c is not None and c.connection is not None and c.connection.transport.driver_type == "amqp"


def _slots(c: Any) -> int:
    limit = getattr(c.controller, "max_concurrency", None) or c.pool.num_processes
    return max(1, int(limit or 1))
