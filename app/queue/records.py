"""Request records: one Redis hash per request (owner of ``keys.request`` and ``keys.requests_index``).

A record is the user's view of a task: state (queued → running → succeeded/failed/cancelled),
progress 0-100, the worker, timestamps, result or error. Transitions are Lua-guarded so that a
late writer (a redelivered copy, a cancelled task finishing) cannot move a finished record back.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from app.core import keys, replies
from app.core.settings import get_settings

TERMINAL = ("succeeded", "failed", "cancelled")
STATES = ("queued", "running", *TERMINAL)

# Lua functions (also embedded by workers/lifecycle.py, which runs a task's start and end as
# one script each). finish(k, state, ttl, fields): move to a terminal state unless the record
# already is terminal; 1 if it moved.
FINISH_FN = """
local function finish(k, state, ttl, fields)
  local s = redis.call('HGET', k, 'state')
  if s == 'succeeded' or s == 'failed' or s == 'cancelled' then return 0 end
  redis.call('HSET', k, 'state', state, unpack(fields))
  redis.call('EXPIRE', k, ttl)
  return 1
end
"""
_FINISH = FINISH_FN + "return finish(KEYS[1], ARGV[1], ARGV[2], {unpack(ARGV, 3)})"

# start(k, a): take the request's lease and mark it running. k: record, lease, running hash.
# a: worker, now, record ttl, lease ttl (ms), request id. Returns the new epoch (>= 1: started; the
# record's ``attempts`` after the increment, the fencing token of this delivery), 0 finished or
# cancelled, -1 another delivery holds a live lease (a duplicate: drop it, the holder is running it).
START_FN = """
local function start(k, a)
  local s = redis.call('HGET', k[1], 'state')
  if s == 'succeeded' or s == 'failed' or s == 'cancelled' then return 0 end
  if redis.call('HGET', k[1], 'cancel') == '1' then return 0 end
  if redis.call('EXISTS', k[2]) == 1 then return -1 end
  redis.call('SET', k[2], a[1], 'PX', a[4])
  redis.call('HSET', k[3], a[5], a[1])
  redis.call('HSET', k[1], 'state', 'running', 'worker', a[1], 'started_at', a[2], 'progress', '0')
  local epoch = redis.call('HINCRBY', k[1], 'attempts', 1)
  redis.call('EXPIRE', k[1], a[3])
  return epoch
end
"""
# stale(record, counter, epoch): true (and the refusal counted) when ``epoch`` is not the
# record's current one: a delivery whose lease expired and whose request started again elsewhere
# (a partition healed) must not write its outcome, progress or log lines over the new attempt's.
STALE_FN = """
local function stale(record, counter, epoch)
  if epoch == '' or redis.call('HGET', record, 'attempts') == epoch then return false end
  redis.call('INCR', counter)
  return true
end
"""
# release(lease, running, id, worker): drop the lease of a finished or abandoned request.
RELEASE_FN = """
local function release(lease, running, id, worker)
  if redis.call('GET', lease) == worker then redis.call('DEL', lease) end
  if redis.call('HGET', running, id) == worker then redis.call('HDEL', running, id) end
  return 1
end
"""
_RELEASE = RELEASE_FN + "return release(KEYS[1], KEYS[2], ARGV[1], ARGV[2])"


@dataclass
class Record:
    """A decoded request record."""

    id: str
    service: str
    task_type: str
    state: str
    progress: float = 0.0
    worker: str = ""
    tenant: str = "default"
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    index: int | None = None
    result: Any = None
    error: str | None = None
    cancel_requested: bool = False
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.state in TERMINAL

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def _f(v: bytes | None) -> float | None:
    return float(v) if v not in (None, b"") else None


def new_fields(
    request_id: str, service: str, task_type: str, tenant: str = "default", index: int | None = None,
    tags: dict[str, str] | None = None, now: float | None = None,
) -> dict[str, str]:
    """The fields of a new record in state ``queued`` (``queued_at`` = ``now``)."""
    mapping = {
        "id": request_id,
        "service": service,
        "task_type": task_type,
        "state": "queued",
        "progress": "0",
        "tenant": tenant,
        "queued_at": f"{(now or time.time()):.6f}",
        "attempts": "0",
        "tags": json.dumps(tags or {}),
    }
    if index is not None:
        mapping["index"] = str(index)
    return mapping


STARTED, FINISHED_OR_CANCELLED, DUPLICATE = 1, 0, -1

# Request ids scalejob makes are uuid4 hex (puts) or uuid4 strings (Celery task ids). One from a
# broker message is untrusted: it names Redis keys and a progress file, so nothing else passes.
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


def valid_request_id(request_id: object) -> bool:
    """True for an id that is safe in a key and a file name (no ``/``, no ``..``, bounded)."""
    return isinstance(request_id, str) and _SAFE_ID.fullmatch(request_id) is not None


def release(r: redis.Redis, request_id: str, worker: str) -> None:
    """Drop ``worker``'s lease on the request (after it finished or gave it up)."""
    r.eval(_RELEASE, 2, keys.request_lease(request_id), keys.running(), request_id, worker)


_RENEW = """
local out = {}
for i, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then out[i] = redis.call('PEXPIRE', k, ARGV[2]) else out[i] = 0 end
end
return out
"""


def renew_leases(r: redis.Redis, request_ids: list[str], worker: str) -> list[str]:
    """Keep ``worker``'s leases of its running requests (its heartbeat calls this); returns the ids renewed.

    Compare-and-renew: a lease that expired and was taken by another delivery is not extended.
    """
    if not request_ids:
        return []
    ttl = int(get_settings().heartbeat_ttl * 1000)
    flags = r.eval(_RENEW, len(request_ids), *[keys.request_lease(rid) for rid in request_ids], worker, ttl)
    return [rid for rid, ok in zip(request_ids, flags, strict=True) if ok]


def stale_writes(r: redis.Redis) -> int:
    """How many writes of stale deliveries (an old epoch) were refused so far."""
    return int(r.get(keys.stale_writes()) or 0)


def finish(
    r: redis.Redis, request_id: str, state: str, result: Any = None, error: str | None = None, now: float | None = None
) -> bool:
    """Move to a terminal state once; False if it already was terminal."""
    return bool(r.eval(_FINISH, 1, keys.request(request_id), state, get_settings().record_ttl, *finish_fields(state, result, error, now)))


def finish_fields(state: str, result: Any = None, error: str | None = None, now: float | None = None) -> list[str]:
    """The record fields a move to terminal ``state`` writes (besides ``state``), as a flat list."""
    assert state in TERMINAL, state
    fields: list[str] = ["finished_at", f"{(now or time.time()):.6f}"]
    if state == "succeeded":
        fields += ["progress", "100"]
    if result is not None:
        fields += ["result", json.dumps(result)]
    if error is not None:
        fields += ["error", error]
    return fields


def request_cancel(r: redis.Redis, request_id: str) -> None:
    """Flag a request as cancelled: a worker that has not started it will skip it."""
    r.hset(keys.request(request_id), "cancel", "1")


def message(r: redis.Redis, request_id: str) -> dict[str, Any] | None:
    raw = r.hget(keys.request(request_id), "message")
    return json.loads(raw) if raw else None


_REQUEUE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local s = redis.call('HGET', KEYS[1], 'state')
redis.call('HDEL', KEYS[3], ARGV[1])
if s ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'queued', 'worker', '', 'progress', '0')
return 1
"""


def requeue_if_orphaned(r: redis.Redis, request_id: str) -> bool:
    """Back to queued when its lease expired (worker dead); True when the caller must re-enqueue."""
    return bool(r.eval(_REQUEUE, 3, keys.request(request_id), keys.request_lease(request_id), keys.running(), request_id))


# A worker confirmed dead (its process and every command it started exited): drop its lease now,
# compare-and-delete, so a lease another delivery took meanwhile is never touched.
_REQUEUE_DEAD = """
if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end
if redis.call('HGET', KEYS[3], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[3], ARGV[1]) end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if redis.call('HGET', KEYS[1], 'state') ~= 'running' or redis.call('HGET', KEYS[1], 'worker') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'queued', 'worker', '', 'progress', '0')
return 1
"""


def requeue_of_dead(r: redis.Redis, request_id: str, worker: str) -> bool:
    """Back to queued at once when ``worker`` (known dead) still holds it; True when the caller must re-enqueue."""
    return bool(r.eval(_REQUEUE_DEAD, 3, keys.request(request_id), keys.request_lease(request_id), keys.running(), request_id, worker))


def running_requests(r: redis.Redis) -> dict[str, str]:
    """Request id -> worker for every request some worker holds."""
    return {k.decode(): v.decode() for k, v in replies.fields(r.hgetall(keys.running())).items()}


def get(r: redis.Redis, request_id: str) -> Record | None:
    h = replies.fields(r.hgetall(keys.request(request_id)))
    if not h or b"service" not in h:
        return None
    g = lambda k: h.get(k.encode(), b"").decode()  # noqa: E731
    return Record(
        id=g("id") or request_id,
        service=g("service"),
        task_type=g("task_type"),
        state=g("state"),
        progress=float(g("progress") or 0),
        worker=g("worker"),
        tenant=g("tenant") or "default",
        queued_at=_f(h.get(b"queued_at")),
        started_at=_f(h.get(b"started_at")),
        finished_at=_f(h.get(b"finished_at")),
        attempts=int(g("attempts") or 0),
        index=int(g("index")) if g("index") else None,
        result=json.loads(h[b"result"]) if h.get(b"result") else None,
        error=g("error") or None,
        cancel_requested=g("cancel") == "1",
        tags=json.loads(g("tags") or "{}"),
    )


def recent(r: redis.Redis, service: str, limit: int = 50, offset: int = 0) -> list[str]:
    """Most recent request ids of a service, newest first."""
    return [replies.text(x) for x in r.zrevrange(keys.requests_index(service), offset, offset + limit - 1)]
