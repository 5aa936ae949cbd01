"""The front end of an integrated ``ScalableJobService``: a supervised ``front_end.script`` process.

In an *integrated* deployment one front end is bound to its one backend service: scalejob
runs the spec's ``front_end.script`` beside the queue and tells it where to put work through
three environment variables, the same on every platform:

- ``SCALEJOB_ENDPOINT``: base URL of the scalejob API (``http://127.0.0.1:8000``),
- ``SCALEJOB_SERVICE``: the backend service name (``POST {endpoint}/api/predict/{service}``),
- ``SCALEJOB_TOKEN``: the token to send as ``Authorization``,

plus ``PORT`` when ``front_end.port`` is set. The process is restarted when it exits (with a
backoff so a crash loop does not spin) and stopped with its whole process group.
``scalejob up`` owns one :class:`FrontendProcess` per ScalableJobService it deploys.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from pathlib import Path

from app.specs import ServiceSpec
from workers.command import _die_with_parent, kill_group

log = logging.getLogger(__name__)

BACKOFF_START, BACKOFF_MAX, STABLE_AFTER = 0.2, 10.0, 10.0


def frontend_env(spec: ServiceSpec, endpoint: str, token: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a front end runs with (``base`` defaults to this process's env)."""
    env = dict(os.environ if base is None else base)
    env.update({"SCALEJOB_ENDPOINT": endpoint.rstrip("/"), "SCALEJOB_SERVICE": spec.name, "SCALEJOB_TOKEN": token})
    if spec.front_end is not None and spec.front_end.port:
        env["PORT"] = str(spec.front_end.port)
    return env


class FrontendProcess:
    """One supervised front-end process: :meth:`start`, :meth:`stop`; restarts it when it exits."""

    def __init__(self, spec: ServiceSpec, endpoint: str, token: str, cwd: Path, log_path: Path) -> None:
        if spec.front_end is None or not spec.front_end.script:
            raise ValueError(f"service {spec.name} has no front_end.script to run")
        self.spec, self.cwd, self.log_path = spec, cwd, log_path
        self.command = spec.front_end.script
        self.env = frontend_env(spec, endpoint, token)
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._monitor: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _spawn(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                ["/bin/sh", "-c", self.command],
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # stop() ends its whole group
                preexec_fn=_die_with_parent,  # and it never outlives scalejob
            )

    def start(self) -> None:
        """Start the front end and its supervisor; returns at once."""
        with self._lock:
            if self._monitor is not None:
                return
            self._stopping.clear()
            self._spawn()
            self._monitor = threading.Thread(target=self._supervise, name=f"frontend-{self.spec.name}", daemon=True)
            self._monitor.start()

    def _supervise(self) -> None:
        backoff = BACKOFF_START
        started = time.monotonic()
        while not self._stopping.is_set():
            assert self.proc is not None
            if self.proc.poll() is None:
                self._stopping.wait(0.2)
                continue
            if self._stopping.is_set():
                return
            log.warning("front end of %s exited with code %s; restarting in %.1fs", self.spec.name, self.proc.returncode, backoff)
            kill_group(self.proc, grace=1.0)  # leftovers of its group
            if time.monotonic() - started > STABLE_AFTER:
                backoff = BACKOFF_START  # it ran fine for a while: this is not a crash loop
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, BACKOFF_MAX)
            with self._lock:
                if self._stopping.is_set():
                    return
                self.restarts += 1
                started = time.monotonic()
                self._spawn()

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the front end's process group, SIGKILL after ``grace`` s; no restart after."""
        self._stopping.set()
        with self._lock:
            if self.proc is not None:
                kill_group(self.proc, grace)
        if self._monitor is not None:
            self._monitor.join(timeout=5)
            self._monitor = None
