"""EAS queue semantics over a Redis Stream whose entry IDs are ``0-<index>`` (both queues of a service).

The output queue is the sink (``keys.sink``, written by the workers through ``app.queue.output``); the
input queue is a mirror of every put (``keys.input_stream``) kept beside the Celery message so
that EAS ``get``/``attributes``/``watch`` work on it too. Readers in a consumer group
(``X-EAS-QueueService-Gid``) get each message once; a consumer (``-Uid``) that reconnects is
first given back what it was sent but never committed, so resuming loses and duplicates nothing.
``commit`` acknowledges *and* removes (EAS: committed messages leave the queue).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

import redis

from app.core import keys, replies
from app.core.settings import get_settings
from app.queue import output, scripts
from app.queue.output import Message, parse_entry

_APPEND = scripts.load("append")  # INCR then XADD 0-<i>: lua/lib/append.lua, shared with puts and events
SCAN_CHUNK = 500
MAX_GET_TIMEOUT = 60.0
RELEASED_IDLE_MS = 10**12  # "idle since forever": any watcher's next reclaim takes a released entry


def parse_timeout(text: str | None, default: float = 5.0) -> float:
    """EAS ``_timeout_``: ``5s``, ``500ms``, ``1m`` or plain seconds; capped at a minute."""
    if text is None or text == "":
        return default
    t = text.strip().lower()
    for suffix, scale in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):
        if t.endswith(suffix):
            t, mult = t[: -len(suffix)], scale
            break
    else:
        mult = 1.0
    value = float(t) * mult  # ValueError for junk: the API turns it into a 400
    if math.isnan(value) or value < 0:
        raise ValueError(f"bad timeout {text!r}")
    return min(value, MAX_GET_TIMEOUT)


def _sid(index: int) -> str:
    return f"0-{index}"


def _matches(msg: Message, request_id: str | None, tags: dict[str, str]) -> bool:
    if request_id is not None and msg.tags.get("requestId") != request_id:
        return False
    return all(msg.tags.get(k) == v for k, v in tags.items())


@dataclass(frozen=True)
class StreamQueue:
    """One EAS queue: a stream key and the counter its indexes come from."""

    r: redis.Redis
    stream: str
    seq: str
    name: str
    # client for blocking reads (its own pool: waiting clients never take the connections puts need)
    waiter: redis.Redis | None = None

    # --- writing -----------------------------------------------------------------------------
    def append(self, data: bytes, tags: dict[str, str], maxlen: int | None = None) -> int:
        """Add one message (index and stream ID assigned together, in order); returns its index."""
        cap = maxlen or get_settings().sink_maxlen
        return int(_APPEND(keys=[self.stream, self.seq], args=[cap, data, json.dumps(tags)], client=self.r))

    def delete(self, indexes: list[int]) -> int:
        return int(self.r.xdel(self.stream, *[_sid(i) for i in indexes])) if indexes else 0

    def commit(self, group: str, indexes: list[int]) -> int:
        """Acknowledge in ``group`` and remove: committed messages leave the queue."""
        if not indexes:
            return 0
        ids = [_sid(i) for i in indexes]
        with self.r.pipeline(transaction=False) as p:
            p.xack(self.stream, group, *ids)
            p.xdel(self.stream, *ids)
            try:
                _, removed = p.execute()
            except redis.ResponseError:  # no such group (nobody watched yet): plain delete
                return self.delete(indexes)
        return int(removed)

    def truncate(self, index: int) -> int:
        """Drop every message with an index below ``index``."""
        return int(self.r.xtrim(self.stream, minid=_sid(max(index, 0)), approximate=False))

    # --- reading -----------------------------------------------------------------------------
    def scan(
        self, start: int, length: int, request_id: str | None = None, tags: dict[str, str] | None = None
    ) -> tuple[list[Message], str]:
        """Up to ``length`` matching messages with index >= ``start``; also the last stream ID seen."""
        found: list[Message] = []
        cursor, last = _sid(max(start, 0)), _sid(max(start - 1, 0))
        while len(found) < length:
            entries = replies.entries(self.r.xrange(self.stream, min=cursor, max="+", count=SCAN_CHUNK))
            for eid, fields in entries:
                msg = parse_entry(eid, fields)
                last = eid.decode()
                if _matches(msg, request_id, tags or {}):
                    found.append(msg)
                    if len(found) >= length:
                        break
            if len(entries) < SCAN_CHUNK:
                break
            cursor = f"({last}"
        return found, last

    def get(
        self,
        start: int = 0,
        length: int = 1,
        timeout: float = 0.0,
        auto_delete: bool = False,
        request_id: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> list[Message]:
        """EAS ``get``: matching messages from ``start``, waiting up to ``timeout`` for the first."""
        found, last = self.scan(start, length, request_id, tags)
        deadline = time.monotonic() + timeout
        while not found and (left := deadline - time.monotonic()) > 0:
            reply = (self.waiter or self.r).xread(
                {self.stream: last}, count=SCAN_CHUNK, block=max(1, int(min(left, 1.0) * 1000))
            )
            for _, entries in replies.streams(reply) or []:
                for eid, fields in entries:
                    last = eid.decode()
                    msg = parse_entry(eid, fields)
                    if msg.index >= start and _matches(msg, request_id, tags or {}) and len(found) < length:
                        found.append(msg)
        if auto_delete and found:
            self.delete([m.index for m in found])
        return found

    # --- consumer groups (watch) ---------------------------------------------------------------
    def ensure_group(self, group: str, start: int = 0) -> None:
        """Create ``group`` reading from index ``start`` unless it exists (then it resumes)."""
        try:
            self.r.xgroup_create(self.stream, group, id=_sid(max(start - 1, 0)), mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def inflight(self, group: str, consumer: str, limit: int) -> int:
        """Messages sent to ``consumer`` and not yet committed (counted up to ``limit``)."""
        return len(self.r.xpending_range(self.stream, group, min="-", max="+", count=limit, consumername=consumer))

    def read_group(
        self, group: str, consumer: str, count: int | None, block_ms: int | None, pending: bool = False
    ) -> list[Message]:
        """Next messages for ``consumer``: its own uncommitted ones when ``pending``, else new ones."""
        reply = (self.waiter or self.r).xreadgroup(
            group, consumer, {self.stream: "0" if pending else ">"}, count=count, block=None if pending else block_ms
        )
        out = []
        for _, entries in replies.streams(reply) or []:
            for eid, fields in entries:
                if fields:  # a pending entry deleted meanwhile comes back with no fields
                    out.append(parse_entry(eid, fields))
                else:
                    self.r.xack(self.stream, group, eid)
        return out

    def claim_abandoned(
        self, group: str, consumer: str, count: int, min_idle_ms: int, cursor: str
    ) -> tuple[list[Message], str]:
        """Take over up to ``count`` entries pending on other consumers for ``min_idle_ms`` or more.

        Why: a watcher that went away (socket closed, API process killed) leaves what it was sent and
        never committed pending on its consumer, and the EAS client picks a new uid per ``init()``,
        so nobody would ever read it again. A live watcher keeps its own entries fresh
        (:meth:`touch`), so only a gone consumer's entries grow this idle. Returns the messages and
        the ``XAUTOCLAIM`` cursor to pass next time (it walks the whole pending list over calls).
        """
        reply = self.r.xautoclaim(self.stream, group, consumer, min_idle_ms, start_id=cursor, count=count)
        nxt, entries = reply[0], reply[1]
        out = []
        for eid, fields in entries:
            if fields:
                out.append(parse_entry(eid, fields))
            else:  # deleted meanwhile (Redis < 7 still returns it): nothing to deliver
                self.r.xack(self.stream, group, eid)
        return out, nxt.decode() if isinstance(nxt, bytes) else str(nxt)

    def next_for(
        self, group: str, consumer: str, count: int, block_ms: int, min_idle_ms: int, cursor: str
    ) -> tuple[list[Message], str]:
        """Abandoned entries of the group first (:meth:`claim_abandoned`), else new ones (blocking)."""
        claimed, cursor = self.claim_abandoned(group, consumer, count, min_idle_ms, cursor)
        return (claimed or self.read_group(group, consumer, count, block_ms)), cursor

    def release(self, group: str, consumer: str, indexes: list[int]) -> None:
        """Hand entries ``consumer`` was given but did not deliver back to the group at once.

        Redis has no "unread": the entries stay pending on ``consumer`` with their idle time set far
        past any reclaim bound, so the next :meth:`claim_abandoned` of any watcher takes them.
        """
        if indexes:
            self.r.xclaim(
                self.stream, group, consumer, 0, [_sid(i) for i in indexes], idle=RELEASED_IDLE_MS, justid=True
            )

    def touch(self, group: str, consumer: str, limit: int) -> None:
        """Reset the idle time of ``consumer``'s pending entries: it is alive, do not reclaim them."""
        ids: list[Any] = [
            p["message_id"]
            for p in self.r.xpending_range(self.stream, group, min="-", max="+", count=limit, consumername=consumer)
        ]
        if ids:
            self.r.xclaim(self.stream, group, consumer, 0, ids, justid=True)

    def ack(self, group: str, indexes: list[int]) -> None:
        if indexes:
            self.r.xack(self.stream, group, *[_sid(i) for i in indexes])

    # --- introspection -----------------------------------------------------------------------
    def attributes(self) -> dict[str, str]:
        """EAS attribute strings: ``stream.length``, ``stream.lastEntry``, consumers, ..."""
        try:
            info = self.r.xinfo_stream(self.stream)
        except redis.ResponseError:  # no stream yet
            last = int(self.r.get(self.seq) or 0)
            return {
                "meta.name": self.name,
                "stream.length": "0",
                "stream.lastEntry": str(last),
                "stream.firstEntry": "0",
                "consumers.stats.total": "0",
            }
        last_id = info.get("last-generated-id", b"0-0")
        last_id = last_id.decode() if isinstance(last_id, bytes) else str(last_id)
        first = info.get("first-entry")
        attrs = {
            "meta.name": self.name,
            "meta.header.group": "X-EAS-QueueService-Gid",
            "meta.header.user": "X-EAS-QueueService-Uid",
            "stream.length": str(info.get("length", 0)),
            "stream.lastEntry": last_id.split("-", 1)[1],
            "stream.firstEntry": parse_entry(first[0], first[1]).index.__str__() if first else "0",
            "stream.approxMaxLength": str(get_settings().sink_maxlen),
        }
        n = 0
        for g in self.r.xinfo_groups(self.stream):
            gname = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
            for c in self.r.xinfo_consumers(self.stream, gname):
                cname = c["name"].decode() if isinstance(c["name"], bytes) else c["name"]
                attrs[f"consumers.list.[{n}]"] = (
                    f"Id: {cname}, Group: {gname}, Pending: {c.get('pending', 0)}, Idle: {c.get('idle', 0)}"
                )
                n += 1
        attrs["consumers.stats.total"] = str(n)
        return attrs

    def search(self, index: int) -> dict[str, Any] | None:
        """Where message ``index`` is: pending on a consumer, or its position among undelivered ones."""
        if not self.r.xrange(self.stream, min=_sid(index), max=_sid(index), count=1):
            return None
        for g in self.r.xinfo_groups(self.stream):
            gname = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
            pend = self.r.xpending_range(self.stream, gname, min=_sid(index), max=_sid(index), count=1)
            if pend:
                c = pend[0]["consumer"]
                return {
                    "index": index,
                    "IsPending": True,
                    "ConsumerName": c.decode() if isinstance(c, bytes) else c,
                    "Group": gname,
                }
        before = len(replies.entries(self.r.xrange(self.stream, min="-", max=f"({_sid(index)}", count=100_000)))
        return {"index": index, "IsPending": False, "WaitingPosition": before}


def output_queue(r: redis.Redis, service: str, waiter: redis.Redis | None = None) -> StreamQueue:
    return StreamQueue(r, *output.stream_keys(service), f"{service}/sink", waiter)


def input_queue(r: redis.Redis, service: str, waiter: redis.Redis | None = None) -> StreamQueue:
    return StreamQueue(r, keys.input_stream(service), keys.input_seq(service), service, waiter)
