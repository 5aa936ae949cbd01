"""The EAS watch (WebSocket) of ``/api/predict/<queue>``: at-least-once delivery to a consumer group.

Why a module of its own: delivery must not strand a message on a consumer that is gone. The EAS
client gives every ``init()`` a new uid, so an entry left pending on a dead consumer is never read
again unless someone takes it back. The rules, each closing one way to lose a message:

- an entry read for a client whose socket closed meanwhile (the blocking ``XREADGROUP`` was in
  flight when it left) is released to the group at once, never sent, never committed;
- an entry whose send failed is released likewise; auto-commit commits only frames written;
- every watcher first takes over entries pending on other consumers of its group for
  ``SCALEJOB_WATCH_RECLAIM_S`` (``XAUTOCLAIM``): a consumer that left without committing (client
  crash, API process killed) loses them to the next watcher. A live watcher refreshes the idle time
  of its own pending entries every :func:`heartbeat_s`, so a slow but connected consumer keeps them.

So watch is at-least-once: a redelivered message has its original index, tags and data, may come
after newer ones, and may be one the first consumer already processed but had not committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable

from fastapi import HTTPException, WebSocket
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocketState

from app.core.settings import get_settings
from app.eas import protocol as eas_proto
from app.eas.calls import (
    HEADER_GID,
    HEADER_UID,
    Target,
    bool_param,
    frame,
    int_param,
    resolve,
    split_params,
    tenant_group,
    tenant_scope,
)
from app.queue import output as sink

BLOCK_MS = 500  # one blocking read; also the longest a released entry waits for a blocked watcher


def reclaim_idle_ms() -> int:
    """Idle time after which an entry pending on another consumer is taken over (the consumer is gone)."""
    return int(get_settings().watch_reclaim_s * 1000)


def heartbeat_s() -> float:
    """How often a live watcher marks its own pending entries fresh: well inside the reclaim bound."""
    return min(5.0, get_settings().watch_reclaim_s / 4)


async def watch(ws: WebSocket, service: str, is_sink: bool) -> None:
    """Stream the queue to one consumer, at most ``_window_`` uncommitted at a time.

    A reconnecting consumer (same Uid and Gid) first gets back what it was sent and never
    committed, then abandoned entries of its group, then new messages.
    """
    try:
        t = await run_in_threadpool(resolve, service, is_sink, ws.headers.get("authorization"))
        control, tags = split_params(ws.query_params)
        start = int_param(control, "_index_", 0)
        window = int_param(control, "_window_", 1, low=1, high=10_000)
        index_only = bool_param(control, "_index_only_", False)
        auto_commit = bool_param(control, "_auto_commit_", False)
    except HTTPException as exc:
        await ws.close(code=1008 if exc.status_code == 401 else 1003, reason=str(exc.detail)[:120])
        return
    group = tenant_group(t, ws.headers.get(HEADER_GID) or "eas")
    tags = tenant_scope(t, tags)
    consumer = ws.headers.get(HEADER_UID) or uuid.uuid4().hex
    await ws.accept()
    await run_in_threadpool(t.queue.ensure_group, group, start)
    gone = asyncio.Event()

    async def notice_disconnect() -> None:
        with contextlib.suppress(Exception):
            while (await ws.receive())["type"] != "websocket.disconnect":
                pass
        gone.set()

    def alive() -> bool:
        return not gone.is_set() and ws.client_state == WebSocketState.CONNECTED

    reader = asyncio.create_task(notice_disconnect())
    try:
        await _deliver(ws, t, group, consumer, window, tags, index_only, auto_commit, alive)
    finally:
        reader.cancel()


async def _deliver(ws: WebSocket, t: Target, group: str, consumer: str, window: int, tags: dict[str, str],
                   index_only: bool, auto_commit: bool, alive: Callable[[], bool]) -> None:
    """The delivery loop of :func:`watch`; returns when the client is gone."""
    q = t.queue
    pending, cursor, beat = True, "0-0", time.monotonic()  # first: our own uncommitted from an earlier connection
    while alive():
        if time.monotonic() - beat >= heartbeat_s():
            await run_in_threadpool(q.touch, group, consumer, window)
            beat = time.monotonic()
        if auto_commit or pending:
            room = window
        else:
            room = window - await run_in_threadpool(q.inflight, group, consumer, window)
        if room <= 0:
            await asyncio.sleep(0.02)
            continue
        if pending:
            msgs = await run_in_threadpool(q.read_group, group, consumer, None, None, True)
            pending = False
        else:
            msgs, cursor = await run_in_threadpool(q.next_for, group, consumer, room, BLOCK_MS, reclaim_idle_ms(),
                                                   cursor)
        if not msgs:
            continue
        skipped = [m.index for m in msgs if not all(m.tags.get(k) == v for k, v in tags.items())]
        sent = await _send(ws, [m for m in msgs if m.index not in skipped], index_only, alive)
        unsent = [m.index for m in msgs if m.index not in skipped and m.index not in sent]
        if unsent:  # the client left while we read, or the send failed: back to the group, uncommitted
            await run_in_threadpool(q.release, group, consumer, unsent)
        if skipped:
            await run_in_threadpool(q.ack, group, skipped)
        if auto_commit and sent:  # only frames written: a message never sent is never committed
            await run_in_threadpool(q.commit, group, sent)
        if unsent:
            return


async def _send(ws: WebSocket, msgs: list[sink.Message], index_only: bool, alive: Callable[[], bool]) -> list[int]:
    """Send ``msgs`` in order while the client is there; the indexes of the frames written."""
    sent: list[int] = []
    for m in msgs:
        if not alive():
            break
        try:
            await ws.send_bytes(eas_proto.encode_frame(frame(m, index_only)))
        except Exception:  # noqa: BLE001 - any failure to write means this frame was not delivered
            break
        sent.append(m.index)
    return sent
