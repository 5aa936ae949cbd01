"""A task's bookkeeping in two Redis round trips: one script when it starts, one when it ends.

Why: a no-op task used to pay 7 round trips (record check, record/message copy, lease, registry,
finish, event, sink, release), most of the per-task cost next to a bare Celery task. The scripts
here only compose the Lua functions of the keys' owners (``app.records``: start/finish/release,
``app.sink``: emit), so the guards are the same code: a duplicate delivery is refused while a
lease is alive, and a terminal record never moves back.

* :func:`begin`: create the record if the task came straight through Celery, keep the message
  copy recovery needs, take the lease, mark it running, add it to the worker's task set.
* :func:`end`: move the record to its terminal state, emit the terminal event (per-request
  stream and output queue), and, for the lease holder, release the lease and leave the task set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis
from redis.commands.core import Script

from app import keys, records, sink
from app.settings import get_settings

# KEYS: record, lease, running hash, worker's task set, service's request index.
# ARGV: worker, now, record ttl, lease ttl ms, request id, task-set ttl, message JSON ('' = not
# sent: answer {2} if the record lacks one), then the fields of a new record.
# Returns {1} started, {2} message needed, {-1, holder} duplicate, {0, state, cancel} not to run.
_BEGIN = records.START_FN + """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 8))
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  redis.call('ZADD', KEYS[5], ARGV[2], ARGV[5])
end
if redis.call('HEXISTS', KEYS[1], 'message') == 0 then
  if ARGV[7] == '' then return {2} end
  redis.call('HSET', KEYS[1], 'message', ARGV[7])
end
local started = start(KEYS, ARGV)
if started == 1 then
  redis.call('SADD', KEYS[4], ARGV[5])
  redis.call('EXPIRE', KEYS[4], ARGV[6])
  return {1}
end
if started == -1 then return {-1, redis.call('GET', KEYS[2]) or '?'} end
return {0, redis.call('HGET', KEYS[1], 'state') or '', redis.call('HGET', KEYS[1], 'cancel') or ''}
"""

# KEYS: record, per-request stream, sink, sink counter, lease, running hash, worker's task set.
# ARGV: state, record ttl, request id, worker ('' = not the lease holder: release nothing),
# data, tags JSON, to sink, sink cap, then the terminal fields. Returns {moved, final state}.
_END = records.FINISH_FN + records.RELEASE_FN + sink.EMIT_FN + """
local moved = finish(KEYS[1], ARGV[1], ARGV[2], {unpack(ARGV, 9)})
if moved == 1 then emit({KEYS[2], KEYS[3], KEYS[4]}, {ARGV[5], ARGV[6], ARGV[2], ARGV[7], ARGV[8]}) end
if ARGV[4] ~= '' then
  release(KEYS[5], KEYS[6], ARGV[3], ARGV[4])
  redis.call('SREM', KEYS[7], ARGV[3])
end
return {moved, redis.call('HGET', KEYS[1], 'state') or ''}
"""

# KEYS: the emit keys, record. ARGV: the emit args, progress. Returns the sink index or nil.
_PROGRESS = sink.EMIT_FN + """
redis.call('HSET', KEYS[4], 'progress', ARGV[6])
return emit(KEYS, ARGV)
"""

BEGIN = Script(None, _BEGIN.encode())
END = Script(None, _END.encode())
PROGRESS = Script(None, _PROGRESS.encode())


@dataclass(frozen=True)
class Begun:
    """What :func:`begin` found: ``status`` is one of ``records.STARTED/DUPLICATE/FINISHED_OR_CANCELLED``."""

    status: int
    holder: str = ""  # DUPLICATE: who holds the lease
    state: str = ""  # FINISHED_OR_CANCELLED: the record's state
    cancel_requested: bool = False


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def begin(r: redis.Redis, request_id: str, service: str, kind: str, worker: str, registry_name: str, message: dict[str, Any], now: float) -> Begun:
    """Start a delivery of ``request_id`` on ``worker`` (one round trip; two for a Celery task without a record)."""
    s = get_settings()
    ks = [keys.request(request_id), keys.request_lease(request_id), keys.running(), keys.worker_tasks(registry_name), keys.requests_index(service)]
    fields = [x for kv in records.new_fields(request_id, service, kind, now=now).items() for x in kv]
    head = [worker, f"{now:.6f}", s.record_ttl, int(s.heartbeat_ttl * 1000), request_id, int(s.heartbeat_ttl) + 1]
    out = BEGIN(keys=ks, args=[*head, "", *fields], client=r)
    if out[0] == 2:  # sent straight through Celery: keep what recovery needs to enqueue it again
        out = BEGIN(keys=ks, args=[*head, json.dumps(message), *fields], client=r)
    status = int(out[0])
    if status == records.DUPLICATE:
        return Begun(status, holder=_s(out[1]))
    if status == records.FINISHED_OR_CANCELLED:
        return Begun(status, state=_s(out[1]), cancel_requested=_s(out[2]) == "1")
    return Begun(status)


def end(
    r: redis.Redis, service: str, request_id: str, state: str, data: bytes, result: Any, error: str | None,
    tags: dict[str, str], worker: str = "", registry_name: str = "",
) -> tuple[bool, str]:
    """Finish ``request_id`` and emit its terminal event; with ``worker``, also release its lease.

    Returns (whether this call moved the record to ``state``, the record's state afterwards).
    """
    kind = "result" if state == "succeeded" else "error"
    e_keys = sink.emit_keys(service, request_id)
    data_, tags_json, ttl, to_sink, cap = sink.emit_args(request_id, kind, data, {"state": state, **tags}, True)
    ks = [keys.request(request_id), *e_keys, keys.request_lease(request_id), keys.running(), keys.worker_tasks(registry_name or worker)]
    args = [state, ttl, request_id, worker, data_, tags_json, to_sink, cap, *records.finish_fields(state, result, error)]
    moved, final = END(keys=ks, args=args, client=r)
    return bool(moved), _s(final)


def progress(r: redis.Redis, service: str, request_id: str, value: float, to_sink: bool) -> None:
    """Record a running request's progress and emit it as a ``progress`` event (one round trip)."""
    args = [*sink.emit_args(request_id, "progress", f"{value:g}".encode(), None, to_sink), f"{max(0.0, min(100.0, value)):g}"]
    PROGRESS(keys=[*sink.emit_keys(service, request_id), keys.request(request_id)], args=args, client=r)
