"""Fixtures that start real things: Redis (the machine's, or the embedded one), worker processes.

Isolation: each test gets its own key prefix and service names (unique per test), and each
pytest session its own Redis DB (``SCALEJOB_TEST_DB``, default 1), so tests can't see each
other. ``SCALEJOB_TEST_BROKER=amqp`` runs the same tests with RabbitMQ as the Celery broker.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.helpers import ROOT, Proc, python_argv, wait_for

MACHINE_REDIS = "redis://127.0.0.1:6379"
AMQP_URL = os.environ.get("SCALEJOB_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


def _reachable(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def amqp_reachable() -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1):
            return True
    except OSError:
        return False


def reset_caches() -> None:
    """Forget per-process cached settings and clients after the environment changed."""
    from app.core import connections
    from app.core.settings import get_settings

    get_settings.cache_clear()
    connections.endpoints.cache_clear()
    connections._client.cache_clear()


@pytest.fixture(scope="session")
def redis_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Redis the tests use: the machine's on 6379 when it answers, else an embedded one."""
    db = int(os.environ.get("SCALEJOB_TEST_DB", "1"))
    if _reachable(MACHINE_REDIS):
        yield f"{MACHINE_REDIS}/{db}"
        return
    from app.core.embedded import ensure_embedded, stop_embedded

    server = ensure_embedded(tmp_path_factory.mktemp("embedded"))
    yield f"redis://127.0.0.1:{server.port}/{db}"
    stop_embedded(server)


@pytest.fixture(scope="session")
def broker_url(redis_base: str) -> str:
    if os.environ.get("SCALEJOB_TEST_BROKER") == "amqp":
        if not amqp_reachable():
            pytest.skip("SCALEJOB_TEST_BROKER=amqp but no RabbitMQ answers on 127.0.0.1:5672")
        return AMQP_URL
    return redis_base


class Stack:
    """One test's scalejob world: env, a Redis client, spec deploys and worker processes."""

    def __init__(self, tmp: Path, redis_url: str, broker_url: str, prefix: str) -> None:
        self.tmp, self.redis_url, self.broker_url, self.prefix = tmp, redis_url, broker_url, prefix
        self.env = {
            **os.environ,
            "SCALEJOB_BROKER_URL": broker_url,
            "SCALEJOB_REDIS_URL": redis_url,
            "SCALEJOB_KEY_PREFIX": prefix,
            "SCALEJOB_DATA_DIR": str(tmp / "data"),
            "PYTHONPATH": str(ROOT),
        }
        self.r = redis.Redis.from_url(redis_url)
        self.procs: list[Proc] = []

    def service_name(self, base: str = "svc") -> str:
        return f"{base}-{uuid.uuid4().hex[:6]}"

    def deploy(self, spec: dict[str, Any]) -> Any:
        from app.core.specs import parse_spec
        from app.queue import services

        parsed = parse_spec(spec)
        services.save(self.r, parsed)
        return parsed

    def command_spec(self, name: str | None = None, **metadata: Any) -> dict[str, Any]:
        return {"metadata": {"name": name or self.service_name("cmd"), **metadata}}

    def start_worker(self, service: str, *extra: str, env: dict[str, str] | None = None, name: str | None = None) -> Proc:
        argv = python_argv("-m", "app.cli", "worker", service, "--loglevel", "INFO", *extra)
        if name:
            argv += ["--name", name]
        log = self.tmp / f"worker-{len(self.procs)}.log"
        proc = Proc(argv, {**self.env, **(env or {})}, log)
        self.procs.append(proc)
        return proc

    def workers(self, service: str) -> list[Any]:
        from app.queue.workers import list_workers

        return list_workers(self.r, service)

    def wait_workers(self, service: str, n: int, state: str | None = None, timeout: float = 30) -> list[Any]:
        def ready() -> list[Any] | None:
            ws = [w for w in self.workers(service) if state is None or w.state == state]
            return ws if len(ws) >= n else None

        return wait_for(ready, timeout, what=f"{n} {state or ''} workers of {service}")

    def put(self, spec: Any, task_type: str, payload: bytes | str, **kw: Any) -> str:
        from app.queue.put import put

        data = payload.encode() if isinstance(payload, str) else payload
        return put(self.r, spec, task_type, data, **kw)[1]

    def record(self, request_id: str) -> Any:
        from app.queue import records

        return records.get(self.r, request_id)

    def wait_done(self, request_id: str, timeout: float = 30) -> Any:
        return wait_for(lambda: (rec := self.record(request_id)) and rec.done and rec, timeout, what=f"request {request_id} to finish")

    def sink(self, service: str) -> list[Any]:
        from app.queue import output as sink

        return sink.read(self.r, service, 0, 100_000)

    def close(self) -> None:
        for p in self.procs:
            p.kill_tree()


@pytest.fixture
def stack(tmp_path: Path, redis_base: str, broker_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    yield from in_this_process(Stack(tmp_path, redis_base, broker_url, f"sjt{uuid.uuid4().hex[:8]}"), monkeypatch)


def in_this_process(s: Stack, monkeypatch: pytest.MonkeyPatch, *extra: str) -> Iterator[Stack]:
    """Point this test process at ``s`` (its env, settings, Celery broker) for the test; undo after."""
    for k in ("SCALEJOB_BROKER_URL", "SCALEJOB_REDIS_URL", "SCALEJOB_KEY_PREFIX", "SCALEJOB_DATA_DIR", *extra):
        monkeypatch.setenv(k, s.env[k])
    reset_caches()
    _point_celery_at(s.broker_url)
    yield s
    s.close()
    reset_caches()


def _point_celery_at(broker_url: str) -> None:
    """The test process sends tasks too: make the shared Celery app use this session's broker."""
    from app.core.celery_app import celery_app, celery_config
    from app.core.settings import get_settings

    if celery_app.conf.broker_url != broker_url:
        import kombu.pools

        celery_app.conf.update(celery_config(broker_url, get_settings().visibility_timeout))
        kombu.pools.reset()  # close every broker pool *and forget it*: a closed pool kept for a URL fails a later test's publish
        celery_app._pool = None
        celery_app.amqp._producer_pool = None  # it held a pool of the old URL


def dump(obj: Any) -> str:
    return json.dumps(obj, default=str, indent=1)


def _worktree_state() -> str | None:
    """``git status`` plus a digest of the tracked diff: what a test run must leave as it found it."""
    import hashlib
    import subprocess

    from tests.helpers import ROOT

    try:
        st = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT, capture_output=True, text=True, timeout=30)
        diff = subprocess.run(["git", "diff", "--binary"], cwd=ROOT, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if st.returncode != 0:
        return None  # not a git checkout (an sdist): nothing to compare
    return st.stdout + hashlib.sha256(diff.stdout).hexdigest()


@pytest.fixture(scope="session", autouse=True)
def tests_leave_tracked_files_alone() -> Iterator[None]:
    """Tests write only under temp dirs: the checkout's ``git status`` is the same after the run."""
    if os.environ.get("SCALEJOB_SCREENSHOT_DIR"):  # docs/make_screenshots.py refreshes docs/img on purpose
        yield
        return
    before = _worktree_state()
    yield
    after = _worktree_state()
    if before is not None and after != before:
        pytest.fail(f"the test run changed the checkout (git status before/after):\n{before}\n---\n{after}")
