"""Where the broker and the state Redis are, and clients for them.

Resolution order: explicit ``broker_url`` / ``redis_url`` settings; a Redis broker doubles as
the state store; with neither set, the embedded Redis of the data dir. An ``amqp://`` broker
still needs a Redis for state: ``redis_url`` or the embedded one.

Only a process that called :func:`allow_embedded_start` (the CLI's ``up``, ``api``, ``worker``,
``autoscale`` and ``demo``) starts the embedded Redis, and it then holds it (``embedded.hold``:
the last such process to exit stops it). Everything else (importing the Celery app, ``celery
inspect``, ``scalejob status``) only finds a running one, or raises :class:`NoStack` at once.
"""

from __future__ import annotations

import functools
import re
import threading
from dataclasses import dataclass

import redis

from app.core.embedded import EmbeddedRedis, ensure_embedded, find_embedded, hold
from app.core.settings import Settings, get_settings

_start_allowed = threading.Event()  # set once by allow_embedded_start(); never cleared


class NoStack(RuntimeError):
    """No state Redis configured and no running embedded Redis in the data dir; ``str()`` says where we looked."""


def allow_embedded_start() -> None:
    """This process may start the embedded Redis of its data dir (and then owns a share of it)."""
    _start_allowed.set()


@dataclass(frozen=True)
class Endpoints:
    """The resolved URLs of one process."""

    broker_url: str
    redis_url: str

    @property
    def broker_is_redis(self) -> bool:
        return is_redis_url(self.broker_url)


def redacted(url: str) -> str:
    """``url`` with its password replaced by ``***``: for banners and logs."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def is_redis_url(url: str) -> bool:
    return url.startswith(("redis://", "rediss://", "unix://", "redis+socket://"))


def resolve(settings: Settings) -> Endpoints:
    """Turn settings into concrete URLs, starting the embedded Redis when needed."""
    broker, state = settings.broker_url, settings.redis_url
    if not state and broker and is_redis_url(broker):
        state = broker
    if not state:
        state = _embedded_url(settings)
    if not broker:
        broker = state
    return Endpoints(broker_url=broker, redis_url=state)


def _embedded_url(settings: Settings) -> str:
    server: EmbeddedRedis | None
    if _start_allowed.is_set():
        server = ensure_embedded(settings.data_dir, settings.embedded_appendfsync)
        hold(server, settings.embedded_appendfsync)
        return server.url
    server = find_embedded(settings.data_dir)
    if server is None:
        where = (settings.data_dir / "redis").resolve()
        raise NoStack(f"no scalejob stack: no Redis running in {where} and SCALEJOB_REDIS_URL unset; "
                      "run `scalejob up` here, or set SCALEJOB_DATA_DIR / SCALEJOB_REDIS_URL to a running stack's")
    return server.url


@functools.lru_cache(maxsize=1)
def endpoints() -> Endpoints:
    """This process's endpoints (resolved once)."""
    return resolve(get_settings())


# Above the API's thread limit (200, app/api/main.py): a thread never finds the pool empty (redis-py's
# default of 100 made 150 concurrent long-polls answer 503 while they resolved their token).
STATE_CONNECTIONS = 400


@functools.lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_keepalive=True, health_check_interval=10, retry_on_timeout=True,
                                max_connections=STATE_CONNECTIONS)


def state_redis() -> redis.Redis:
    """A shared client of the state Redis (thread-safe connection pool)."""
    return _client(endpoints().redis_url)


@functools.lru_cache(maxsize=4)
def _waiting_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_keepalive=True, health_check_interval=10,
                                max_connections=WAITING_CONNECTIONS)


WAITING_CONNECTIONS = 1000  # above the API's thread limit (200): a blocked waiter always has its thread's connection


def waiting_redis() -> redis.Redis:
    """A client of the state Redis for blocking reads (long-polls, watches, SSE) on a pool of its own.

    Why: each blocked ``XREAD`` holds a connection for up to a minute; on the shared pool (100)
    one service's long-polls took every connection and the puts of all services answered 503.
    """
    return _waiting_client(endpoints().redis_url)
