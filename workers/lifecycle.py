"""A task's bookkeeping in two Redis round trips: one script when it starts, one when it ends.

Why: a no-op task used to pay 7 round trips (record check, record/message copy, lease, registry,
finish, event, sink, release), most of the per-task cost next to a bare Celery task. The scripts
here only compose the Lua functions of the keys' owners (``app.queue.records``: start/finish/release,
``app.queue.output``: emit), so the guards are the same code: a duplicate delivery is refused while a
lease is alive, and a terminal record never moves back.

* :func:`begin`: create the record if the task came straight through Celery, keep the message
  copy recovery needs, take the lease, mark it running, add it to the worker's task set.
* :func:`end`: move the record to its terminal state, emit the terminal event (per-request
  stream and output queue), and, for the lease holder, release the lease and leave the task set.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import redis

from app.core import keys, replies
from app.core.settings import get_settings
from app.queue import output as sink
from app.queue import records, run_times

log = logging.getLogger(__name__)

# KEYS: record, lease, running hash, worker's task set, service's request index.
# ARGV: worker, now, record ttl, lease ttl ms, request id, task-set ttl, message JSON ('' = not
# sent: answer {2} if the record lacks one), then the fields of a new record.
# Returns {1, epoch, tenant} started, {2} message needed, {-1, holder} duplicate, {0, state, cancel} not to run.
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
if started >= 1 then
  redis.call('SADD', KEYS[4], ARGV[5])
  redis.call('EXPIRE', KEYS[4], ARGV[6])
  return {1, started, redis.call('HGET', KEYS[1], 'tenant') or 'default'}
end
if started == -1 then return {-1, redis.call('GET', KEYS[2]) or '?'} end
return {0, redis.call('HGET', KEYS[1], 'state') or '', redis.call('HGET', KEYS[1], 'cancel') or ''}
"""

# KEYS: record, per-request stream, sink, sink counter, lease, running hash, worker's task set,
# stale-write counter, the service's run times (app/queue/run_times.py). ARGV: state, record ttl,
# request id, worker ('' = not the lease holder: release nothing), data, tags JSON, to sink, sink
# cap, epoch ('' = unfenced), then the terminal fields (ARGV[11]: finished_at). The lease holder's
# succeeded or failed run adds its run time. Returns {moved, final state}, or {-2, current epoch} when the epoch is stale (refused).
_END = records.FINISH_FN + records.RELEASE_FN + records.STALE_FN + sink.EMIT_FN + run_times.RECORD_FN + """
if stale(KEYS[1], KEYS[8], ARGV[9]) then
  if redis.call('HGET', KEYS[6], ARGV[3]) ~= ARGV[4] then redis.call('SREM', KEYS[7], ARGV[3]) end
  return {-2, redis.call('HGET', KEYS[1], 'attempts') or ''}
end
local moved = finish(KEYS[1], ARGV[1], ARGV[2], {unpack(ARGV, 10)})
if moved == 1 then emit({KEYS[2], KEYS[3], KEYS[4]}, {ARGV[5], ARGV[6], ARGV[2], ARGV[7], ARGV[8]}) end
if ARGV[4] ~= '' then
  if moved == 1 and ARGV[1] ~= 'cancelled' then record_run(KEYS[9], redis.call('HGET', KEYS[1], 'started_at'), ARGV[11]) end
  release(KEYS[5], KEYS[6], ARGV[3], ARGV[4])
  redis.call('SREM', KEYS[7], ARGV[3])
end
return {moved, redis.call('HGET', KEYS[1], 'state') or ''}
"""

# KEYS: the emit keys, record, stale-write counter. ARGV: the emit args, progress, epoch.
# Returns the sink index, nil, or -2 when the epoch is stale (refused).
_PROGRESS = records.STALE_FN + sink.EMIT_FN + """
if stale(KEYS[4], KEYS[5], ARGV[7]) then return -2 end
redis.call('HSET', KEYS[4], 'progress', ARGV[6])
return emit(KEYS, ARGV)
"""

# KEYS: the emit keys, record, stale-write counter. ARGV: the emit args, epoch. A log line of the
# current delivery only. Returns the sink index, nil, or -2 when the epoch is stale (refused).
_LOG = records.STALE_FN + sink.EMIT_FN + """
if stale(KEYS[4], KEYS[5], ARGV[6]) then return -2 end
return emit(KEYS, ARGV)
"""

BEGIN = replies.script(_BEGIN.encode())
END = replies.script(_END.encode())
PROGRESS = replies.script(_PROGRESS.encode())
LOG = replies.script(_LOG.encode())
STALE = -2


@dataclass(frozen=True)
class Begun:
    """What :func:`begin` found: ``status`` is one of ``records.STARTED/DUPLICATE/FINISHED_OR_CANCELLED``."""

    status: int
    epoch: str = ""  # STARTED: this delivery's fencing token (the record's attempts)
    tenant: str = "default"  # STARTED: the request's tenant (its output-queue events carry it)
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
    head: list[str | int] = [worker, f"{now:.6f}", s.record_ttl, int(s.heartbeat_ttl * 1000), request_id, int(s.heartbeat_ttl) + 1]
    out = BEGIN(keys=ks, args=[*head, "", *fields], client=r)
    if out[0] == 2:  # sent straight through Celery: keep what recovery needs to enqueue it again
        out = BEGIN(keys=ks, args=[*head, json.dumps(message), *fields], client=r)
    status = int(out[0])
    if status == records.DUPLICATE:
        return Begun(status, holder=_s(out[1]))
    if status == records.FINISHED_OR_CANCELLED:
        return Begun(status, state=_s(out[1]), cancel_requested=_s(out[2]) == "1")
    return Begun(status, epoch=_s(out[1]), tenant=_s(out[2])) if status == records.STARTED else Begun(status)


def end(
    r: redis.Redis, service: str, request_id: str, state: str, data: bytes, result: Any, error: str | None,
    tags: dict[str, str], worker: str = "", registry_name: str = "", epoch: str = "",
) -> tuple[bool, str]:
    """Finish ``request_id`` and emit its terminal event; with ``worker``, also release its lease.

    With ``epoch`` the write is fenced: a delivery whose request started again since (its lease
    expired during a partition) is refused, counted, and changes nothing.
    Returns (whether this call moved the record to ``state``, the record's state afterwards; ``stale``
    when refused).
    """
    kind = "result" if state == "succeeded" else "error"
    e_keys = sink.emit_keys(service, request_id)
    data_, tags_json, ttl, to_sink, cap = sink.emit_args(request_id, kind, data, {"state": state, **tags}, True)
    ks = [keys.request(request_id), *e_keys, keys.request_lease(request_id), keys.running(), keys.worker_tasks(registry_name or worker), keys.stale_writes(), keys.run_times(service)]
    args = [state, ttl, request_id, worker, data_, tags_json, to_sink, cap, epoch, *records.finish_fields(state, result, error)]
    moved, final = END(keys=ks, args=args, client=r)
    if moved == STALE:
        log.warning("request %s: stale outcome %r of epoch %s refused (the current epoch is %s)", request_id, state, epoch, _s(final))
        return False, "stale"
    return bool(moved), _s(final)


def progress(r: redis.Redis, service: str, request_id: str, value: float, to_sink: bool, epoch: str = "", tenant: str = "default") -> bool:
    """Record a running request's progress and emit it as a ``progress`` event (one round trip); False if stale."""
    args = [*sink.emit_args(request_id, "progress", f"{value:g}".encode(), {"tenant": tenant}, to_sink), f"{max(0.0, min(100.0, value)):g}", epoch]
    out = PROGRESS(keys=[*sink.emit_keys(service, request_id), keys.request(request_id), keys.stale_writes()], args=args, client=r)
    return out != STALE


def log_line(r: redis.Redis, service: str, request_id: str, line: bytes, to_sink: bool, epoch: str = "", tenant: str = "default") -> bool:
    """Emit one log line of the delivery of ``epoch`` (one round trip); False if stale (refused)."""
    args = [*sink.emit_args(request_id, "log", line, {"tenant": tenant}, to_sink), epoch]
    out = LOG(keys=[*sink.emit_keys(service, request_id), keys.request(request_id), keys.stale_writes()], args=args, client=r)
    return out != STALE
