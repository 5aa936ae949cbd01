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

import os
from pathlib import Path

from app.specs import ServiceSpec
from workers.supervisor import SupervisedProcess


def frontend_env(spec: ServiceSpec, endpoint: str, token: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a front end runs with (``base`` defaults to this process's env)."""
    env = dict(os.environ if base is None else base)
    env.update({"SCALEJOB_ENDPOINT": endpoint.rstrip("/"), "SCALEJOB_SERVICE": spec.name, "SCALEJOB_TOKEN": token})
    if spec.front_end is not None and spec.front_end.port:
        env["PORT"] = str(spec.front_end.port)
    return env


class FrontendProcess(SupervisedProcess):
    """One supervised front-end process: :meth:`start`, :meth:`stop`; restarts it when it exits."""

    def __init__(self, spec: ServiceSpec, endpoint: str, token: str, cwd: Path, log_path: Path) -> None:
        if spec.front_end is None or not spec.front_end.script:
            raise ValueError(f"service {spec.name} has no front_end.script to run")
        super().__init__(f"front end of {spec.name}", spec.front_end.script, cwd, frontend_env(spec, endpoint, token), log_path)
        self.spec = spec
