"""``scalejob demo``: the whole path on one machine, with nothing installed but scalejob.

Starts the embedded Redis in a fresh data dir (unless a broker is configured), deploys a demo
service that takes both task kinds, runs one real worker process, submits a training-style
command task (its log lines stream live) and an inference query task, prints both results and
stops everything it started.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import cast

from rich.console import Console

from app.cli.run import fail, follow
from app.core.connections import endpoints, redacted, state_redis
from app.core.embedded import find_embedded, stop_embedded
from app.core.settings import get_settings
from app.core.specs import parse_spec
from app.queue import put as inqueue
from app.queue import records, services
from workers.query import result_body

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _examples() -> Path:
    for candidate in (EXAMPLES, Path.cwd() / "deploy" / "examples"):
        if (candidate / "slow_app.py").exists():
            return candidate
    raise FileNotFoundError("deploy/examples/slow_app.py not found: run the demo from a scalejob checkout")


def run_demo(console: Console) -> int:
    """The whole path once (deploy, worker, a command and a query task); 0 when both succeeded."""
    examples = _examples()
    data_dir = Path(os.environ.get("SCALEJOB_DATA_DIR") or tempfile.mkdtemp(prefix="scalejob-demo-"))
    os.environ["SCALEJOB_DATA_DIR"] = str(data_dir)
    get_settings.cache_clear()
    ep = endpoints()
    console.print(f"[bold]broker[/bold] {redacted(ep.broker_url)}   [bold]data[/bold] {data_dir}")
    r = state_redis()
    port = _free_port()
    spec = parse_spec(
        {
            "containers": [{"command": f"{sys.executable} {examples / 'slow_app.py'} --port {port}", "port": port}],
            "metadata": {"name": "demo", "type": "ScalableJob", "task_types": ["command", "query"]},
        }
    )
    services.save(r, spec)
    worker = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "demo", "--loglevel", "WARNING"],
                              env=os.environ.copy())
    code = 1
    try:
        console.print(f"[bold]worker[/bold] pid {worker.pid} started; submitting a command task")
        cmd = f"{sys.executable} {examples / 'train.py'} --steps 5 --step-seconds 0.2"
        _, rid = inqueue.put(r, spec, "command", cmd.encode())
        rec = follow(r, rid, 120, fail)
        exit_code = rec.result and rec.result.get("exit_code")
        console.print(f"command task {rid}: [bold]{rec.state}[/bold] exit_code={exit_code}")
        _, qid = inqueue.put(r, spec, "query", b"hello scalejob")
        qrec = follow(r, qid, 120, fail)
        body = result_body(qrec.result).decode(errors="replace") if qrec.result else qrec.error
        http = qrec.result and qrec.result.get("status")
        console.print(f"query task {qid}: [bold]{qrec.state}[/bold] HTTP {http} {body}")
        code = 0 if rec.state == qrec.state == "succeeded" else 1
        command_state = cast(records.Record, records.get(r, rid)).to_dict()["state"]
        console.print(json.dumps({"command": command_state, "query": qrec.state}))
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        server = find_embedded(data_dir)
        if server is not None and not os.environ.get("SCALEJOB_REDIS_URL"):
            stop_embedded(server)
    console.print("[green]demo finished[/green]" if code == 0 else "[red]demo failed[/red]")
    time.sleep(0)
    return code
