"""What the SDK clients share: the queue URL, identity headers, decoding, and the retry rule.

Split from :mod:`app.eas.client` so the sync and the async client (both there) build on one base:
retry only on 5xx and connection errors, with the same backoff; a 4xx is raised at once.
"""

from __future__ import annotations

import base64
import urllib.parse
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from app.eas.protocol import DataFrame, decode_list

HEADER_UID = "X-EAS-QueueService-Redis-Uid"
HEADER_GID = "X-EAS-QueueService-Redis-Gid"
HEADER_REQUEST_ID = "X-Eas-Queueservice-Request-Id"
PROTOBUF = "application/vnd.google.protobuf"


class QueueError(Exception):
    """A refused call: ``code`` is the HTTP status, ``message`` the server's ``detail``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"[{code}] {message}")
        self.code, self.message = code, message


def detail_of(resp: httpx.Response) -> str:
    try:
        return str(resp.json().get("detail", resp.text))
    except (ValueError, AttributeError):
        return resp.text


def frames_from_json(items: list[dict[str, Any]]) -> list[DataFrame]:
    return [DataFrame(index=int(m["index"]), tags=m.get("tags") or {}, data=base64.b64decode(m.get("data_b64") or ""))
            for m in items]


def server_wait(timeout: str) -> float:
    """Seconds the server may hold a get with ``_timeout_=timeout`` (``5s``, ``500ms``), parsed as the server does."""
    # the server's queue module (redis, settings: ~0.2 s): an SDK that never gets does not pay for it
    from app.queue.streams import parse_timeout  # noqa: PLC0415

    return parse_timeout(timeout)


class ClientBase:
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

    def _send_args(self, params: dict[str, Any], headers: dict[str, str] | None, body: bytes | None,
                   timeout: float | None) -> dict[str, Any]:
        """The keyword arguments of one HTTP attempt (the same for the sync and the async client)."""
        return {"params": params, "headers": {**self.identity(), **(headers or {})}, "content": body,
                "timeout": timeout or self.timeout}

    def _outcome(self, send: Callable[[], httpx.Response]) -> httpx.Response | QueueError:
        """One attempt of the sync client: a transport failure becomes a 502 to retry on."""
        try:
            return judged(send())
        except httpx.TransportError as exc:
            return QueueError(502, f"{self.url()}: {exc!r}")

    def identity(self) -> dict[str, str]:
        return {**self.headers, "Authorization": self.token, HEADER_UID: self.uid, HEADER_GID: self.gid}

    def accept(self) -> dict[str, str]:
        return {"Accept": "application/json" if self.format == "json" else PROTOBUF}

    def decode(self, resp: httpx.Response) -> list[DataFrame]:
        if resp.headers.get("content-type", "").startswith("application/json"):
            return frames_from_json(resp.json())
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


def judged(resp: httpx.Response) -> httpx.Response | QueueError:
    """One attempt's answer: the checked response, or the 5xx to retry on (4xx raise at once)."""
    return checked(resp) if resp.status_code < 500 else QueueError(resp.status_code, detail_of(resp))


def backoff(attempt: int) -> float:
    return min(0.1 * 2**attempt, 2.0)


def checked(resp: httpx.Response) -> httpx.Response:
    if resp.status_code // 100 != 2:
        raise QueueError(resp.status_code, detail_of(resp))
    return resp
