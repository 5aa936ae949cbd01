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

from app.core import keys, replies
from app.core.settings import get_settings

# One request event, as a Lua function other scripts embed (workers/lifecycle.py finishes a task
# and emits its terminal event in one script). k: per-request stream, sink, sink counter;
# a: data, tags JSON, record TTL, to sink ('1'/'0'), sink cap. Returns the sink index or false.
EMIT_FN = """
local function emit(k, a)
  redis.call('XADD', k[1], 'MAXLEN', '~', 10000, '*', 'data', a[1], 'tags', a[2])
  redis.call('EXPIRE', k[1], a[3])
  if a[4] ~= '1' then return false end
  local i = redis.call('INCR', k[3])
  redis.call('XADD', k[2], 'MAXLEN', '~', a[5], '0-' .. i, 'data', a[1], 'tags', a[2])
  return i
end
"""
EMIT_LUA = EMIT_FN + "return emit(KEYS, ARGV)"
EMIT = replies.script(EMIT_LUA.encode())  # EVALSHA, loaded on first NOSCRIPT; ``client=`` picks the connection


@dataclass(frozen=True)
class Message:
    """One output-queue entry: EAS ``DataFrameProto`` (index, tags, data)."""

    index: int
    data: bytes
    tags: dict[str, str] = field(default_factory=dict)


def parse_entry(entry_id: bytes | str, fields: dict[bytes, bytes]) -> Message:
    eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return Message(
        index=int(eid.split("-", 1)[1]),
        data=fields.get(b"data", b""),
        tags=json.loads(fields.get(b"tags", b"{}")),
    )


def read(r: redis.Redis, service: str, start_index: int = 0, count: int = 100) -> list[Message]:
    """Messages with index >= start_index, oldest first."""
    entries = replies.entries(r.xrange(keys.sink(service), min=f"0-{max(start_index, 0)}", max="+", count=count))
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

    One round trip (the :data:`EMIT_LUA` script). Returns the sink index when written there.
    """
    out = EMIT(keys=emit_keys(service, request_id), args=emit_args(request_id, kind, data, extra_tags, to_sink), client=r)
    return int(out) if out is not None else None


def emit_keys(service: str, request_id: str) -> list[str]:
    """KEYS of :data:`EMIT_LUA`, in order: per-request stream, sink, sink counter."""
    return [keys.request_events(request_id), keys.sink(service), keys.sink_seq(service)]


def emit_args(request_id: str, kind: str, data: bytes, extra_tags: dict[str, str] | None, to_sink: bool) -> list[Any]:
    """ARGV of :data:`EMIT_LUA`, in order: data, tags JSON, record TTL, to sink (1/0), sink cap."""
    tags = {"requestId": request_id, "type": kind, "ts": f"{time.time():.6f}", **(extra_tags or {})}
    s = get_settings()
    return [data, json.dumps(tags), s.record_ttl, 1 if to_sink else 0, s.sink_maxlen]


def request_events(r: redis.Redis, request_id: str, after: str = "0-0", count: int = 500) -> list[tuple[str, Message]]:
    """Events of one request after stream id ``after``: (stream id, message) pairs."""
    out = []
    for eid, f in replies.entries(r.xrange(keys.request_events(request_id), min=f"({after}" if after != "0-0" else "-", count=count)):
        msg = Message(index=0, data=f.get(b"data", b""), tags=json.loads(f.get(b"tags", b"{}")))
        out.append((eid.decode(), msg))
    return out
