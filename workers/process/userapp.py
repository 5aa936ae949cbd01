"""Supervising the user's app of a query service: start it, wait for its port, restart it.

The app runs as a :class:`~workers.process.supervisor.SupervisedProcess` (own process group, dies with
the worker, restarted with backoff); what is specific here is readiness: a start counts only
once the app accepts connections on its port.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import psutil

from workers.process.supervisor import SupervisedProcess

LOOPBACK = ("127.0.0.1", "0.0.0.0", "::", "::1", "::ffff:127.0.0.1")


class UserAppError(RuntimeError):
    """The user app exited or never listened on its port."""


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def listeners(port: int) -> list[int | None]:
    """Pids of the processes listening on ``port`` of a loopback/any address (None: one we may not see)."""
    return [c.pid for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.laddr.ip in LOOPBACK]


class UserApp(SupervisedProcess):
    """One supervised user app process, ready when its port accepts connections *and* it is the listener."""

    def __init__(self, command: str, port: int, cwd: Path, env: dict[str, str], log_path: Path,
                 ready_timeout: float = 60.0) -> None:
        super().__init__(f"user app on port {port}", command, cwd, env, log_path)
        self.port, self.ready_timeout = port, ready_timeout
        self._verified: int | None = None  # pid of the app process last seen holding the port

    def squatter(self) -> str | None:
        """Why the port must not get a payload (another process listens there), or None.

        Why: a local process that binds the port first (the service at zero, the app restarting)
        would receive the payloads and have its answer recorded as the result. None when the app
        itself listens, or when nobody does (the app is (re)starting: the caller's retry waits).
        """
        proc = self.proc
        alive = proc is not None and proc.poll() is None
        if alive and self._verified == proc.pid:  # type: ignore[union-attr]
            return None  # it holds the port: nobody else can bind it while it lives
        pids = listeners(self.port)
        if not pids:
            return None
        try:
            tree = {proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))} if alive else set()  # type: ignore[union-attr]
        except psutil.Error:
            tree = set()
        if all(p in tree for p in pids):
            self._verified = proc.pid  # type: ignore[union-attr]
            return None
        other = next(p for p in pids if p not in tree)
        holder = f"pid {other}" if other else "a process of another user"
        return f"port {self.port} is held by {holder}, not by the user app: payload not sent"

    def on_spawned(self) -> None:
        self.wait_ready(self.ready_timeout)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not port_open(self.port) or self.squatter():
            if (why := self.squatter()) and (self.proc is None or self.proc.poll() is not None):
                raise UserAppError(f"{why}; see {self.log_path}")
            if self.proc is not None and self.proc.poll() is not None:
                raise UserAppError(f"user app exited with code {self.proc.returncode} before listening on port "
                                   f"{self.port}; see {self.log_path}")
            if time.monotonic() > deadline:
                raise UserAppError(f"user app did not listen on port {self.port} within {timeout:.0f}s; "
                                   f"see {self.log_path}")
            time.sleep(0.05)
