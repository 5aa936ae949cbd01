"""Test hosts: real network namespaces on this machine, so partitions are real.

Layout (one per test, names and subnet unique to it):

- host 0 is this (root) namespace on a bridge ``sjb<id>`` with address ``10.<a>.<b>.1/24``; it
  runs the test's own Redis (password in a 0600 config file, bound to the bridge address only,
  AOF on), the API when a test starts one, and an AMQP forwarder to the machine's RabbitMQ
  (127.0.0.1:5672) when a test needs RabbitMQ.
- hosts 1..N are namespaces ``sjh<id>-<i>``, each with one veth into the bridge and address
  ``10.<a>.<b>.<10+i>``; workers run there with ``ip netns exec``.

:meth:`Hosts.cut` takes a host's link down (its packets go nowhere, as when a cable or switch
fails: no RST, connections just stall) and :meth:`Hosts.heal` brings it back. Everything is torn
down even when the test fails. Needs root and ``ip``; where namespaces cannot be made the tests
skip with the reason. Only addresses inside these namespaces (and 127.0.0.1) are ever targeted.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import AMQP_URL, Stack, amqp_reachable, in_this_process
from tests.helpers import Proc, python_argv, wait_for

FAST = {"SCALEJOB_HEARTBEAT_INTERVAL": "0.5", "SCALEJOB_HEARTBEAT_TTL": "2", "SCALEJOB_POLL_INTERVAL": "0.3"}


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=10)


def namespaces_unavailable() -> str | None:
    """Why this machine cannot make test hosts, or None."""
    if os.geteuid() != 0:
        return "test hosts need root (ip netns)"
    if shutil.which("ip") is None or shutil.which("redis-server") is None:
        return "test hosts need `ip` (iproute2) and `redis-server`"
    probe = f"sjprobe{uuid.uuid4().hex[:6]}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


class Forwarder(threading.Thread):
    """TCP forwarder ``listen`` -> ``target`` in host 0 (workers in namespaces reach RabbitMQ through it).
    """

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        super().__init__(daemon=True)
        self.target = target
        self.server = socket.create_server(listen)
        self.closed = False

    def run(self) -> None:
        while not self.closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self.closed = True
        self.server.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Hosts:
    """Host 0 (this namespace, on a bridge) and worker hosts 1..n (namespaces); see the module docstring."""

    def __init__(self, tmp: Path, n: int) -> None:
        self.id = uuid.uuid4().hex[:6]
        a, b = 64 + secrets.randbelow(64), secrets.randbelow(250) + 1  # 10.64-127.x.0/24: private, unique enough per run
        self.net = f"10.{a}.{b}"
        self.addr0 = f"{self.net}.1"
        self.bridge = f"sjb{self.id}"
        self.tmp = tmp
        self.n = n
        self.procs: list[Proc] = []
        self.redis_proc: subprocess.Popen[bytes] | None = None
        self.forwarder: Forwarder | None = None
        self.password = secrets.token_hex(16)
        self.port = 0

    # -- network ---------------------------------------------------------------------------
    def ns(self, i: int) -> str:
        return f"sjh{self.id}-{i}"

    def veth(self, i: int) -> str:
        return f"sjv{self.id}{i}"

    def addr(self, i: int) -> str:
        return f"{self.net}.{10 + i}"

    def build(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.addr0}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i in range(1, self.n + 1):
            _ip("netns", "add", self.ns(i))
            _ip("link", "add", self.veth(i), "type", "veth", "peer", "name", "eth0", "netns", self.ns(i))
            _ip("link", "set", self.veth(i), "master", self.bridge, "up")
            _ip("-n", self.ns(i), "addr", "add", f"{self.addr(i)}/24", "dev", "eth0")
            _ip("-n", self.ns(i), "link", "set", "eth0", "up")
            _ip("-n", self.ns(i), "link", "set", "lo", "up")

    def cut(self, i: int) -> None:
        """Host ``i`` loses the network: its link goes down (packets are dropped, nobody is told)."""
        _ip("link", "set", self.veth(i), "down")

    def heal(self, i: int) -> None:
        _ip("link", "set", self.veth(i), "up")

    # -- services of host 0 ----------------------------------------------------------------
    def start_redis(self) -> str:
        """Host 0's Redis: password from a 0600 file, bound to the bridge address, AOF on; returns its URL."""
        if not self.port:
            with socket.socket() as s:
                s.bind((self.addr0, 0))
                self.port = s.getsockname()[1]
        conf = self.tmp / "redis.conf"
        conf.write_text(f"bind {self.addr0}\nport {self.port}\nrequirepass {self.password}\nappendonly yes\nappendfsync always\n"
                        f"save \"\"\ndir {self.tmp}\nprotected-mode no\n")
        conf.chmod(0o600)
        self.redis_proc = subprocess.Popen(["redis-server", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = self.redis_url()
        wait_for(lambda: _pings(url), 10, what="host 0's Redis")
        return url

    def stop_redis(self) -> None:
        if self.redis_proc is not None:
            self.redis_proc.send_signal(signal.SIGKILL)
            self.redis_proc.wait(10)
            self.redis_proc = None

    def redis_url(self, db: int = 0) -> str:
        return f"redis://:{self.password}@{self.addr0}:{self.port}/{db}"

    def amqp_url(self) -> str:
        """RabbitMQ as the worker hosts reach it: through a forwarder on host 0's bridge address."""
        if not amqp_reachable():
            pytest.skip("no RabbitMQ on 127.0.0.1:5672")
        if self.forwarder is None:
            self.forwarder = Forwarder((self.addr0, 0), ("127.0.0.1", 5672))
            self.forwarder.start()
        port = self.forwarder.server.getsockname()[1]
        return AMQP_URL.replace("127.0.0.1:5672", f"{self.addr0}:{port}")

    # -- processes -------------------------------------------------------------------------
    def worker(self, i: int, stack: Stack, service: str, name: str, env: dict[str, str] | None = None) -> Proc:
        """``scalejob worker SERVICE`` on host ``i`` (0: this namespace)."""
        argv = python_argv("-m", "app.cli", "worker", service, "--name", name, "--loglevel", "INFO")
        if i:
            argv = ["ip", "netns", "exec", self.ns(i), *argv]
        proc = Proc(argv, {**stack.env, **(env or {})}, self.tmp / f"{name.split('@', maxsplit=1)[0]}.log")
        self.procs.append(proc)
        return proc

    def teardown(self) -> None:
        for p in self.procs:
            p.kill_tree()
        for i in range(1, self.n + 1):  # whatever still runs inside a namespace dies with it
            pids = _ip("netns", "pids", self.ns(i), check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            _ip("netns", "del", self.ns(i), check=False)
        self.stop_redis()
        if self.forwarder is not None:
            self.forwarder.close()
        _ip("link", "del", self.bridge, check=False)


def _pings(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[Hosts]:
    """Host 0 plus two worker hosts; torn down even when the test fails."""
    why = namespaces_unavailable()
    if why:
        pytest.skip(why)
    h = Hosts(tmp_path, 2)
    try:
        h.build()
        h.start_redis()
        yield h
    finally:
        h.teardown()


@pytest.fixture
def host_stack(hosts: Hosts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """A Stack whose state Redis is host 0's; its broker too, or RabbitMQ for a test parametrized ``broker="amqp"``.

    Workers are started on hosts with ``hosts.worker``.
    """
    params = getattr(request.node, "callspec", None)
    broker = hosts.amqp_url() if params is not None and params.params.get("broker") == "amqp" else hosts.redis_url()
    s = Stack(tmp_path, hosts.redis_url(), broker, f"sjh{uuid.uuid4().hex[:8]}")
    s.env.update(FAST)
    yield from in_this_process(s, monkeypatch, *FAST)
