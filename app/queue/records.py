"""Request records: one Redis hash per request (owner of ``keys.request`` and ``keys.requests_index``).

A record is the user's view of a task: state (queued → running → succeeded/failed/cancelled),
progress 0-100, the worker, timestamps, result or error. Transitions are Lua-guarded so that a
late writer (a redelivered copy, a cancelled task finishing) cannot move a finished record back.
"""

from __future__ import annotations

import enum
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from app.core import keys, replies
from app.core.settings import get_settings
from app.queue import depth, scripts, streams, tenants
from app.queue import output as sink


class RequestState(enum.StrEnum):
    """The states of a request record: queued → running → succeeded / failed / cancelled.

    The Lua of ``app/queue/lua/`` spells the same names (each file says so where it does), and so
    does the dashboard's JavaScript (``app/ui/static``), which cannot import this.
    """

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = (RequestState.SUCCEEDED, RequestState.FAILED, RequestState.CANCELLED)
STATES = (RequestState.QUEUED, RequestState.RUNNING, *TERMINAL)

_FINISH, _RELEASE, _RENEW = scripts.load("finish"), scripts.load("release"), scripts.load("renew")
_REQUEUE, _REQUEUE_DEAD = scripts.load("requeue"), scripts.load("requeue_dead")


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
        "state": RequestState.QUEUED,
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
    _RELEASE(keys=[keys.request_lease(request_id), keys.running()], args=[request_id, worker], client=r)


def renew_leases(r: redis.Redis, request_ids: list[str], worker: str) -> list[str]:
    """Keep ``worker``'s leases of its running requests (its heartbeat calls this); returns the ids renewed.

    Compare-and-renew: a lease that expired and was taken by another delivery is not extended.
    """
    if not request_ids:
        return []
    ttl = int(get_settings().heartbeat_ttl * 1000)
    flags = _RENEW(keys=[keys.request_lease(rid) for rid in request_ids], args=[worker, ttl], client=r)
    return [rid for rid, ok in zip(request_ids, flags, strict=True) if ok]


def stale_writes(r: redis.Redis) -> int:
    """How many writes of stale deliveries (an old epoch) were refused so far."""
    return int(r.get(keys.stale_writes()) or 0)


def finish(
    r: redis.Redis, request_id: str, state: str, result: Any = None, error: str | None = None, now: float | None = None
) -> bool:
    """Move to a terminal state once; False if it already was terminal."""
    args: list[str | int] = [state, get_settings().record_ttl, *finish_fields(state, result, error, now)]
    return bool(_FINISH(keys=[keys.request(request_id)], args=args, client=r))


def finish_fields(state: str, result: Any = None, error: str | None = None, now: float | None = None) -> list[str]:
    """The record fields a move to terminal ``state`` writes (besides ``state``), as a flat list."""
    assert state in TERMINAL, state
    fields: list[str] = ["finished_at", f"{(now or time.time()):.6f}"]
    if state == RequestState.SUCCEEDED:
        fields += ["progress", "100"]
    if result is not None:
        fields += ["result", json.dumps(result)]
    if error is not None:
        fields += ["error", error]
    return fields


def cancel_requested(r: redis.Redis, request_id: str) -> bool:
    """Whether a cancel was asked for (a running task checks it between output lines)."""
    return r.hget(keys.request(request_id), "cancel") == b"1"


def tenant_of(r: redis.Redis, request_id: str) -> str:
    return replies.text(r.hget(keys.request(request_id), "tenant") or b"default")


def read_state(p: redis.client.Pipeline, request_id: str) -> None:
    """Queue a read of the record's state on ``p``: its reply comes with ``p.execute()``."""
    p.hget(keys.request(request_id), "state")


def request_cancel(r: redis.Redis, request_id: str) -> None:
    """Flag a request as cancelled: a worker that has not started it will skip it."""
    r.hset(keys.request(request_id), "cancel", "1")


def cancel(r: redis.Redis, request_id: str) -> Record | None:
    """Cancel a request; returns its record afterwards (None: unknown or expired).

    A waiting request is cancelled at once: it leaves the input queue and the waiting count, and
    the worker that receives its message skips it. A running command is ended by its worker
    (SIGTERM, then SIGKILL after the grace), which sees the flag; a running query is abandoned and
    marked cancelled now (its late answer is discarded by the finish guard).
    """
    rec = get(r, request_id)
    if rec is None or rec.done:
        return rec
    request_cancel(r, request_id)
    if rec.state == RequestState.QUEUED:
        if rec.index is not None:
            streams.input_queue(r, rec.service).delete([rec.index])
        depth.remove_waiting(tenants.queue_name(rec.service, rec.tenant), request_id)  # leaves the waiting count now
    abandon = rec.state == RequestState.QUEUED or rec.task_type == "query"
    if abandon and finish(r, request_id, RequestState.CANCELLED, error="cancelled by user"):
        sink.emit(r, rec.service, request_id, "error", b"cancelled by user", {"state": RequestState.CANCELLED})
    return get(r, request_id)


def message(r: redis.Redis, request_id: str) -> dict[str, Any] | None:
    raw = r.hget(keys.request(request_id), "message")
    return json.loads(raw) if raw else None


def requeue_if_orphaned(r: redis.Redis, request_id: str) -> bool:
    """Back to queued when its lease expired (worker dead); True when the caller must re-enqueue."""
    return bool(_REQUEUE(keys=_lease_keys(request_id), args=[request_id], client=r))


def requeue_of_dead(r: redis.Redis, request_id: str, worker: str) -> bool:
    """Back to queued at once when ``worker`` (known dead) still holds it; True when the caller must re-enqueue."""
    return bool(_REQUEUE_DEAD(keys=_lease_keys(request_id), args=[request_id, worker], client=r))


def _lease_keys(request_id: str) -> list[str]:
    """KEYS of the requeue scripts: record, lease, running hash."""
    return [keys.request(request_id), keys.request_lease(request_id), keys.running()]


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


POSITION_SCAN = 500  # stop counting earlier waiting requests after this many finished ones in a row


def position(r: redis.Redis, rec: Record) -> int | None:
    """How many earlier requests of the service still wait (FIFO estimate; None once started).

    Walks back through the service's requests by queue time and stops after a run of finished
    ones: the queue is FIFO, so requests older than a finished stretch have been taken too.
    """
    if rec.state != RequestState.QUEUED or rec.queued_at is None:
        return None
    key = keys.requests_index(rec.service)
    ahead, finished_run, cursor = 0, 0, r.zscore(key, rec.id) or rec.queued_at  # the exact score, not the rounded time
    while finished_run < POSITION_SCAN:
        ids = [
            (rid, sc)
            for rid, sc in replies.scored(
                r.zrevrangebyscore(key, f"({cursor}", "-inf", start=0, num=200, withscores=True)
            )
            if rid.decode() != rec.id
        ]
        if not ids:
            break
        with r.pipeline(transaction=False) as p:
            for rid, _ in ids:
                p.hget(keys.request(rid.decode()), "state")
            states = p.execute()
        for state in states:
            if state == RequestState.QUEUED.encode():
                ahead, finished_run = ahead + 1, 0
            else:
                finished_run += 1
        cursor = ids[-1][1]
    return ahead


def exists(r: redis.Redis, request_id: str) -> bool:
    return bool(r.exists(keys.request(request_id)))


def lease_alive(r: redis.Redis, request_id: str) -> bool:
    """Whether some worker's lease on the request is alive (recovery leaves it alone then)."""
    return bool(r.exists(keys.request_lease(request_id)))


def started_and_tenant(r: redis.Redis, request_ids: list[str]) -> dict[str, tuple[float | None, str]]:
    """(started_at, tenant) of each request, one round trip (the dashboard's workers page)."""
    with r.pipeline(transaction=False) as p:
        for rid in request_ids:
            p.hmget(keys.request(rid), "started_at", "tenant")
        rows = p.execute()
    return {rid: ((float(at) if at else None), (owner or b"default").decode())
            for rid, (at, owner) in zip(request_ids, rows, strict=True)}


def count(r: redis.Redis, service: str) -> int:
    """How many requests of the service have a record (the index the lists page through)."""
    return int(r.zcard(keys.requests_index(service)))
