"""What every benchmark shares: an isolated world (Redis URL, key prefix, temp dir), worker
processes (scalejob and plain Celery), percentiles and markdown tables.

Isolation: each world gets its own key prefix (``SCALEJOB_KEY_PREFIX``) and unique service and
queue names, so a benchmark can share a Redis DB with tests without either seeing the other.
Worker processes are real ``python -m app.cli worker SERVICE`` (or ``celery worker``) children
in their own session, killed with their whole tree when the world closes.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from tests.helpers import ROOT, Proc, python_argv, wait_for

DEFAULT_REDIS = os.environ.get("SCALEJOB_BENCH_REDIS", "redis://127.0.0.1:6379/6")
QUIET = "WARNING"  # both sides log at the same level: per-task INFO lines would tax the hot path


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]."""
    s = sorted(values)
    if not s:
        return math.nan
    k = (len(s) - 1) * q / 100
    lo = math.floor(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats are shown with 3 significant decimals."""

    def cell(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def use_world_in_this_process(env: dict[str, str]) -> None:
    """Point this process's settings, Redis clients and Celery app at a world's env.

    The benchmark process enqueues through ``app.queue.put.put``, which reads the cached settings
    and the shared ``celery_app``: both must follow the world, not the caller's environment.
    """
    from app.core import connections
    from app.core.celery_app import celery_app, celery_config
    from app.core.settings import get_settings
    from benchmarks import plain_app

    for k, v in env.items():
        if k.startswith("SCALEJOB_"):
            os.environ[k] = v
    get_settings.cache_clear()
    connections.endpoints.cache_clear()
    connections._client.cache_clear()
    broker = connections.endpoints().broker_url
    repoint(celery_app, celery_config(broker, get_settings().visibility_timeout))
    repoint(plain_app.tuned, celery_config(broker, get_settings().visibility_timeout))
    repoint(plain_app.defaults, {"broker_url": broker})


def repoint(app: Any, config: dict[str, Any]) -> None:
    """Make a Celery app publish to a new broker from now on.

    The old connection pool is left open, not closed: kombu keeps one pool per broker URL for
    all apps in the process, so closing it would break another app that still uses that URL.
    """
    app.conf.update(config)
    app._pool = None
    app.amqp._producer_pool = None


@dataclass
class World:
    """One benchmark's scalejob world: env for children, a Redis client, child processes."""

    redis_url: str
    broker_url: str
    prefix: str
    tmp: Path
    procs: list[Proc] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "SCALEJOB_BROKER_URL": self.broker_url,
            "SCALEJOB_REDIS_URL": self.redis_url,
            "SCALEJOB_KEY_PREFIX": self.prefix,
            "SCALEJOB_DATA_DIR": str(self.tmp / "data"),
            "PYTHONPATH": str(ROOT),
        }

    @property
    def r(self) -> redis.Redis:
        from app.core.connections import state_redis

        return state_redis()

    def name(self, base: str) -> str:
        """A name no other run or engineer uses."""
        return f"{self.prefix}-{base}-{uuid.uuid4().hex[:4]}"

    def deploy_command_service(self, base: str) -> Any:
        """Register a plain command service (1 worker thread) and return its spec."""
        from app.core.specs import parse_spec
        from app.queue import services

        spec = parse_spec({"metadata": {"name": self.name(base)}})
        services.save(self.r, spec)
        return spec

    def _spawn(self, argv: list[str], label: str) -> Proc:
        proc = Proc(argv, self.env, self.tmp / f"{label}-{len(self.procs)}.log", cwd=ROOT)
        self.procs.append(proc)
        return proc

    def scalejob_worker(self, service: str, name: str, module: str = "app.cli") -> Proc:
        """A real scalejob worker process (``module`` = ``benchmarks.noop_worker`` for the no-op body)."""
        if module == "app.cli":
            argv = python_argv("-m", "app.cli", "worker", service, "--name", name, "--loglevel", QUIET)
        else:
            argv = python_argv("-m", module, service, name)
        return self._spawn(argv, "scalejob")

    def plain_worker(self, app: str, queue: str, name: str, pool: str | None = None, concurrency: int = 1, same_flags: bool = False) -> Proc:
        """A plain ``celery worker`` of ``benchmarks.plain_app:<app>`` (``defaults`` or ``tuned``).

        ``pool=None`` keeps Celery's default pool (prefork). ``same_flags`` adds the flags a
        scalejob worker runs with (no mingle, no gossip), so only the task path differs.
        """
        argv = python_argv("-m", "celery", "-A", f"benchmarks.plain_app:{app}", "worker", "-Q", queue, "-n", name,
                           "-c", str(concurrency), "--loglevel", QUIET)
        if pool:
            argv.append(f"--pool={pool}")
        if same_flags:
            argv += ["--without-mingle", "--without-gossip"]
        return self._spawn(argv, "plain")

    def wait_scalejob_idle(self, service: str, n: int, timeout: float = 60) -> None:
        from app.queue.workers import list_workers

        wait_for(lambda: len([w for w in list_workers(self.r, service) if w.state == "idle"]) >= n, timeout,
                 what=f"{n} idle scalejob workers of {service}")

    def wait_plain_ready(self, names: Sequence[str], timeout: float = 60) -> None:
        from benchmarks.plain_app import ready_key

        wait_for(lambda: all(self.r.exists(ready_key(n)) for n in names), timeout, what=f"plain workers {list(names)} ready")

    def stop(self, proc: Proc) -> None:
        proc.kill_tree()

    def close(self) -> None:
        for p in self.procs:
            p.kill_tree()
        # every name this world made contains its prefix: scalejob keys, queues, kombu bindings
        r = self.r
        doomed = list(r.scan_iter(match=f"*{self.prefix}*", count=1000))
        for i in range(0, len(doomed), 500):
            r.delete(*doomed[i : i + 500])


@contextmanager
def world(redis_url: str = DEFAULT_REDIS, label: str = "bench") -> Iterator[World]:
    """An isolated world on ``redis_url`` (also the broker); torn down with all its processes."""
    prefix = f"sjb{label}{uuid.uuid4().hex[:6]}"
    tmp = Path(tempfile.mkdtemp(prefix=f"scalejob-{label}-"))
    w = World(redis_url=redis_url, broker_url=redis_url, prefix=prefix, tmp=tmp)
    saved = {k: v for k, v in os.environ.items() if k.startswith("SCALEJOB_")}
    use_world_in_this_process(w.env)
    try:
        yield w
    finally:
        try:
            w.close()
        finally:
            for k in [k for k in os.environ if k.startswith("SCALEJOB_")]:
                del os.environ[k]
            os.environ.update(saved)
            shutil.rmtree(tmp, ignore_errors=True)


def wait_until(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.005) -> Any:
    """``wait_for`` with a fine poll interval: benchmarks time what they wait on."""
    return wait_for(cond, timeout, interval=interval, what=what)
