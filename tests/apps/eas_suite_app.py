"""The user app the EAS client's own test suite expects behind a query service.

``test_watch_with_inference_service_*`` put ``[{}]`` on the input queue and check that each
result is a JSON list holding one object with two keys. POST any body to ``/``: the answer is
``[{"echo": <body as text>, "ok": true}]``; a body ``status:NNN`` gets that HTTP status (and
``"ok": false``). Standard library only.
"""

from __future__ import annotations

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status = 200
        if body.startswith(b"status:"):  # for the synchronous-predict tests: answer with that status
            status = int(body[7:10])
        data = json.dumps([{"echo": body.decode("utf-8", errors="replace"), "ok": status == 200}]).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8501)
    ThreadingHTTPServer(("127.0.0.1", parser.parse_args().port), Handler).serve_forever()
