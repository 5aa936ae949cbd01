"""Fixtures for the ingress tests: a real ``scalejob api`` (uvicorn) process, the real EAS client.

Import the fixtures into a test module with ``from tests.apiserver import api, eas_python  # noqa: F401``.
The ``eas-prediction`` client pins protobuf 3.20.x, so it lives in its own venv under
``<repo>/.cache/eas-venv`` (gitignored, built once) and is driven by scripts run there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Stack
from tests.helpers import ROOT, Proc, free_port, python_argv, wait_for

ADMIN_TOKEN = "admin-token-for-tests"
EAS_VENV = ROOT / ".cache" / "eas-venv"


class ApiServer:
    """One ``scalejob api`` process on a free port; :meth:`restart` keeps the port."""

    def __init__(self, stack: Stack, port: int | None = None) -> None:
        self.stack, self.port = stack, port or free_port()
        self.env = {**stack.env, "SCALEJOB_ADMIN_TOKEN": ADMIN_TOKEN}
        self.proc: Proc | None = None
        self.logs: list[Path] = []
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        log = self.stack.tmp / f"api-{len(self.logs)}.log"
        self.logs.append(log)
        argv = python_argv("-m", "app.cli", "api", "--port", str(self.port), "--log-level", "info")
        self.proc = Proc(argv, self.env, log)
        self.stack.procs.append(self.proc)

        def up() -> bool:
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                assert self.proc is not None and self.proc.alive(), self.output()
                return False

        wait_for(up, 30, what="api server /healthz")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill_tree()

    def restart(self) -> None:
        self.kill()
        self.start()

    def output(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.logs if p.exists())

    def client(self, token: str | None = ADMIN_TOKEN, **kw: Any) -> httpx.Client:
        headers = {"Authorization": token} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=kw.pop("timeout", 30), **kw)


@pytest.fixture
def api(stack: Stack) -> Iterator[ApiServer]:
    server = ApiServer(stack)
    yield server


@pytest.fixture(scope="session")
def eas_python() -> str:
    """The venv python that has ``eas-prediction==0.36`` (built once; skipped if pip can't get it)."""
    py = EAS_VENV / "bin" / "python"
    check = [str(py), "-c", "import eas_prediction.queue_client"]
    if py.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return str(py)
    EAS_VENV.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(EAS_VENV)], check=True)
    pip = subprocess.run([str(py), "-m", "pip", "install", "-q", "eas-prediction==0.36"], capture_output=True, text=True, timeout=600)
    if pip.returncode != 0 or subprocess.run(check, capture_output=True).returncode != 0:
        reason = f"cannot install eas-prediction==0.36 into {EAS_VENV}: {pip.stderr.strip()[-300:]}"
        print(reason)
        pytest.skip(reason)
    return str(py)


EAS_PRELUDE = """
import json, sys, time
from eas_prediction import QueueClient
ARGS = json.loads(sys.argv[1])
def client(name, token=None, uid=None):
    q = QueueClient(ARGS["host"], name)
    q.set_token(token or ARGS["token"])
    q.set_timeout(20000)
    q.init(uid=uid)
    return q
def out(obj):
    print("RESULT " + json.dumps(obj), flush=True)
"""


def run_eas(eas_python: str, body: str, timeout: float = 120, **args: Any) -> Any:
    """Run ``body`` with the real EAS client; returns what it passed to ``out(...)``."""
    code = EAS_PRELUDE + textwrap.dedent(body)
    proc = subprocess.run([eas_python, "-c", code, json.dumps(args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"EAS script failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def spawn_eas(eas_python: str, body: str, log: Path, **args: Any) -> subprocess.Popen[str]:
    """Start an EAS client script in the background (output to ``log``)."""
    code = EAS_PRELUDE + textwrap.dedent(body)
    fh = open(log, "w")  # noqa: SIM115 - the background process writes to it after we return
    return subprocess.Popen([eas_python, "-c", code, json.dumps(args)], stdout=fh, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
