"""``scalejob up``: the whole stack on one machine, stopped cleanly on Ctrl-C.

Order matters both ways. Up: the embedded Redis (unless a broker is configured), the specs, the
API, the autoscaler (which owns the workers), Flower, the front ends. Down, in reverse: front
ends, Flower, then the autoscaler gets SIGTERM and warm-shuts-down its workers (running tasks
finish; past ``--stop-timeout`` they are killed and their requests are re-enqueued from their
records on the next start), then the API, then the embedded Redis flushes its AOF and exits.
No child is left behind: each runs in its own session, and every process seen in its tree
(workers and user apps have sessions of their own) that outlives it is killed by pid.
Second Ctrl-C: stop waiting for running tasks now.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis
from rich.console import Console

from app.cli.flower import basic_auth
from app.cli.frontends import FrontEnds
from app.core.connections import Endpoints, endpoints, redacted, state_redis
from app.core.embedded import EmbeddedRedis, find_embedded, stop_embedded
from app.core.private import exposure
from app.core.settings import Settings, get_settings
from app.core.specs import ServiceSpec, load_spec
from app.queue import services
from autoscale import leader
from autoscale.backends.procs import recorded_processes


@dataclass
class Child:
    """One process ``up`` started, with every descendant it was ever seen to have.

    Workers and user apps run in sessions of their own (a Ctrl-C on the terminal must not reach
    them, see ``autoscale/backends/local.py``), so killing the child's process group would miss
    them; the descendants seen while waiting for the child are killed by pid instead (psutil
    checks the start time, so a reused pid is never hit).
    """

    name: str
    popen: subprocess.Popen[bytes]
    seen: dict[int, psutil.Process] = field(default_factory=dict)

    def observe(self, extra: Iterable[psutil.Process] = ()) -> None:
        """Remember the child's current descendants (and ``extra``: processes it adopted)."""
        try:
            tree = psutil.Process(self.popen.pid).children(recursive=True)
        except psutil.Error:
            tree = []
        for p in [*tree, *extra]:
            if p.pid not in self.seen or not _running(self.seen[p.pid]):
                self.seen[p.pid] = p

    def stop(
        self, timeout: float, extra: Callable[[], list[psutil.Process]] = list, force: threading.Event | None = None
    ) -> bool:
        """SIGTERM the child, wait up to ``timeout`` s, then SIGKILL it and every descendant left.

        Returns True when it exited by itself within ``timeout``; only then are the processes of
        ``extra`` (recorded workers it may have adopted) left alone: it stopped them itself.
        """
        self.observe()
        _killpg(self.popen.pid, signal.SIGTERM)
        deadline, clean = time.monotonic() + timeout, True
        while self.popen.poll() is None:
            if time.monotonic() > deadline or (force is not None and force.is_set()):
                clean = False
                self.observe(extra())
                _killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
                break
            self.observe()
            time.sleep(0.1)
        _killpg(self.popen.pid, signal.SIGKILL)  # stragglers in its group
        left = [p for p in self.seen.values() if _running(p)]
        for p in left:
            if _leads_group(p):
                _killpg(p.pid, signal.SIGKILL)
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(left, timeout=5)
        return clean


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _leads_group(p: psutil.Process) -> bool:
    try:
        return os.getpgid(p.pid) == p.pid
    except OSError:
        return False


QUICK_STOP = 15.0  # seconds the API, Flower and the front ends get (they hold no task)


@dataclass
class Stack:
    """The processes ``scalejob up`` started, in start order."""

    log_dir: Path
    children: list[Child] = field(default_factory=list)
    force: threading.Event = field(default_factory=threading.Event)  # a second Ctrl-C: stop waiting

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab") as out:
            popen = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        child = Child(name, popen)
        self.children.append(child)
        return child

    def dead(self) -> list[Child]:
        return [c for c in self.children if c.popen.poll() is not None]

    def stop(self, stop_timeout: float, workers: Callable[[], list[psutil.Process]]) -> bool:
        """Stop in reverse start order; the autoscaler gets ``stop_timeout`` s for running tasks.

        ``workers``: the worker processes recorded in Redis (the autoscaler may have adopted
        some it did not start: they are not its descendants). False when something was killed.
        """
        clean = True
        for child in reversed(self.children):
            if child.name == "autoscaler":
                clean &= child.stop(stop_timeout, workers, self.force)
            else:
                clean &= child.stop(QUICK_STOP, force=self.force)
        return clean


def scalejob(*args: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", *args]


def _stop_redis(server: EmbeddedRedis) -> None:
    """SHUTDOWN (the AOF is flushed) and wait until the server process is gone."""
    try:
        pid = int((server.directory / "redis.pid").read_text().strip())
        proc: psutil.Process | None = psutil.Process(pid)
    except (OSError, ValueError, psutil.Error):
        proc = None
    stop_embedded(server)
    if proc is not None:
        psutil.wait_procs([proc], timeout=10)
        if _running(proc):
            proc.kill()


def _wait_for_autoscaler(r: Any, stack: Stack, stopping: threading.Event, timeout: float = 60.0) -> None:
    """Until the autoscaler holds its leader lock (or a child died, or Ctrl-C): ``submit`` checks it."""
    deadline = time.monotonic() + timeout
    while (not leader.held(r) and not stack.dead() and not stopping.is_set()
           and time.monotonic() < deadline):
        stopping.wait(0.1)


def flower_login(environ: dict[str, str]) -> tuple[dict[str, str], str]:
    """Flower's login for ``up --flower``: the configured one, else a password made for this run.

    Why make one: Flower never runs without a login, and a user who asked for ``--flower``
    should get a dashboard that opens, its password printed once like the admin token. A
    configured password is never printed. Raises ``FlowerAuthMissing`` for half a login.
    """
    if basic_auth(environ) is not None:
        return {}, "login from SCALEJOB_FLOWER_USER/PASSWORD (or FLOWER_BASIC_AUTH)"
    password = secrets.token_urlsafe(16)
    return {"SCALEJOB_FLOWER_USER": "admin", "SCALEJOB_FLOWER_PASSWORD": password}, f"user admin  password {password}"


@dataclass
class Setup:
    """What the start-up steps of one ``up`` share: where the stack lives and what it runs."""

    settings: Settings
    data_dir: Path
    endpoints: Endpoints
    embedded: EmbeddedRedis | None  # the embedded Redis this run stops at the end; None: not ours
    admin: str
    env: dict[str, str]
    r: redis.Redis
    deployed: list[ServiceSpec]
    port: int
    flower_port: int | None

    @property
    def endpoint(self) -> str:
        return f"http://{self.settings.api_host}:{self.port}"


def prepare(specs: list[Path], port: int, flower_port: int | None) -> Setup:
    """Resolve the Redis (starting the embedded one of the data dir when none is configured),
    the children's environment and the admin token, and deploy ``specs``."""
    settings = get_settings()
    data_dir = settings.data_dir.resolve()
    ep = endpoints()  # starts the embedded Redis of the data dir when no Redis is configured
    embedded = find_embedded(settings.data_dir)
    if embedded is not None and ep.redis_url != embedded.url:
        embedded = None  # a configured Redis: not ours to stop
    admin = settings.admin_token.get_secret_value() or secrets.token_urlsafe(24)
    env = {
        **os.environ,
        "SCALEJOB_BROKER_URL": ep.broker_url,
        "SCALEJOB_REDIS_URL": ep.redis_url,
        "SCALEJOB_DATA_DIR": str(data_dir),
        "SCALEJOB_ADMIN_TOKEN": admin,
        "SCALEJOB_API_PORT": str(port),
    }
    r = state_redis()
    deployed = [load_spec(p) for p in specs]
    for spec in deployed:
        services.save(r, spec)
    return Setup(settings, data_dir, ep, embedded, admin, env, r, deployed, port, flower_port)


def stop_on_signals(stack: Stack, stopping: threading.Event, console: Console) -> None:
    """SIGINT/SIGTERM set ``stopping``; a second one also stops waiting for running tasks."""

    def on_signal(signum: int, _frame: object) -> None:
        if stopping.is_set():
            stack.force.set()
            console.print("second signal: not waiting for running tasks (they are re-enqueued on the next start)",
                          soft_wrap=True)
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)


def start_processes(stack: Stack, up: Setup) -> str:
    """Start the API, the autoscaler and (with a Flower port) Flower; return how to log in to Flower."""
    host = up.settings.api_host
    stack.start("api", scalejob("api", "--host", host, "--port", str(up.port)), up.env)
    stack.start("autoscaler", scalejob("autoscale"), up.env)
    if up.flower_port is None:
        return ""
    flower_env, flower_desc = flower_login(up.env)
    argv = scalejob("flower", "--address", host, "--port", str(up.flower_port))
    stack.start("flower", argv, {**up.env, **flower_env})
    return flower_desc


def print_banner(say: Callable[[str], None], up: Setup, stack: Stack, tokens: dict[str, str], flower_desc: str) -> None:
    """Where everything is: the API and its admin token, Flower, each service's URL and token, the logs."""
    endpoint = up.endpoint
    say(f"[bold]scalejob up[/bold]  broker {redacted(up.endpoints.broker_url)}  data {up.data_dir}")
    if (warning := exposure(up.data_dir)) is not None:
        say(f"[yellow]warning:[/yellow] {warning}")
    say(f"  API         {endpoint}   (docs {endpoint}/docs, dashboard {endpoint}/ui)")
    say(f"  admin token {up.admin}")
    if up.flower_port is not None:
        say(f"  Flower      http://{up.settings.api_host}:{up.flower_port}   {flower_desc}")
    for spec in up.deployed:
        url = f"{endpoint}/api/predict/{spec.name}?taskType={spec.allowed_task_types()[0]}"
        say(f"  service     {spec.name}  POST {url}  token {tokens[spec.name]}")
    if up.embedded is not None:
        same = f"SCALEJOB_DATA_DIR={up.data_dir}"
    else:
        same = f"SCALEJOB_REDIS_URL={redacted(up.endpoints.redis_url)}"
    say(f"  CLI         {same} scalejob submit|status|logs ...   (the same Redis as this stack)")
    say(f"  logs        {stack.log_dir}   — Ctrl-C stops everything (running tasks finish first)")


def supervise(frontends: FrontEnds, stack: Stack, stopping: threading.Event, say: Callable[[str], None]) -> int:
    """Keep the front ends in step with the specs until a signal (0) or a child's death (1)."""
    while not stopping.is_set():
        try:
            frontends.sync()
        except Exception as exc:  # noqa: BLE001 - a Redis hiccup must not end the stack; next loop retries
            say(f"[yellow]front ends: {exc}[/yellow]")
        dead = stack.dead()
        if dead:
            log = stack.log_dir / f"{dead[0].name}.log"
            say(f"[red]{dead[0].name} exited with code {dead[0].popen.returncode}; stopping (see {log})[/red]")
            return 1
        stopping.wait(0.2)
    return 0


def shut_down(say: Callable[[str], None], up: Setup, stack: Stack, frontends: FrontEnds | None,
              stop_timeout: float) -> None:
    """Stop in reverse: front ends, the children (running tasks finish first), then our embedded Redis."""
    say(f"stopping: running tasks finish first (up to --stop-timeout {stop_timeout:g}s; "
        "Ctrl-C again to stop now) ...")
    if frontends is not None:
        frontends.stop_all()
    if not stack.stop(stop_timeout, lambda: recorded_processes(up.r)):
        say("[yellow]some processes did not stop in time and were killed; "
            "interrupted tasks are re-enqueued from their records on the next start[/yellow]")
    if up.embedded is not None:
        _stop_redis(up.embedded)
    say("stopped")


def run_up(specs: list[Path], port: int, flower_port: int | None, stop_timeout: float, console: Console) -> int:
    """Start everything, print where it is, block until SIGINT/SIGTERM, stop everything."""
    up = prepare(specs, port, flower_port)
    stack = Stack(up.data_dir / "logs")
    stopping = threading.Event()
    stop_on_signals(stack, stopping, console)
    frontends: FrontEnds | None = None
    say = lambda text: console.print(text, soft_wrap=True)  # noqa: E731 - URLs and tokens must stay copyable
    try:
        flower_desc = start_processes(stack, up)
        _wait_for_autoscaler(up.r, stack, stopping)  # the banner means "submit works": a task finds a leader
        # front ends start once the API answers (app/cli/frontends.py)
        frontends = FrontEnds(up.r, up.endpoint, Path.cwd(), stack.log_dir, up.env)
        tokens = {spec.name: frontends.token(spec) for spec in up.deployed}
        print_banner(say, up, stack, tokens, flower_desc)
        return supervise(frontends, stack, stopping, say)
    finally:
        shut_down(say, up, stack, frontends, stop_timeout)
