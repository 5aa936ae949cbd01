"""The local backend's handle on the worker template (``python -m workers.process.template``).

New local workers are forked from a process that has imported everything a worker needs, not
started from scratch: see :mod:`workers.process.template` for why and for the line protocol.
This side only starts the template, writes one request line per worker and reads the pid back.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path


class Template:
    """The autoscaler's handle on a template process (started on first use, restarted if it died)."""

    def __init__(self, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.cwd, self.env = cwd, env
        self.proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the template now (it takes about a cold start to import) so the first fork is fast."""
        with self._lock:
            self._ensure()

    def _ensure(self) -> subprocess.Popen:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "workers.process.template"], cwd=self.cwd, env=self.env,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, start_new_session=True,
            )
            json.loads(self.proc.stdout.readline() or "{}")  # type: ignore[union-attr]  # waits for "ready"
        return self.proc

    def fork(self, service: str, name: str, standby: bool, env: dict[str, str], log: Path) -> int:
        """Fork a worker; returns its pid. Raises OSError when the template cannot answer."""
        with self._lock:
            proc = self._ensure()
            req = {"service": service, "name": name, "standby": standby, "env": env, "log": str(log)}
            try:
                proc.stdin.write(json.dumps(req) + "\n")  # type: ignore[union-attr]
                proc.stdin.flush()  # type: ignore[union-attr]
                answer = proc.stdout.readline()  # type: ignore[union-attr]
            except (BrokenPipeError, ValueError) as exc:
                raise OSError(f"worker template died: {exc}") from None
            if not answer:
                raise OSError("worker template exited")
            return int(json.loads(answer)["pid"])

    def close(self) -> None:
        """Let the template exit (EOF); the workers it forked keep running."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # type: ignore[union-attr]
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
