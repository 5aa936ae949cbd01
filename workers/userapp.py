"""Supervising the user's app of a query service: start it, wait for its port, restart it.

The app runs in its own process group with ``PR_SET_PDEATHSIG`` (it dies with the worker); a
monitor thread restarts it with backoff when it exits, and :meth:`stop` ends its whole group.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import threading
import time
from pathlib import Path

from workers.command import _die_with_parent, kill_group

log = logging.getLogger(__name__)


class UserAppError(RuntimeError):
    """The user app exited or never listened on its port."""


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


class UserApp:
    """One supervised user app process."""

    def __init__(self, command: str, port: int, cwd: Path, env: dict[str, str], log_path: Path) -> None:
        self.command, self.port, self.cwd, self.env, self.log_path = command, port, cwd, env, log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None

    def _spawn(self) -> None:
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            ["/bin/sh", "-c", self.command],
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        out.close()

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not port_open(self.port):
            if self.proc is not None and self.proc.poll() is not None:
                raise UserAppError(f"user app exited with code {self.proc.returncode} before listening on port {self.port}; see {self.log_path}")
            if time.monotonic() > deadline:
                raise UserAppError(f"user app did not listen on port {self.port} within {timeout:.0f}s; see {self.log_path}")
            time.sleep(0.05)

    def start(self, ready_timeout: float = 60.0) -> None:
        """Start the app and block until its port accepts connections."""
        self._spawn()
        self.wait_ready(ready_timeout)
        self._monitor = threading.Thread(target=self._watch, name="scalejob-userapp", daemon=True)
        self._monitor.start()

    def _watch(self) -> None:
        backoff = 0.2
        while not self._stopping.is_set():
            assert self.proc is not None
            if self.proc.poll() is None:
                self._stopping.wait(0.2)
                continue
            if self._stopping.is_set():
                return
            log.warning("user app exited with code %s; restarting", self.proc.returncode)
            kill_group(self.proc, grace=1.0)
            self._stopping.wait(backoff)
            backoff = min(backoff * 2, 5.0)
            self.restarts += 1
            self._spawn()
            try:
                self.wait_ready(60.0)
                backoff = 0.2
            except UserAppError as exc:
                log.error("%s", exc)

    def stop(self, grace: float = 10.0) -> None:
        self._stopping.set()
        if self.proc is not None:
            kill_group(self.proc, grace)
        if self._monitor is not None:
            self._monitor.join(timeout=5)
