"""``scalejob up``: the whole stack on one machine, stopped cleanly on Ctrl-C.

Order matters both ways. Up: the embedded Redis (unless a broker is configured), the specs, the
API, the autoscaler (which owns the workers), Flower, the front ends. Down, in reverse: front
ends, Flower, then the autoscaler gets SIGTERM and warm-shuts-down its workers (running tasks
finish; past ``--stop-timeout`` they are killed and their requests are re-enqueued from their
records on the next start), then the API, then the embedded Redis flushes its AOF and exits.
No child is left behind: each runs in its own process group, and a group that outlives its
leader is killed.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from app.embedded import stop_embedded
from app.frontend import FrontendProcess


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]

    def stop(self, timeout: float) -> None:
        """SIGTERM the child's group, wait, then SIGKILL whatever is left of it."""
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.popen.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        try:  # stragglers in the group (e.g. a worker's user app) go too
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@dataclass
class Stack:
    """The processes ``scalejob up`` started, in start order."""

    log_dir: Path
    children: list[Child] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab") as out:
            popen = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        child = Child(name, popen)
        self.children.append(child)
        return child

    def dead(self) -> list[Child]:
        return [c for c in self.children if c.popen.poll() is not None]

    def stop(self, timeout: float) -> None:
        for child in reversed(self.children):
            child.stop(timeout)


def scalejob(*args: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", *args]


def run_up(specs: list[Path], port: int, flower: bool, stop_timeout: float, console: Console) -> int:
    """Start everything, print where it is, block until SIGINT/SIGTERM, stop everything."""
    from app import auth, services
    from app.connections import endpoints, state_redis
    from app.embedded import find_embedded
    from app.settings import get_settings
    from app.specs import load_spec

    settings = get_settings()
    ep = endpoints()
    embedded = find_embedded(settings.data_dir) if not (settings.broker_url or settings.redis_url) else None
    admin = settings.admin_token.get_secret_value() or secrets.token_urlsafe(24)
    env = {
        **os.environ,
        "SCALEJOB_BROKER_URL": ep.broker_url,
        "SCALEJOB_REDIS_URL": ep.redis_url,
        "SCALEJOB_DATA_DIR": str(settings.data_dir.resolve()),
        "SCALEJOB_ADMIN_TOKEN": admin,
        "SCALEJOB_API_PORT": str(port),
    }
    r = state_redis()
    deployed = [load_spec(p) for p in specs]
    for spec in deployed:
        services.save(r, spec)
    stack = Stack(settings.data_dir.resolve() / "logs")
    stopping = {"now": False}

    def on_signal(signum: int, _frame: object) -> None:
        stopping["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    frontends: list[FrontendProcess] = []
    try:
        stack.start("api", scalejob("api", "--host", settings.api_host, "--port", str(port)), env)
        stack.start("autoscaler", scalejob("autoscale"), env)
        if flower:
            stack.start("flower", scalejob("flower"), env)
        endpoint = f"http://{settings.api_host}:{port}"
        tokens = {spec.name: spec.metadata.token or auth.issue(r, spec.name) for spec in deployed}
        for spec in deployed:
            if spec.metadata.type == "ScalableJobService" and spec.front_end and spec.front_end.script:
                fe = FrontendProcess(spec, endpoint, tokens[spec.name], Path.cwd(), stack.log_dir / f"frontend-{spec.name}.log")
                fe.env.update({k: v for k, v in env.items() if k.startswith("SCALEJOB_") and k not in fe.env})
                fe.start()
                frontends.append(fe)
        console.print(f"[bold]scalejob up[/bold]  broker {ep.broker_url}  data {settings.data_dir.resolve()}")
        console.print(f"  API        {endpoint}   (docs {endpoint}/docs, dashboard {endpoint}/ui)")
        console.print(f"  admin token {admin}")
        for spec in deployed:
            console.print(f"  service    {spec.name}  POST {endpoint}/api/predict/{spec.name}?taskType={spec.allowed_task_types()[0]}  token {tokens[spec.name]}")
        console.print(f"  logs       {stack.log_dir}   — Ctrl-C stops everything")
        while not stopping["now"]:
            dead = stack.dead()
            if dead:
                console.print(f"[red]{dead[0].name} exited with code {dead[0].popen.returncode}; stopping (see {stack.log_dir / dead[0].name}.log)[/red]")
                code = 1
                break
            time.sleep(0.2)
    finally:
        console.print("stopping: running tasks finish first ...")
        for fe in frontends:
            fe.stop()
        stack.stop(stop_timeout)
        if embedded is not None or (not settings.broker_url and not settings.redis_url):
            server = find_embedded(settings.data_dir)
            if server is not None:
                stop_embedded(server)
        console.print("stopped")
    return code
