"""Waiting tasks per queue, read from the broker: O(1) calls per service per tick, never O(tasks).

The counting itself lives in :mod:`app.queue.depth` (kombu's Redis priority sub-lists, or a passive AMQP
``queue_declare``), shared with the API's ``max_waiting`` check. This class only keeps one
connection open across ticks, so a tick costs one pipelined round trip per service on Redis.
"""

from __future__ import annotations

import redis
from kombu import Connection

from app.core.connections import is_redis_url
from app.queue.depth import waiting_on


class BrokerDepth:
    """Messages ready (not yet taken by a worker) on queues of one broker."""

    def __init__(self, broker_url: str) -> None:
        self.broker_url = broker_url
        self._conn: redis.Redis | Connection = (
            redis.Redis.from_url(broker_url) if is_redis_url(broker_url) else Connection(broker_url)
        )

    def waiting(self, queue: str) -> int:
        """How many messages wait on ``queue``; 0 for a queue the broker has never seen."""
        try:
            return waiting_on(self._conn, queue)
        except Exception:
            if isinstance(self._conn, Connection):  # a dropped AMQP connection: reconnect once
                self._conn.release()
                self._conn = Connection(self.broker_url)
                return waiting_on(self._conn, queue)
            raise

    def close(self) -> None:
        if isinstance(self._conn, Connection):
            self._conn.release()
        else:
            self._conn.close()
