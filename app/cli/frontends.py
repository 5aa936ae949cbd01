"""Front ends as stack state: every deployed spec with a ``front_end.script`` gets one.

``scalejob up`` calls :meth:`FrontEnds.sync` in its loop (every 0.2 s, a Redis HGETALL). Why
here and not from up's argv: a spec deployed later (``scalejob deploy``, ``PUT
/api/services``) must get its front end too, a redeploy restarts it with the new script, and a
delete stops it. A front end starts only once the API answers ``/healthz``: its first put must
not meet a closed port. Its state is published under ``keys.frontend(service)`` (with a TTL, so
a stack that died does not leave a "running" front end behind; :mod:`app.queue.frontends` owns the key)
for ``status``, the API and the dashboard.
"""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import redis

from app.api import auth
from app.cli.frontend import FrontendProcess
from app.core.specs import ServiceSpec
from app.queue import frontends as stored
from app.queue import services

log = logging.getLogger(__name__)

class FrontEnds:
    """The front ends of one stack, kept in line with the deployed specs."""

    def __init__(self, r: redis.Redis, endpoint: str, cwd: Path, log_dir: Path, env: dict[str, str]) -> None:
        self.r, self.endpoint, self.cwd, self.log_dir, self.env = r, endpoint, cwd, log_dir, env
        self.running: dict[str, tuple[str, FrontendProcess]] = {}  # service -> (script, process)
        self.tokens: dict[str, str] = {}  # tokens made for front ends by this stack
        self.api_up = False

    def token(self, spec: ServiceSpec) -> str:
        """The spec's token, else one this stack issued (shown by ``up``'s banner)."""
        own = services.token(self.r, spec.name)
        if own:
            return own
        if spec.name not in self.tokens:
            self.tokens[spec.name] = auth.issue(self.r, spec.name)
        return self.tokens[spec.name]

    def _api_answers(self) -> bool:
        if not self.api_up:
            try:
                self.api_up = httpx.get(f"{self.endpoint}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False
        return self.api_up

    def sync(self) -> None:
        """Start, restart (script changed) and stop front ends to match the specs; publish their state."""
        if not self._api_answers():
            return
        wanted = {n: s for n, s in services.all_specs(self.r).items() if stored.wants_front_end(s)}
        changed = [n for n, (script, _) in self.running.items()
                   if n not in wanted or wanted[n].front_end.script != script]  # type: ignore[union-attr]
        for name in changed:
            self._stop(name)
        for name, spec in wanted.items():
            if name not in self.running:
                self._start(spec)
        stored.publish(self.r, {name: fe.state() for name, (_, fe) in self.running.items()})

    def _start(self, spec: ServiceSpec) -> None:
        log_path = self.log_dir / f"frontend-{spec.name}.log"
        fe = FrontendProcess(spec, self.endpoint, self.token(spec), self.cwd, log_path)
        fe.env.update({k: v for k, v in self.env.items() if k.startswith("SCALEJOB_") and k not in fe.env})
        fe.start()
        self.running[spec.name] = (spec.front_end.script, fe)  # type: ignore[union-attr]
        log.info("started the front end of %s (pid %s)", spec.name, fe.pid)

    def _stop(self, name: str) -> None:
        _, fe = self.running.pop(name)
        fe.stop()
        stored.forget(self.r, name)

    def stop_all(self) -> None:
        for name in list(self.running):
            self._stop(name)
