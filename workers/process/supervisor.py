"""A supervised process: started in its own group, restarted with backoff, stopped with its group.

One mechanism for both long-lived helpers a scalejob process owns: the user app of a query
service (``workers/process/userapp.py``) and the front end of an integrated service
(``app/cli/frontend.py``). The child gets ``PR_SET_PDEATHSIG`` so it never outlives its owner, and
the backoff resets once the process has run fine for a while, so a crash loop does not spin
while an occasional crash restarts at once.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from pathlib import Path

from workers.command import _die_with_parent, kill_group

log = logging.getLogger(__name__)

BACKOFF_START, BACKOFF_MAX, STABLE_AFTER = 0.2, 10.0, 10.0


class SupervisedProcess:
    """``/bin/sh -c command`` kept running until :meth:`stop`; :meth:`on_spawned` runs after each start.

    The backoff is per instance (``backoff_start``, ``backoff_max``, ``stable_after``): a front end
    uses the autoscaler's crash-loop schedule (``app/cli/frontend.py``), a user app restarts faster."""

    backoff_start, backoff_max, stable_after = BACKOFF_START, BACKOFF_MAX, STABLE_AFTER

    def __init__(self, name: str, command: str, cwd: Path, env: dict[str, str], log_path: Path) -> None:
        self.name, self.command, self.cwd, self.env, self.log_path = name, command, cwd, env, log_path
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
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only sets PDEATHSIG, safe between fork and exec
                # and it never outlives its owner
            )

    def on_spawned(self) -> None:
        """Hook: block until the fresh process is usable (raise to report it is not)."""

    def on_exited(self, code: int | None, backoff: float) -> None:
        """Hook: the process exited with ``code``; it is restarted in ``backoff`` s."""

    def start(self) -> None:
        """Start the process (and wait for :meth:`on_spawned`), then supervise it in a thread."""
        with self._lock:
            if self._monitor is not None:
                return
            self._stopping.clear()
            self._spawn()
        self.on_spawned()
        self._monitor = threading.Thread(target=self._supervise, name=f"supervise-{self.name}", daemon=True)
        self._monitor.start()

    def _supervise(self) -> None:
        backoff, started = self.backoff_start, time.monotonic()
        while not self._stopping.is_set():
            assert self.proc is not None
            if self.proc.poll() is None:
                self._stopping.wait(0.2)
                continue
            kill_group(self.proc, grace=1.0)  # leftovers of its group
            if time.monotonic() - started > self.stable_after:
                backoff = self.backoff_start  # it ran fine for a while: this is not a crash loop
            log.warning("%s exited with code %s; restarting in %.1fs", self.name, self.proc.returncode, backoff)
            try:
                self.on_exited(self.proc.returncode, backoff)
            except Exception:  # noqa: BLE001 - reporting must not stop the supervision
                log.exception("%s: on_exited", self.name)
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, self.backoff_max)
            with self._lock:
                if self._stopping.is_set():
                    return
                self.restarts += 1
                started = time.monotonic()
                self._spawn()
            try:
                self.on_spawned()
            except Exception as exc:  # noqa: BLE001 - report and keep supervising
                log.error("%s: %s", self.name, exc)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL after ``grace`` s; no restart after."""
        self._stopping.set()
        with self._lock:
            if self.proc is not None:
                kill_group(self.proc, grace)
        if self._monitor is not None:
            self._monitor.join(timeout=5)
            self._monitor = None
