"""A tiny loopback HTTP endpoint where a query service's user app reports a request's progress.

Each query task is sent to the user app with the header ``X-Scalejob-Progress-Url:
http://127.0.0.1:<port>/progress/<request_id>``; the app POSTs a number 0-100 to it, as plain
text (``42``) or JSON (``{"progress": 42}``). Only requests running on this instance right now
are accepted (others get 404), so a stale URL cannot move a finished record. Standard library
HTTP server on 127.0.0.1 in a daemon thread: nothing outside the machine can reach it. One
:class:`ProgressServer` per worker, owned by its user-app bootstep (``workers/steps.py``).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HEADER = "X-Scalejob-Progress-Url"
MAX_BODY = 4096

def parse(body: bytes) -> float:
    """A progress value from ``42``, ``42%``, ``42.5`` or ``{"progress": 42}``; ValueError otherwise."""
    text = body.decode("utf-8").strip()
    value = json.loads(text).get("progress") if text.startswith("{") else text.rstrip("%")
    number = float(value)
    if not 0 <= number <= 100:
        raise ValueError(f"progress must be between 0 and 100, got {number:g}")
    return number


class _Endpoint(ThreadingHTTPServer):
    """The HTTP server, with the running requests it accepts progress for (request id -> callback)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.active: dict[str, Callable[[float], None]] = {}
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server: _Endpoint

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        parts = self.path.strip("/").split("/")
        callback = None
        if len(parts) == 2 and parts[0] == "progress":
            with self.server.lock:
                callback = self.server.active.get(parts[1])
        if callback is None:
            return self._reply(404, "no such running request on this instance")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return self._reply(413, "progress body too large")
        try:
            callback(parse(self.rfile.read(length)))
        except (ValueError, AttributeError, UnicodeDecodeError, TypeError) as exc:
            return self._reply(400, str(exc) or "progress must be a number")
        self._reply(204, "")

    def _reply(self, status: int, text: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


class ProgressServer:
    """One worker's progress endpoint: started once, stopped with the worker."""

    def __init__(self) -> None:
        self._endpoint: _Endpoint | None = None

    def start(self) -> int:
        """Start the endpoint (once); returns its port."""
        if self._endpoint is None:
            self._endpoint = _Endpoint()
            threading.Thread(target=self._endpoint.serve_forever, name="scalejob-progress", daemon=True).start()
        return int(self._endpoint.server_address[1])

    def stop(self) -> None:
        if self._endpoint is not None:
            self._endpoint.shutdown()
            self._endpoint.server_close()
            self._endpoint = None

    @contextlib.contextmanager
    def tracking(self, request_id: str, on_progress: Callable[[float], None]) -> Iterator[str | None]:
        """Accept progress for ``request_id`` while the block runs; yields its URL (None: no endpoint)."""
        endpoint = self._endpoint
        if endpoint is None:
            yield None
            return
        with endpoint.lock:
            endpoint.active[request_id] = on_progress
        try:
            yield f"http://127.0.0.1:{endpoint.server_address[1]}/progress/{request_id}"
        finally:
            with endpoint.lock:
                endpoint.active.pop(request_id, None)
