"""How many messages wait on the broker for a service's queue (not yet taken by a worker).

Redis: kombu keeps one list per priority step, named ``<queue>`` for priority 0 and
``<queue>\\x06\\x16<step>`` for the others (``kombu/transport/redis.py``: ``sep``,
``PRIORITY_STEPS = [0, 3, 6, 9]``, ``_q_for_pri``); messages a worker holds unacked live in the
``unacked`` hash, not in these lists, so the sum of the lists' lengths is exactly "waiting".
AMQP: a passive ``queue_declare`` returns the ready message count (unacked ones excluded).
The API (429 on ``max_waiting``) and the autoscaler both call :func:`waiting`.
"""

from __future__ import annotations

import functools
import json
import threading
from typing import cast

import redis
from kombu import Connection

from app.core import keys
from app.core.connections import endpoints, is_redis_url

KOMBU_SEP = "\x06\x16"
KOMBU_PRIORITY_STEPS = (0, 3, 6, 9)


def redis_queue_keys(queue: str) -> list[str]:
    """The Redis lists kombu uses for ``queue``, one per priority step."""
    return [queue if pri == 0 else f"{queue}{KOMBU_SEP}{pri}" for pri in KOMBU_PRIORITY_STEPS]


_amqp: dict[str, Connection] = {}
_amqp_lock = threading.Lock()


@functools.lru_cache(maxsize=8)
def _redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def _waiting_redis(client: redis.Redis, queue: str) -> int:
    with client.pipeline(transaction=False) as p:
        for k in redis_queue_keys(queue):
            p.llen(k)
        return sum(int(n) for n in p.execute())


def _waiting_amqp(conn: Connection, queue: str) -> int:
    channel = conn.default_channel
    try:
        _, count, _ = channel.queue_declare(queue=queue, passive=True)
    except Exception as exc:  # noqa: BLE001 - amqp raises NotFound (404) for a queue never declared
        if getattr(exc, "code", None) == 404 or "NOT_FOUND" in str(exc):
            conn.release()  # the channel is closed by the broker after a 404; start clean next time
            return 0
        raise
    return int(count)


def waiting_on(connection_or_url: str | redis.Redis | Connection, queue: str) -> int:
    """Messages ready on ``queue`` of the broker given as a URL, a Redis client or a kombu Connection."""
    if isinstance(connection_or_url, redis.Redis):
        return _waiting_redis(connection_or_url, queue)
    if isinstance(connection_or_url, Connection):
        if connection_or_url.transport_cls in ("redis", "rediss"):
            return _waiting_redis(_redis_client(connection_or_url.as_uri(include_password=True)), queue)
        return _waiting_amqp(connection_or_url, queue)
    url = str(connection_or_url)
    if is_redis_url(url):
        return _waiting_redis(_redis_client(url), queue)
    with _amqp_lock:  # one kept connection per URL (a put checks depth: no handshake per call)
        conn = _amqp.get(url)
        if conn is None:
            conn = _amqp[url] = Connection(url)
        try:
            return _waiting_amqp(conn, queue)
        except Exception:
            _amqp.pop(url, None)
            conn.release()
            raise


def waiting(service: str) -> int:
    """Messages waiting on the broker for ``scalejob.<service>``."""
    return waiting_on(endpoints().broker_url, keys.celery_queue(service))


def remove_waiting(queue: str, task_id: str, url: str | None = None) -> bool:
    """Take the message of ``task_id`` off ``queue`` when it still waits there (Redis brokers).

    Why: a cancelled request must leave the waiting count (and the autoscaler's load) at once,
    not when a worker finally pops and skips it. On AMQP a waiting message cannot be removed
    without consuming it, so there the worker skips it as before (returns False).
    """
    url = url or endpoints().broker_url
    if not is_redis_url(url):
        return False
    client = _redis_client(url)
    for key in redis_queue_keys(queue):
        for raw in client.lrange(key, 0, -1):
            try:
                if json.loads(raw).get("headers", {}).get("id") == task_id:
                    # redis-py types the value str; the bytes read go back as they are
                    return bool(client.lrem(key, 1, cast(str, raw)))
            except (ValueError, AttributeError):
                continue
    return False
