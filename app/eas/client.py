"""Python SDK: ``QueueClient`` with ``eas_prediction.QueueClient``'s methods and return values.

Code moves between the two by changing one import::

    from app.sdk import QueueClient          # was: from eas_prediction import QueueClient
    q = QueueClient("127.0.0.1:8000", "my_service")      # or "my_service/sink"
    q.set_token(token); q.init()
    index, request_id = q.put(b"python train.py", tags={"taskType": "command"})

It speaks protobuf through :mod:`app.eas.protocol` (no protobuf pin) or JSON (``set_format``),
retries only on 5xx and connection errors (a 4xx is raised at once as :class:`QueueError`),
and adds :class:`AsyncQueueClient` and :func:`submit` (put, then follow the request's events).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from typing import Any, cast

import httpx
from websockets.asyncio.client import connect as connect_async
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as connect_sync

from app.eas.protocol import DataFrame, decode_frame
from app.eas.transport import (
    HEADER_REQUEST_ID,
    ClientBase,
    QueueError,
    backoff,
    checked,
    judged,
    server_wait,
)

__all__ = ["AsyncQueueClient", "DataFrame", "QueueClient", "QueueError", "submit"]


class Watcher:
    """``watch(...).run()`` yields :class:`DataFrame` s, reconnecting (same consumer) when cut off."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url, self.headers = url, headers
        self.sock: Any = None
        self.closed = False

    def run(self) -> Iterator[DataFrame]:
        while not self.closed:
            try:
                with connect_sync(self.url, additional_headers=self.headers, open_timeout=5, max_size=None) as sock:
                    self.sock = sock
                    while True:
                        yield decode_frame(cast(bytes, sock.recv()))  # binary frames
            except InvalidStatus as exc:
                raise QueueError(exc.response.status_code, "watch refused") from None
            except (ConnectionClosed, OSError, TimeoutError):
                if self.closed:
                    return
                self.sock = None
                time.sleep(0.5)

    def close(self) -> None:
        self.closed = True
        if self.sock is not None:
            self.sock.close()


class QueueClient(ClientBase):
    """Synchronous client of one queue (``<service>`` or ``<service>/sink``)."""

    def __init__(self, endpoint: str = "", service_name: str = "", custom_url: str = "") -> None:
        super().__init__(endpoint, service_name, custom_url)
        self._http: httpx.Client | None = None

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(timeout=self.timeout)
        return self._http

    def _request(self, method: str, params: dict[str, Any], headers: dict[str, str] | None = None,
                 body: bytes | None = None, timeout: float | None = None) -> httpx.Response:
        send = partial(self.http.request, method, self.url(), **self._send_args(params, headers, body, timeout))
        last = QueueError(502, "no attempt made")
        for attempt in range(self.retry_count + 1):
            out = self._outcome(send)
            if isinstance(out, httpx.Response):
                return out
            last = out
            time.sleep(backoff(attempt))
        raise last

    def put(self, data: bytes | str, tags: dict[str, str] | None = None) -> tuple[str, str]:
        """Returns ``(index, request_id)`` (index as text, as EAS)."""
        body = data.encode() if isinstance(data, str) else data
        resp = self._request("POST", dict(tags or {}), body=body)
        return resp.text, resp.headers[HEADER_REQUEST_ID]

    def get(self, request_id: str | None = None, index: int = 0, length: int = 1, timeout: str = "5s",
            auto_delete: bool = True, tags: dict[str, str] | None = None) -> list[DataFrame]:
        params = self.get_params(request_id, index, length, timeout, auto_delete, tags or {})
        return self.decode(self._request("GET", params, self.accept(), timeout=self.timeout + server_wait(timeout)))

    def attributes(self) -> dict[str, str]:
        return self._request("GET", {"_attrs_": "true"}).json()

    def search(self, index: int) -> dict[str, Any]:
        try:
            return self._request("GET", {"_search_": "true", "_index_": str(index)}).json()
        except QueueError:
            return {}

    def truncate(self, index: int) -> bytes:
        return self._request("DELETE", {"_index_": index, "_trunc_": "true"}).content

    def delete(self, index: int | list[int]) -> str:
        indexes = index if isinstance(index, list) else [index]
        return self._request("DELETE", {"_indexes_": ",".join(str(i) for i in indexes)}).text

    def commit(self, index: int | list[int]) -> bytes:
        indexes = index if isinstance(index, list) else [index]
        return self._request("PUT", {"_indexes_": ",".join(str(i) for i in indexes)}).content

    def watch(self, index: int, window: int, index_only: bool = False, auto_commit: bool = False,
              tags: dict[str, str] | None = None) -> Watcher:
        url = self.watch_url(index, window, index_only, auto_commit, tags)
        return Watcher(url, {**self.identity(), **self.accept()})

    def submit(self, data: bytes | str, task_type: str = "command", tags: dict[str, str] | None = None,
               timeout: float = 3600.0, on_event: Callable[[str, str], None] | None = None) -> dict[str, Any]:
        """Put a task on this (input) queue, follow its events, return its final record."""
        _, rid = self.put(data, {**(tags or {}), "taskType": task_type})
        return follow(self.base, self.token, rid, timeout, on_event)

    def close(self) -> None:
        if self._http is not None:
            self._http.close()


def _sse_events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(event, data) pairs of a text/event-stream."""
    kind, data = "message", list[str]()
    for line in lines:
        if line == "":
            if data:
                yield kind, "\n".join(data)
            kind, data = "message", []
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


def follow(base: str, token: str, request_id: str, timeout: float = 3600.0,
           on_event: Callable[[str, str], None] | None = None) -> dict[str, Any]:
    """Stream a request's events (``log``, ``progress``, ``result``/``error``) and return its record."""
    headers = {"Authorization": token}
    with httpx.Client(timeout=httpx.Timeout(timeout, connect=5.0)) as http:
        with http.stream("GET", f"{base}/api/requests/{request_id}/events", headers=headers) as resp:
            if resp.status_code // 100 != 2:
                resp.read()
                checked(resp)
            for kind, data in _sse_events(resp.iter_lines()):
                if on_event:
                    on_event(kind, data)
        deadline = time.monotonic() + 10
        while True:  # the terminal event is emitted just after the record turns terminal
            rec = checked(http.get(f"{base}/api/requests/{request_id}", headers=headers)).json()
            if rec["state"] in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
                return rec
            time.sleep(0.05)


def submit(endpoint: str, service: str, token: str, data: bytes | str, task_type: str = "command",
           tags: dict[str, str] | None = None, timeout: float = 3600.0,
           on_event: Callable[[str, str], None] | None = None) -> dict[str, Any]:
    """Put one task on ``service`` and follow it to its result; returns the final request record."""
    q = QueueClient(endpoint, service)
    q.set_token(token)
    q.init()
    try:
        return q.submit(data, task_type, tags, timeout, on_event)
    finally:
        q.close()


class AsyncWatcher:
    """``async for df in client.watch(...).run()``."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url, self.headers = url, headers
        self.sock: Any = None
        self.closed = False

    async def run(self) -> AsyncIterator[DataFrame]:
        while not self.closed:
            try:
                if self.sock is None:
                    self.sock = await connect_async(self.url, additional_headers=self.headers, open_timeout=5,
                                                    max_size=None)
                yield decode_frame(await self.sock.recv())
            except (ConnectionClosed, OSError, TimeoutError):
                if self.closed:
                    return
                self.sock = None
                await asyncio.sleep(0.5)

    async def close(self) -> None:
        self.closed = True
        if self.sock is not None:
            await self.sock.close()


class AsyncQueueClient(ClientBase):
    """The same calls as :class:`QueueClient`, as coroutines (httpx.AsyncClient, websockets)."""

    def __init__(self, endpoint: str = "", service_name: str = "", custom_url: str = "") -> None:
        super().__init__(endpoint, service_name, custom_url)
        self._http: httpx.AsyncClient | None = None

    async def _request(self, method: str, params: dict[str, Any], headers: dict[str, str] | None = None,
                       body: bytes | None = None, timeout: float | None = None) -> httpx.Response:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.timeout)
        args = self._send_args(params, headers, body, timeout)
        last = QueueError(502, "no attempt made")
        for attempt in range(self.retry_count + 1):
            try:
                out = judged(await self._http.request(method, self.url(), **args))
            except httpx.TransportError as exc:
                out = QueueError(502, f"{self.url()}: {exc!r}")
            if isinstance(out, httpx.Response):
                return out
            last = out
            await asyncio.sleep(backoff(attempt))
        raise last

    async def put(self, data: bytes | str, tags: dict[str, str] | None = None) -> tuple[str, str]:
        resp = await self._request("POST", dict(tags or {}), body=data.encode() if isinstance(data, str) else data)
        return resp.text, resp.headers[HEADER_REQUEST_ID]

    async def get(self, request_id: str | None = None, index: int = 0, length: int = 1, timeout: str = "5s",
                  auto_delete: bool = True, tags: dict[str, str] | None = None) -> list[DataFrame]:
        params = self.get_params(request_id, index, length, timeout, auto_delete, tags or {})
        resp = await self._request("GET", params, self.accept(), timeout=self.timeout + server_wait(timeout))
        return self.decode(resp)

    async def attributes(self) -> dict[str, str]:
        return (await self._request("GET", {"_attrs_": "true"})).json()

    async def search(self, index: int) -> dict[str, Any]:
        try:
            return (await self._request("GET", {"_search_": "true", "_index_": str(index)})).json()
        except QueueError:
            return {}

    async def truncate(self, index: int) -> bytes:
        return (await self._request("DELETE", {"_index_": index, "_trunc_": "true"})).content

    async def delete(self, index: int | list[int]) -> str:
        indexes = index if isinstance(index, list) else [index]
        return (await self._request("DELETE", {"_indexes_": ",".join(str(i) for i in indexes)})).text

    async def commit(self, index: int | list[int]) -> bytes:
        indexes = index if isinstance(index, list) else [index]
        return (await self._request("PUT", {"_indexes_": ",".join(str(i) for i in indexes)})).content

    def watch(self, index: int, window: int, index_only: bool = False, auto_commit: bool = False,
              tags: dict[str, str] | None = None) -> AsyncWatcher:
        url = self.watch_url(index, window, index_only, auto_commit, tags)
        return AsyncWatcher(url, {**self.identity(), **self.accept()})

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()

