"""The output queue ("sink") of each service: a Redis Stream whose entry IDs are ``0-<index>``.

Why explicit IDs: the EAS protocol addresses messages by a dense integer index. Taking the index
from a counter and writing it as the stream ID's sequence part (in one Lua script, so order and
index always agree) makes "read from index N" a plain ``XRANGE 0-N +`` and keeps consumer groups
working unchanged. Each request also gets a small per-request stream of the same events so that
``/api/requests/{id}/events`` can follow one request without scanning the service's sink.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from app import keys
from app.settings import get_settings

_APPEND = """
local i = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '0-' .. i, 'data', ARGV[2], 'tags', ARGV[3])
return i
"""

EVENT_TYPES = ("result", "log", "progress", "error")


@dataclass(frozen=True)
class Message:
    """One output-queue entry: EAS ``DataFrameProto`` (index, tags, data)."""

    index: int
    data: bytes
    tags: dict[str, str] = field(default_factory=dict)


def _script(r: redis.Redis) -> Any:
    return r.register_script(_APPEND)


def append(r: redis.Redis, service: str, data: bytes, tags: dict[str, str], maxlen: int | None = None) -> int:
    """Add one message to a service's output queue; returns its index."""
    cap = maxlen or get_settings().sink_maxlen
    return int(_script(r)(keys=[keys.sink(service), keys.sink_seq(service)], args=[cap, data, json.dumps(tags)]))


def parse_entry(entry_id: bytes | str, fields: dict[bytes, bytes]) -> Message:
    eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return Message(
        index=int(eid.split("-", 1)[1]),
        data=fields.get(b"data", b""),
        tags=json.loads(fields.get(b"tags", b"{}")),
    )


def read(r: redis.Redis, service: str, start_index: int = 0, count: int = 100) -> list[Message]:
    """Messages with index >= start_index, oldest first."""
    entries = r.xrange(keys.sink(service), min=f"0-{max(start_index, 0)}", max="+", count=count)
    return [parse_entry(eid, f) for eid, f in entries]


def emit(
    r: redis.Redis,
    service: str,
    request_id: str,
    kind: str,
    data: bytes,
    extra_tags: dict[str, str] | None = None,
    to_sink: bool = True,
) -> int | None:
    """Publish one event of a request: to its per-request stream always, to the sink if asked.

    Returns the sink index when written there.
    """
    tags = {"requestId": request_id, "type": kind, "ts": f"{time.time():.6f}", **(extra_tags or {})}
    ttl = get_settings().record_ttl
    with r.pipeline(transaction=False) as p:
        p.xadd(keys.request_events(request_id), {"data": data, "tags": json.dumps(tags)}, maxlen=10_000, approximate=True)
        p.expire(keys.request_events(request_id), ttl)
        p.execute()
    if to_sink:
        return append(r, service, data, tags)
    return None


def request_events(r: redis.Redis, request_id: str, after: str = "0-0", count: int = 500) -> list[tuple[str, Message]]:
    """Events of one request after stream id ``after``: (stream id, message) pairs."""
    out = []
    for eid, f in r.xrange(keys.request_events(request_id), min=f"({after}" if after != "0-0" else "-", count=count):
        msg = Message(index=0, data=f.get(b"data", b""), tags=json.loads(f.get(b"tags", b"{}")))
        out.append((eid.decode(), msg))
    return out
