"""The front end of an integrated ``ScalableJobService``: a supervised ``front_end.script`` process.

In an *integrated* deployment one front end is bound to its one backend service: scalejob
runs the spec's ``front_end.script`` beside the queue and tells it where to put work through
three environment variables, the same on every platform:

- ``SCALEJOB_ENDPOINT``: base URL of the scalejob API (``http://127.0.0.1:8000``),
- ``SCALEJOB_SERVICE``: the backend service name (``POST {endpoint}/api/predict/{service}``),
- ``SCALEJOB_TOKEN``: the token to send as ``Authorization``,

plus ``PORT`` when ``front_end.port`` is set. The process is restarted when it exits, with the
autoscaler's crash-loop backoff (``app/core/backoff.py``: 1 s doubling to 5 min, reset after
60 s up), and stopped with its whole process group. Which front ends run is stack state, not
``up``'s argv: ``app/cli/frontends.py`` follows the deployed specs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from app.core.backoff import BackoffConfig
from app.core.specs import ServiceSpec
from app.queue.health import log_tail
from workers.process.supervisor import SupervisedProcess

SCHEDULE = BackoffConfig()


def frontend_env(spec: ServiceSpec, endpoint: str, token: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a front end runs with (``base`` defaults to this process's env)."""
    env = dict(os.environ if base is None else base)
    env.update({"SCALEJOB_ENDPOINT": endpoint.rstrip("/"), "SCALEJOB_SERVICE": spec.name, "SCALEJOB_TOKEN": token})
    if spec.front_end is not None and spec.front_end.port:
        env["PORT"] = str(spec.front_end.port)
    return env


class FrontendProcess(SupervisedProcess):
    """One supervised front-end process: :meth:`start`, :meth:`stop`; restarts it when it exits."""

    backoff_start, backoff_max, stable_after = SCHEDULE.initial, SCHEDULE.cap, SCHEDULE.reset_after

    def __init__(self, spec: ServiceSpec, endpoint: str, token: str, cwd: Path, log_path: Path) -> None:
        if spec.front_end is None or not spec.front_end.script:
            raise ValueError(f"service {spec.name} has no front_end.script to run")
        env = frontend_env(spec, endpoint, token)
        super().__init__(f"front end of {spec.name}", spec.front_end.script, cwd, env, log_path)
        self.spec = spec
        self.last_failure: dict[str, object] | None = None
        self.restart_at = 0.0  # wall clock of the next start while it is backing off

    def on_exited(self, code: int | None, backoff: float) -> None:
        """Keep why it stopped (exit code, last output) for ``status``, the API and the dashboard."""
        tail = log_tail(self.log_path)
        last = tail[-1] if tail else "no output"
        self.last_failure = {"at": time.time(), "exit_code": code, "reason": f"exit code {code}: {last}",
                             "output": list(tail)}
        self.restart_at = time.time() + backoff

    def state(self) -> dict[str, object]:
        """``running`` or ``backoff`` (restarting after an exit), with restarts and the last failure."""
        running = self.alive() and time.time() >= self.restart_at
        return {"state": "running" if running else "backoff", "pid": self.pid, "restarts": self.restarts,
                "restart_in": round(max(0.0, self.restart_at - time.time()), 1), "last_failure": self.last_failure,
                "log": str(self.log_path)}
