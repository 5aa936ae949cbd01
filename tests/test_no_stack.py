"""Without a stack the CLI fails at once and starts nothing; the embedded Redis belongs to the
processes that started it and stops with the last of them (issue 15 items 4, 5, 11)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import redis

from app.core.embedded import find_embedded
from tests.conftest import Stack
from tests.helpers import ROOT, python_argv, wait_for

HOLD = "from app.core.connections import allow_embedded_start, endpoints; allow_embedded_start(); print(endpoints().redis_url, flush=True); import sys; sys.stdin.read()"


def _bare_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCALEJOB_")}
    return {**env, "PYTHONPATH": str(ROOT), "COLUMNS": "80"}


def _processes_under(d: Path) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter():
        try:
            if p.cwd().startswith(str(d)):
                out.append(p)
        except psutil.Error:
            continue
    return out


def test_status_in_an_empty_directory_fails_at_once_and_leaves_nothing(tmp_path: Path) -> None:
    t0 = time.monotonic()
    out = subprocess.run(python_argv("-m", "app.cli", "status"), cwd=tmp_path, env=_bare_env(), capture_output=True, text=True, timeout=30)
    took = time.monotonic() - t0
    assert out.returncode != 0 and took < 2.0 + 1.5, (took, out)  # + interpreter start on a loaded 2-core box
    [line] = out.stderr.strip().splitlines()  # one line, no traceback
    assert "scalejob up" in line and str(tmp_path / ".scalejob" / "redis") in line, line
    assert list(tmp_path.iterdir()) == [] and _processes_under(tmp_path) == []


def test_importing_the_celery_app_starts_no_redis(tmp_path: Path) -> None:
    code = "from app.celery_app import celery_app\ntry:\n    celery_app.conf.broker_url\nexcept Exception as e:\n    print(type(e).__name__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_bare_env(), capture_output=True, text=True, timeout=60)
    assert "NoStack" in out.stdout, out
    assert list(tmp_path.iterdir()) == [] and _processes_under(tmp_path) == []


def test_the_last_process_that_holds_the_embedded_redis_stops_it(tmp_path: Path) -> None:
    env = {**_bare_env(), "SCALEJOB_DATA_DIR": str(tmp_path / "data")}
    first = subprocess.Popen([sys.executable, "-c", HOLD], cwd=tmp_path, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    second = subprocess.Popen([sys.executable, "-c", HOLD], cwd=tmp_path, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        url = first.stdout.readline().strip()
        assert second.stdout.readline().strip() == url  # one server, shared
        first.stdin.close()
        first.wait(30)
        assert find_embedded(tmp_path / "data") is not None, "stopped while the second process still uses it"
        second.stdin.close()
        second.wait(30)
        wait_for(lambda: find_embedded(tmp_path / "data") is None, 10, what="the embedded Redis to stop with its last user")
        wait_for(lambda: not [p for p in _processes_under(tmp_path) if "redis" in p.name()], 10, what="no redis-server left")
    finally:
        for p in (first, second):
            p.kill()


def test_submit_to_a_stopped_stack_fails_fast_with_the_request_id(stack: Stack) -> None:
    spec = stack.deploy(stack.command_spec())
    t0 = time.monotonic()
    out = subprocess.run(python_argv("-m", "app.cli", "submit", spec.name, "echo hi"), env={**stack.env, "COLUMNS": "200"}, capture_output=True, text=True, timeout=60)
    took = time.monotonic() - t0
    assert out.returncode != 0 and took < 5.0, (took, out)
    assert "nothing is running" in out.stderr and "scalejob logs" in out.stderr, out.stderr
    rid = out.stdout.split("queued request ")[1].split()[0]
    assert stack.record(rid).state == "queued"  # kept: it runs when the stack starts


def test_up_names_the_port_in_use_before_printing_anything_else(tmp_path: Path) -> None:
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        env = {**_bare_env(), "SCALEJOB_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "300"}
        out = subprocess.run(python_argv("-m", "app.cli", "up", "--port", str(port)), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and f"port {port}" in out.stderr and "in use" in out.stderr, out
    assert "scalejob up" not in out.stdout  # no success banner
    assert not [p for p in _processes_under(tmp_path) if "redis" in p.name()]


def test_help_shows_no_bool_or_str_metavars() -> None:
    out = subprocess.run(python_argv("-m", "app.cli", "submit", "--help"), env={**_bare_env(), "COLUMNS": "120"}, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--follow" in out.stdout
    assert "<bool>" not in out.stdout and "<str>" not in out.stdout, out.stdout


def test_autoscale_on_an_amqp_broker_stops_the_embedded_redis_it_started(tmp_path: Path) -> None:
    import signal

    from tests.conftest import AMQP_URL, amqp_reachable

    if not amqp_reachable():
        import pytest

        pytest.skip("no RabbitMQ on 127.0.0.1:5672")
    env = {**_bare_env(), "SCALEJOB_DATA_DIR": str(tmp_path / "data"), "SCALEJOB_BROKER_URL": AMQP_URL}
    proc = subprocess.Popen(python_argv("-m", "app.cli", "autoscale"), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        server = wait_for(lambda: find_embedded(tmp_path / "data"), 60, what="the autoscaler's embedded Redis (state store)")
        wait_for(lambda: redis.Redis.from_url(server.url).keys("*autoscaler:leader"), 60, what="the autoscaler to lead")
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        wait_for(lambda: find_embedded(tmp_path / "data") is None, 10, what="the embedded Redis to stop with the autoscaler")
        wait_for(lambda: not [p for p in _processes_under(tmp_path) if "redis" in p.name()], 10, what="no redis-server left")
    finally:
        proc.kill()
