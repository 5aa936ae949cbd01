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
import base64
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, cast

import httpx
from websockets.asyncio.client import connect as connect_async
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as connect_sync

from app.eas.protocol import DataFrame, decode_frame, decode_list

HEADER_UID = "X-EAS-QueueService-Redis-Uid"
HEADER_GID = "X-EAS-QueueService-Redis-Gid"
HEADER_REQUEST_ID = "X-Eas-Queueservice-Request-Id"
PROTOBUF = "application/vnd.google.protobuf"

__all__ = ["AsyncQueueClient", "DataFrame", "QueueClient", "QueueError", "submit"]


class QueueError(Exception):
    """A refused call: ``code`` is the HTTP status, ``message`` the server's ``detail``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"[{code}] {message}")
        self.code, self.message = code, message


def _detail(resp: httpx.Response) -> str:
    try:
        return str(resp.json().get("detail", resp.text))
    except (ValueError, AttributeError):
        return resp.text


def _frames_from_json(items: list[dict[str, Any]]) -> list[DataFrame]:
    return [DataFrame(index=int(m["index"]), tags=m.get("tags") or {}, data=base64.b64decode(m.get("data_b64") or ""))
            for m in items]


def _server_wait(timeout: str) -> float:
    """Seconds the server may hold a get with ``_timeout_=timeout`` (``5s``, ``500ms``), parsed as the server does."""
    # the server's queue module (redis, settings: ~0.2 s): an SDK that never gets does not pay for it
    from app.queue.streams import parse_timeout  # noqa: PLC0415

    return parse_timeout(timeout)


class _Base:
    """What the sync and async clients share: URLs, headers, parameters."""

    def __init__(self, endpoint: str = "", service_name: str = "", custom_url: str = "") -> None:
        self.endpoint, self.service_name, self.custom_url = endpoint, service_name, custom_url
        self.token, self.uid, self.gid = "", str(uuid.uuid4()), "eas"
        self.timeout, self.retry_count, self.format = 5.0, 3, "protobuf"
        self.headers: dict[str, str] = {}

    def set_token(self, token: str) -> None:
        self.token = token

    def set_timeout(self, timeout_ms: float) -> None:
        """Per-request timeout in milliseconds, as in ``eas_prediction``."""
        self.timeout = timeout_ms / 1000.0

    def set_retry_count(self, count: int) -> None:
        self.retry_count = count

    def set_format(self, fmt: str) -> None:
        """``protobuf`` (default, as EAS) or ``json``."""
        if fmt not in ("protobuf", "json"):
            raise ValueError("format must be 'protobuf' or 'json'")
        self.format = fmt

    def add_extra_headers(self, headers: dict[str, str]) -> None:
        self.headers.update(headers)

    def init(self, uid: str | None = None, gid: str = "eas", custom_url: str = "", path_suffix: str = "") -> None:
        self.uid = uid or self.uid
        self.gid = gid
        self.custom_url = custom_url or self.custom_url
        if path_suffix:
            self.service_name = f"{self.service_name}/{path_suffix}"

    @property
    def base(self) -> str:
        domain = self.endpoint if "://" in self.endpoint else f"http://{self.endpoint}"
        return domain.rstrip("/")

    def url(self, websocket: bool = False) -> str:
        url = self.custom_url or f"{self.base}/api/predict/{self.service_name}"
        if websocket:
            url = url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        return url

    def identity(self) -> dict[str, str]:
        return {**self.headers, "Authorization": self.token, HEADER_UID: self.uid, HEADER_GID: self.gid}

    def accept(self) -> dict[str, str]:
        return {"Accept": "application/json" if self.format == "json" else PROTOBUF}

    def decode(self, resp: httpx.Response) -> list[DataFrame]:
        if resp.headers.get("content-type", "").startswith("application/json"):
            return _frames_from_json(resp.json())
        return decode_list(resp.content)

    @staticmethod
    def get_params(request_id: str | None, index: int, length: int, timeout: str, auto_delete: bool,
                   tags: dict[str, str]) -> dict[str, str]:
        params = {"_index_": str(index), "_length_": str(length), "_timeout_": str(timeout), "_raw_": "false",
                  "_auto_delete_": str(auto_delete).lower()}
        if request_id is not None:
            params["requestId"] = request_id
        return {**params, **tags}

    def watch_url(self, index: int, window: int, index_only: bool, auto_commit: bool,
                  tags: dict[str, str] | None) -> str:
        query = {"_watch_": "true", "_index_": index, "_window_": window, "_index_only_": str(index_only).lower(),
                 "_auto_commit_": str(auto_commit).lower(), **(tags or {})}
        return f"{self.url(websocket=True)}?{urllib.parse.urlencode(query)}"


def _check(resp: httpx.Response) -> httpx.Response:
    if resp.status_code // 100 != 2:
        raise QueueError(resp.status_code, _detail(resp))
    return resp


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


class QueueClient(_Base):
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
        last: Exception | None = None
        for attempt in range(self.retry_count + 1):
            try:
                resp = self.http.request(method, self.url(), params=params,
                                         headers={**self.identity(), **(headers or {})}, content=body,
                                         timeout=timeout or self.timeout)
                if resp.status_code < 500:
                    return _check(resp)
                last = QueueError(resp.status_code, _detail(resp))
            except httpx.TransportError as exc:
                last = QueueError(502, f"{self.url()}: {exc!r}")
            time.sleep(min(0.1 * 2**attempt, 2.0))
        assert last is not None
        raise last

    def put(self, data: bytes | str, tags: dict[str, str] | None = None) -> tuple[str, str]:
        """Returns ``(index, request_id)`` (index as text, as EAS)."""
        body = data.encode() if isinstance(data, str) else data
        resp = self._request("POST", dict(tags or {}), body=body)
        return resp.text, resp.headers[HEADER_REQUEST_ID]

    def get(self, request_id: str | None = None, index: int = 0, length: int = 1, timeout: str = "5s",
            auto_delete: bool = True, tags: dict[str, str] | None = None) -> list[DataFrame]:
        params = self.get_params(request_id, index, length, timeout, auto_delete, tags or {})
        return self.decode(self._request("GET", params, self.accept(), timeout=self.timeout + _server_wait(timeout)))

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
                _check(resp)
            for kind, data in _sse_events(resp.iter_lines()):
                if on_event:
                    on_event(kind, data)
        deadline = time.monotonic() + 10
        while True:  # the terminal event is emitted just after the record turns terminal
            rec = _check(http.get(f"{base}/api/requests/{request_id}", headers=headers)).json()
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


class AsyncQueueClient(_Base):
    """The same calls as :class:`QueueClient`, as coroutines (httpx.AsyncClient, websockets)."""

    def __init__(self, endpoint: str = "", service_name: str = "", custom_url: str = "") -> None:
        super().__init__(endpoint, service_name, custom_url)
        self._http: httpx.AsyncClient | None = None

    async def _request(self, method: str, params: dict[str, Any], headers: dict[str, str] | None = None,
                       body: bytes | None = None, timeout: float | None = None) -> httpx.Response:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.timeout)
        last: Exception | None = None
        for attempt in range(self.retry_count + 1):
            try:
                resp = await self._http.request(method, self.url(), params=params,
                                                headers={**self.identity(), **(headers or {})}, content=body,
                                                timeout=timeout or self.timeout)
                if resp.status_code < 500:
                    return _check(resp)
                last = QueueError(resp.status_code, _detail(resp))
            except httpx.TransportError as exc:
                last = QueueError(502, f"{self.url()}: {exc!r}")
            await asyncio.sleep(min(0.1 * 2**attempt, 2.0))
        assert last is not None
        raise last

    async def put(self, data: bytes | str, tags: dict[str, str] | None = None) -> tuple[str, str]:
        resp = await self._request("POST", dict(tags or {}), body=data.encode() if isinstance(data, str) else data)
        return resp.text, resp.headers[HEADER_REQUEST_ID]

    async def get(self, request_id: str | None = None, index: int = 0, length: int = 1, timeout: str = "5s",
                  auto_delete: bool = True, tags: dict[str, str] | None = None) -> list[DataFrame]:
        params = self.get_params(request_id, index, length, timeout, auto_delete, tags or {})
        resp = await self._request("GET", params, self.accept(), timeout=self.timeout + _server_wait(timeout))
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

