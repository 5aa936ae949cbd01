"""Test helpers for the autoscaler: run `scalejob autoscale` as a real process, clean up its workers.

Workers the autoscaler spawns live in their own sessions and outlive a SIGKILLed autoscaler, so
teardown kills every process recorded in the local backend's Redis hash (checked by name in its
command line: only processes this test started are touched).
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from tests.conftest import Stack
from tests.helpers import Proc, python_argv, wait_for


class Autoscalers:
    """Start/stop autoscaler processes for one Stack and inspect what they did."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.procs: list[Proc] = []
        self.worker_pids: dict[str, int] = {}

    def start(self, *args: str, env: dict[str, str] | None = None) -> Proc:
        log = self.stack.tmp / f"autoscaler-{len(self.procs)}.log"
        proc = Proc(python_argv("-m", "app.cli", "autoscale", *args), {**self.stack.env, **(env or {})}, log)
        self.procs.append(proc)
        return proc

    def wait_leader(self, proc: Proc, timeout: float = 20) -> None:
        from app.core import keys

        wait_for(lambda: (v := self.stack.r.get(keys.autoscaler_lock())) and f":{proc.pid}:" in v.decode(), timeout, what=f"autoscaler {proc.pid} to lead")

    def local(self) -> dict[str, dict[str, Any]]:
        """The local backend's process records: worker name -> {pid, service, ...}."""
        from app.core import keys

        out = {k.decode(): json.loads(v) for k, v in self.stack.r.hgetall(keys.local_workers()).items()}
        self.worker_pids.update({n: int(rec["pid"]) for n, rec in out.items()})
        return out

    def live_worker_pids(self, service: str) -> set[int]:
        """Pids of live `worker SERVICE` processes this test's autoscalers started."""
        self.local()
        return {pid for name, pid in self.worker_pids.items() if _is_worker(pid, name)}

    def decisions(self, service: str) -> list[dict[str, Any]]:
        from app.queue import decisions as history

        return history.recent(self.stack.r, service, 500)

    def close(self) -> None:
        for p in self.procs:  # autoscalers first, so none forks a worker after the sweep below
            p.signal(signal.SIGKILL)
            p.kill_tree()
        services = {rec["service"] for rec in self.local().values()}
        marks = [f"--name {s}-" for s in services] + [f"-n {s}-" for s in services]  # unique per test
        doomed = {pid for name, pid in self.worker_pids.items() if _is_worker(pid, name)}
        for proc in psutil.process_iter(["pid", "cmdline"]):  # incl. one forked just before its record was written
            if any(m in " ".join(proc.info["cmdline"] or []) for m in marks):
                doomed.add(proc.info["pid"])
        for pid in doomed:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _is_worker(pid: int, name: str) -> bool:
    try:
        p = psutil.Process(pid)
        return p.status() != psutil.STATUS_ZOMBIE and name in " ".join(p.cmdline())
    except psutil.Error:
        return False


@pytest.fixture
def autoscalers(stack: Stack) -> Iterator[Autoscalers]:
    a = Autoscalers(stack)
    yield a
    a.close()


def autoscaled_spec(stack: Stack, **autoscaler: Any) -> dict[str, Any]:
    """A command service with an ``autoscaler`` block (EAS keys)."""
    return {"metadata": {"name": stack.service_name("as")}, "autoscaler": autoscaler}
