"""A query app that reports progress through the worker's endpoint (X-Scalejob-Progress-Url).

POST any body to ``/``: it POSTs 30 then 60 (JSON and plain text forms) to the URL in the header,
then answers with what the progress endpoint said. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def report(url: str, body: bytes) -> int:
    req = urllib.request.Request(url, data=body, method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.status


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        url = self.headers.get("X-Scalejob-Progress-Url")
        codes = [report(url, json.dumps({"progress": 30}).encode()), report(url, b"60")] if url else []
        data = json.dumps({"progress_url": url, "codes": codes}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    ThreadingHTTPServer(("127.0.0.1", parser.parse_args().port), Handler).serve_forever()
