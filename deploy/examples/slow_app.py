"""A tiny inference app for query services: it "infers" slowly and echoes what it got.

Run as ``python slow_app.py --port 8501``. POST any body to ``/``; the response is JSON with the
body's length, its upper-cased text and how long the "inference" took. ``?delay=`` or the
``X-Delay`` header sets the seconds to take (default 0.2). Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        delay = float(self.headers.get("X-Delay") or os.environ.get("SLOW_APP_DELAY", "0.2"))
        time.sleep(delay)
        text = body.decode("utf-8", errors="replace")
        out = {"length": len(body), "upper": text.upper(), "took": delay, "pid": os.getpid()}
        data = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8501)
    ThreadingHTTPServer(("127.0.0.1", parser.parse_args().port), Handler).serve_forever()
