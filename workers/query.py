"""Running a ``query`` task: POST the payload to the user app this instance supervises.

Connection errors (the app is restarting, not yet listening) are retried a bounded number of
times with backoff; after that the task fails with a message that says so. The response body is
kept byte-exact in the output queue (raw bytes). In the request record's result it is readable:
``body`` as text when it is UTF-8 (JSON included, as the app sent it), ``body_b64`` only when it is
binary, so ``submit``, the API and the dashboard show what the app answered.
"""

from __future__ import annotations

import base64
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx


class UserAppUnavailable(RuntimeError):
    """The user app did not accept the request after all retries."""


@dataclass
class QueryOutcome:
    status: int
    body: bytes
    duration: float
    attempts: int
    content_type: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def as_result(self) -> dict[str, object]:
        out: dict[str, object] = {"status": self.status, **body_fields(self.body), "duration": round(self.duration, 3),
                                  "attempts": self.attempts}
        if self.content_type:
            out["content_type"] = self.content_type
        return out


def body_fields(body: bytes) -> dict[str, str]:
    """``{"body": text}`` for a UTF-8 body, else ``{"body_b64": ...}`` (binary stays exact)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return {"body_b64": base64.b64encode(body).decode()}
    if "\x00" in text:  # valid UTF-8 but not text a user reads
        return {"body_b64": base64.b64encode(body).decode()}
    return {"body": text}


def result_body(result: dict[str, object]) -> bytes:
    """The exact bytes of a query result's body, whichever field holds it."""
    if "body_b64" in result:
        return base64.b64decode(str(result["body_b64"]))
    return str(result.get("body", "")).encode()


@functools.cache
def _client() -> httpx.Client:
    """One HTTP client per worker process, shared by its task threads (httpx clients are thread-safe).

    Why: building a client costs ~40 ms (it loads a TLS context even for plain HTTP), twenty times
    a small query to a local app; a client per task made that the bulk of a query's overhead.
    """
    return httpx.Client()


def run_query(
    port: int,
    path: str,
    payload: bytes,
    headers: dict[str, str],
    timeout: float | None = None,
    retries: int = 5,
    backoff: float = 0.5,
    squatter: Callable[[], str | None] = lambda: None,
) -> QueryOutcome:
    """POST once the app accepts connections; raise :class:`UserAppUnavailable` when it never does.

    ``squatter`` is asked before every attempt: a reason there (another process holds the app's
    port) ends the task with that reason and the payload is never sent.
    """
    url = f"http://127.0.0.1:{port}/{path.lstrip('/')}"
    started = time.monotonic()
    last: Exception | None = None
    for attempt in range(1, retries + 2):
        if (why := squatter()) is not None:
            raise UserAppUnavailable(why)
        try:
            resp = _client().post(url, content=payload, headers=headers, timeout=httpx.Timeout(timeout, connect=5.0))
            return QueryOutcome(resp.status_code, resp.content, time.monotonic() - started, attempt,
                                resp.headers.get("content-type", ""))
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
            last = exc
            if attempt <= retries:
                time.sleep(min(backoff * 2 ** (attempt - 1), 5.0))
    raise UserAppUnavailable(f"user app at {url} unavailable after {retries + 1} attempts: {last!r}")
