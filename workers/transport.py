"""kombu's Redis transport, for workers: a list entry that is not a kombu envelope is dropped, not fatal.

Why: anyone who can write to the broker's list (``LPUSH scalejob.<svc> garbage``) reached
``json.loads`` inside kombu's read loop, and the exception stopped the worker ("Unrecoverable
error: JSONDecodeError"). Broker contents are untrusted input (docs/security.md): the entry has
already been popped, so dropping it and logging is all that is left to do. Selected by
``workers.instance.run_worker`` through Celery's ``broker_transport`` for ``redis://`` brokers.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)
# JSON / UTF-8 errors are ValueErrors; a non-dict payload the rest
_MALFORMED = (ValueError, TypeError, KeyError, AttributeError)


class Channel(kombu_redis.Channel):
    def _brpop_read(self, **options: Any) -> bool:
        try:
            return bool(super()._brpop_read(**options))
        except _MALFORMED as exc:
            log.error("dropped a broker entry that is not a kombu message envelope: %r", exc)
            return True  # an entry was consumed; the loop goes on

    # ``timeout``: the base class's signature (kombu's redis channel takes none)
    def _get(self, queue: str, timeout: Any = None) -> Any:
        try:
            return super()._get(queue)
        except _MALFORMED as exc:
            log.error("dropped a broker entry of %s that is not a kombu message envelope: %r", queue, exc)
            raise kombu_redis.Empty() from None


class Transport(kombu_redis.Transport):
    Channel = Channel
