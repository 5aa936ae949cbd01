"""The integrated front end: a supervised process that puts tasks with the env it was given.

The endpoint is a tiny local HTTP server that records what it receives (no scalejob API
needed), so this proves the contract a front end relies on: SCALEJOB_ENDPOINT / _SERVICE /
_TOKEN, ``POST /api/predict/{service}?taskType=command`` with ``Authorization: {token}``.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest

from app.cli.frontend import FrontendProcess
from app.core.specs import load_spec
from tests.helpers import ROOT, wait_for

EXAMPLE = ROOT / "deploy" / "examples" / "integrated.json"
TOKEN = "frontend-token-123456"


class Recorder(ThreadingHTTPServer):
    """Records (method, path, headers, body) of every request; answers like the put route."""

    def __init__(self) -> None:
        self.seen: list[dict] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Recorder

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body.decode()})
            n = len(self.server.seen)
        data = json.dumps({"index": n, "request_id": f"r{n}"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[Recorder]:
    server = Recorder()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _frontend(tmp_path: Path, endpoint: Recorder, script_args: str = "--tasks 2 --interval 0.1") -> FrontendProcess:
    spec = load_spec(EXAMPLE)
    assert spec.front_end is not None
    script = f"{sys.executable} {ROOT / 'deploy' / 'examples' / 'frontend.py'} {script_args}"
    spec = spec.model_copy(update={"front_end": spec.front_end.model_copy(update={"script": script})})
    return FrontendProcess(spec, endpoint.url + "/", TOKEN, ROOT, tmp_path / "frontend.log")


def test_front_end_puts_tasks_with_the_env_it_was_given(tmp_path: Path, endpoint: Recorder) -> None:
    fe = _frontend(tmp_path, endpoint)
    fe.start()
    try:
        wait_for(lambda: len(endpoint.seen) >= 2, 20, what="two puts from the front end")
    finally:
        fe.stop()
    for i, req in enumerate(endpoint.seen[:2], start=1):
        assert req["path"] == "/api/predict/integrated?taskType=command"
        assert req["auth"] == TOKEN
        assert req["body"] == f"python {ROOT / 'deploy' / 'examples'}/train.py --steps 2 --out model-{i}.txt"
    assert "put task 1: index 1 request r1" in (tmp_path / "frontend.log").read_text()


def test_front_end_is_restarted_when_it_dies_and_stopped_for_good(tmp_path: Path, endpoint: Recorder) -> None:
    fe = _frontend(tmp_path, endpoint, "--tasks 1 --interval 0.1")
    fe.start()
    wait_for(lambda: len(endpoint.seen) >= 1, 20, what="the first put")
    first = fe.pid
    assert first is not None
    psutil.Process(first).send_signal(signal.SIGKILL)
    wait_for(lambda: fe.restarts >= 1 and fe.alive() and fe.pid != first, 20, what="the front end to be restarted")
    wait_for(lambda: len(endpoint.seen) >= 2, 20, what="a put from the restarted front end")
    second = fe.pid
    fe.stop(grace=5)
    assert not psutil.pid_exists(second) or psutil.Process(second).status() == psutil.STATUS_ZOMBIE
    restarts = fe.restarts
    time.sleep(0.6)  # give a (wrong) restart the chance to show up
    assert fe.restarts == restarts and not fe.alive(), "a stopped front end must not come back"


def test_front_end_without_script_is_refused(tmp_path: Path, endpoint: Recorder) -> None:
    spec = load_spec(ROOT / "deploy" / "examples" / "training.json")
    with pytest.raises(ValueError, match="no front_end.script"):
        FrontendProcess(spec, endpoint.url, TOKEN, ROOT, tmp_path / "x.log")
