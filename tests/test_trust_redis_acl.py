"""An external Redis with one ACL user per role (issue 13): everything works, a worker's credential
cannot read a token nor change a spec.

Real processes on a Redis started with the aclfile ``scalejob redis-acl`` prints: the API as
``scalejob-api``, a worker as ``scalejob-worker``, the autoscaler as ``scalejob-autoscaler``; the test
itself is the admin (the default user).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from app.api import auth
from app.core import keys
from app.queue import services
from tests.conftest import Stack, in_this_process
from tests.helpers import Proc, free_port, python_argv, wait_for

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")

ADMIN_TOKEN = "admin-token-acl-test"
SERVICE_TOKEN = "svc-token-" + "x" * 24


class AclRedis:
    """A redis-server on a free port whose users are the aclfile of ``scalejob redis-acl``."""

    def __init__(self, tmp: Path, prefix: str) -> None:
        self.port, self.users, self.admin = free_port(), tmp / "users", secrets.token_urlsafe(16)
        env = {"SCALEJOB_KEY_PREFIX": prefix, "PATH": "/usr/bin:/bin"}
        printed = subprocess.run(python_argv("-m", "app.cli", "redis-acl", "--dir", str(self.users)), env=env,
                                 capture_output=True, text=True, check=True, timeout=60).stdout
        assert self.admin not in printed and all(self.password(r) not in printed for r in ("api", "worker", "autoscaler"))
        digest = hashlib.sha256(self.admin.encode()).hexdigest()
        (tmp / "users.acl").write_text(printed + f"user default on #{digest} ~* &* +@all\n")
        conf = tmp / "redis.conf"
        conf.write_text(f"port {self.port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\naclfile {tmp / 'users.acl'}\ndir {tmp}\n")
        self.log = tmp / "redis.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(["redis-server", str(conf)], stdout=out, stderr=subprocess.STDOUT)
        wait_for(self._pings, 10, what=f"the ACL Redis ({self.log})")

    def _pings(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()[-2000:]
        try:
            return bool(redis.Redis.from_url(self.url()).ping())
        except redis.ConnectionError:
            return False

    def password(self, role: str) -> str:
        return (self.users / role).read_text().strip()

    def url(self, role: str | None = None) -> str:
        if role is None:
            return f"redis://:{self.admin}@127.0.0.1:{self.port}/0"
        return f"redis://scalejob-{role}:{self.password(role)}@127.0.0.1:{self.port}/0"

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def acl_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Stack, AclRedis]]:
    prefix = f"sjacl{uuid.uuid4().hex[:6]}"
    server = AclRedis(tmp_path, prefix)
    try:
        for s in in_this_process(Stack(tmp_path, server.url(), server.url(), prefix), monkeypatch):
            yield s, server
    finally:
        server.close()


def role_env(stack: Stack, server: AclRedis, role: str) -> dict[str, str]:
    url = server.url(role)
    return {**stack.env, "SCALEJOB_REDIS_URL": url, "SCALEJOB_BROKER_URL": url, "SCALEJOB_ADMIN_TOKEN": ADMIN_TOKEN}


def test_each_role_works_as_its_own_acl_user_and_a_worker_credential_cannot_read_tokens(acl_stack: tuple[Stack, AclRedis]) -> None:
    stack, server = acl_stack
    name = stack.service_name("acl")
    port = free_port()
    api = Proc(python_argv("-m", "app.cli", "api", "--port", str(port)), role_env(stack, server, "api"), stack.tmp / "api.log")
    stack.procs.append(api)
    base = f"http://127.0.0.1:{port}"

    def api_up() -> bool:
        assert api.alive(), api.output()
        try:
            return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(api_up, 30, what="the API as scalejob-api")
    spec = {"metadata": {"name": name, "token": SERVICE_TOKEN}, "autoscaler": {"min": 1, "max": 1}}
    deployed = httpx.put(f"{base}/api/services/{name}", json=spec, headers={"Authorization": ADMIN_TOKEN}, timeout=10)
    assert deployed.status_code == 200, deployed.text

    stored = stack.r.hget(keys.services(), name)
    assert stored is not None and SERVICE_TOKEN.encode() not in stored, "the spec workers read holds no token"

    worker = stack.start_worker(name, env=role_env(stack, server, "worker"))
    stack.wait_workers(name, 1, "idle", timeout=60)
    scaler = Proc(python_argv("-m", "app.cli", "autoscale"), role_env(stack, server, "autoscaler"), stack.tmp / "autoscaler.log")
    stack.procs.append(scaler)
    wait_for(lambda: stack.r.llen(keys.decisions(name)) > 0, 30, what="a decision made as scalejob-autoscaler")

    put = httpx.post(f"{base}/api/predict/{name}?taskType=command", content=b"echo acl-ok", headers={"Authorization": SERVICE_TOKEN}, timeout=10)
    assert put.status_code == 200, put.text
    rid = put.headers.get("x-eas-queueservice-request-id") or put.json()["request_id"]
    rec = stack.wait_done(rid, 60)
    assert rec.state == "succeeded", rec
    assert len(stack.workers(name)) == 1, "max 1: the task ran on the worker with the worker credential"

    long = httpx.post(f"{base}/api/predict/{name}?taskType=command", content=b"sleep 60", headers={"Authorization": SERVICE_TOKEN}, timeout=10)
    long_id = long.headers.get("x-eas-queueservice-request-id") or long.json()["request_id"]
    wait_for(lambda: stack.record(long_id).state == "running", 30, what="the long task to start")
    cancel = httpx.delete(f"{base}/api/requests/{long_id}", headers={"Authorization": SERVICE_TOKEN}, timeout=10)
    assert cancel.status_code == 200, cancel.text
    assert stack.wait_done(long_id, 30).state == "cancelled", "a cancel reaches the worker through its own user's keys"

    leaked = redis.Redis.from_url(server.url("worker"))
    for attempt in (
        lambda: leaked.hgetall(keys.tokens()),
        lambda: leaked.hgetall(keys.service_tokens()),
        lambda: leaked.hgetall(keys.legacy_tokens()),
        lambda: leaked.eval("return redis.call('HGETALL', KEYS[1])", 1, keys.service_tokens()),
        lambda: leaked.hset(keys.services(), name, json.dumps({"metadata": {"name": name}, "init_commands": ["curl evil"]})),
        lambda: leaked.keys("*"),
        lambda: leaked.config_get("requirepass"),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            attempt()
    assert SERVICE_TOKEN.encode() not in (leaked.hget(keys.services(), name) or b"")
    assert services.token(stack.r, name) == SERVICE_TOKEN, "the token is kept where the API reads it"
    for proc in (api, worker, scaler):
        assert "NOPERM" not in proc.output(), proc.output()[-3000:]


def test_tokens_stored_by_an_earlier_release_move_out_of_the_prefix_and_keep_working(stack: Stack) -> None:
    name = stack.service_name("legacy")
    spec = {"metadata": {"name": name, "token": SERVICE_TOKEN}}
    stack.r.hset(keys.services(), name, json.dumps(spec))  # how specs were stored before
    issued = secrets.token_urlsafe(16)
    stack.r.hset(keys.legacy_tokens(), auth.digest(issued), json.dumps({"service": name, "tenant": "team-a"}))

    auth.migrate(stack.r)
    auth.migrate(stack.r)  # idempotent

    assert SERVICE_TOKEN.encode() not in stack.r.hget(keys.services(), name)
    assert not stack.r.exists(keys.legacy_tokens())
    loaded = services.get(stack.r, name)
    assert loaded.metadata.token is None
    assert auth.authenticate(stack.r, SERVICE_TOKEN, "", loaded).service == name
    assert auth.authenticate(stack.r, issued, "", loaded).tenant == "team-a"
    assert auth.valid_anywhere(stack.r, SERVICE_TOKEN, "") and not auth.valid_anywhere(stack.r, "nope-" * 5, "")
