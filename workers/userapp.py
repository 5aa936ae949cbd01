"""Supervising the user's app of a query service: start it, wait for its port, restart it.

The app runs as a :class:`~workers.supervisor.SupervisedProcess` (own process group, dies with
the worker, restarted with backoff); what is specific here is readiness: a start counts only
once the app accepts connections on its port.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from workers.supervisor import SupervisedProcess


class UserAppError(RuntimeError):
    """The user app exited or never listened on its port."""


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


class UserApp(SupervisedProcess):
    """One supervised user app process, ready when its port accepts connections."""

    def __init__(self, command: str, port: int, cwd: Path, env: dict[str, str], log_path: Path, ready_timeout: float = 60.0) -> None:
        super().__init__(f"user app on port {port}", command, cwd, env, log_path)
        self.port, self.ready_timeout = port, ready_timeout

    def on_spawned(self) -> None:
        self.wait_ready(self.ready_timeout)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not port_open(self.port):
            if self.proc is not None and self.proc.poll() is not None:
                raise UserAppError(f"user app exited with code {self.proc.returncode} before listening on port {self.port}; see {self.log_path}")
            if time.monotonic() > deadline:
                raise UserAppError(f"user app did not listen on port {self.port} within {timeout:.0f}s; see {self.log_path}")
            time.sleep(0.05)
