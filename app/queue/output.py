"""The output queue ("sink") of each service: a Redis Stream whose entry IDs are ``0-<index>``.

Why explicit IDs: the EAS protocol addresses messages by a dense integer index. Taking the index
from a counter and writing it as the stream ID's sequence part (in one Lua function,
``lua/lib/append.lua``, so order and index always agree) makes "read from index N" a plain
``XRANGE 0-N +`` and keeps consumer groups working unchanged. Each request also gets a small
per-request stream of the same events so that ``/api/requests/{id}/events`` can follow one
request without scanning the service's sink.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from app.core import keys, replies
from app.core.settings import get_settings
from app.queue import scripts

# One request event (lua/lib/emit.lua, which app/queue/lifecycle.py's task scripts include too).
EMIT = scripts.load("emit")


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


def stream_keys(service: str) -> tuple[str, str]:
    """(stream, index counter) of the service's output queue: :func:`app.queue.streams.output_queue` reads it."""
    return keys.sink(service), keys.sink_seq(service)


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

    One round trip (``lua/emit.lua``). Returns the sink index when written there.
    """
    out = EMIT(
        keys=emit_keys(service, request_id), args=emit_args(request_id, kind, data, extra_tags, to_sink), client=r
    )
    return int(out) if out is not None else None


def emit_keys(service: str, request_id: str) -> list[str]:
    """KEYS of ``lua/lib/emit.lua``, in order: per-request stream, sink, sink counter."""
    return [keys.request_events(request_id), keys.sink(service), keys.sink_seq(service)]


def emit_args(request_id: str, kind: str, data: bytes, extra_tags: dict[str, str] | None, to_sink: bool) -> list[Any]:
    """ARGV of ``lua/lib/emit.lua``, in order: data, tags JSON, record TTL, to sink (1/0), sink cap."""
    tags = {"requestId": request_id, "type": kind, "ts": f"{time.time():.6f}", **(extra_tags or {})}
    s = get_settings()
    return [data, json.dumps(tags), s.record_ttl, 1 if to_sink else 0, s.sink_maxlen]


def wait_events(r: redis.Redis, request_id: str, after: str, count: int, block_ms: int) -> list[tuple[str, Message]]:
    """Events of one request after stream id ``after``, waiting up to ``block_ms`` for the first (XREAD BLOCK)."""
    reply = r.xread({keys.request_events(request_id): after}, count=count, block=max(1, block_ms))
    return [_event(eid, f) for _, entries in replies.streams(reply) or [] for eid, f in entries]


def request_events(r: redis.Redis, request_id: str, after: str = "0-0", count: int = 500) -> list[tuple[str, Message]]:
    """Events of one request after stream id ``after``: (stream id, message) pairs."""
    start = f"({after}" if after != "0-0" else "-"
    entries = replies.entries(r.xrange(keys.request_events(request_id), min=start, count=count))
    return [_event(eid, f) for eid, f in entries]


def _event(eid: bytes, fields: dict[bytes, bytes]) -> tuple[str, Message]:
    """(stream id, message) of one per-request event: it has no output-queue index."""
    return eid.decode(), Message(0, fields.get(b"data", b""), json.loads(fields.get(b"tags", b"{}")))
