"""Worker processes on this machine: ``python -m app.cli worker SERVICE`` (or any command).

Each worker runs in its own session/process group (a Ctrl-C on the autoscaler's terminal never
reaches it, and it outlives an autoscaler that is SIGKILLed) and writes stdout/stderr to
``<data_dir>/logs/<name>.log``. It is spawned with a fixed worker name so its registry entry can
be joined to its process. Every process this backend starts is recorded in Redis
(``keys.local_workers``: name -> pid, host, service); a restarted autoscaler on the same host
re-reads that hash and *adopts* the processes that are still alive (pid, start time and command
line checked, so a reused pid is never mistaken for a worker): no duplicates, no orphans.

Stopping is always a warm shutdown first (SIGTERM to the worker's main process: Celery waits for
the running task); SIGKILL to the group only after ``force_after`` seconds and only if the worker
holds no task (``is_busy``), so a long task that slipped in during scale-in still finishes.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redis

from app import keys
from autoscale.backends.base import BackendError, WorkerBackend, WorkerHandle
from autoscale.backends.template import Template

log = logging.getLogger(__name__)

Command = Callable[[str, str, bool], list[str]]  # (service, worker name, standby) -> argv
CancelConsumer = Callable[[str, str], object]  # (service, worker name): stop consuming the service queue


def scalejob_command(service: str, name: str, standby: bool) -> list[str]:
    """The argv of a scalejob worker instance."""
    argv = [sys.executable, "-m", "app.cli", "worker", service, "--name", name]
    return argv + ["--standby"] if standby else argv


def celery_command(worker_cmd: str) -> Command:
    """The argv of a plain Celery worker: the user's command plus ``-n NAME`` (no standby mode)."""
    base = shlex.split(worker_cmd)

    def command(service: str, name: str, standby: bool) -> list[str]:
        if standby:
            raise BackendError(f"{service}: warm standby needs scalejob workers (plain Celery workers cannot start without consuming)")
        return [*base, "-n", name]

    return command


@dataclass
class LocalProc:
    """One worker process this backend runs (spawned here or adopted)."""

    name: str
    service: str
    pid: int
    standby: bool
    log_path: str
    started_at: float
    popen: subprocess.Popen | None = None  # None when adopted (not our child)
    proc: psutil.Process | None = None
    draining: bool = False
    stopping_at: float | None = None
    gpus: str = ""  # CUDA_VISIBLE_DEVICES it was started with

    def handle(self) -> WorkerHandle:
        meta = {"standby": "1" if self.standby else "", "gpus": self.gpus, "draining": "1" if self.draining else "", "stopping": "1" if self.stopping_at else "", "log": self.log_path}
        return WorkerHandle(name=self.name, service=self.service, ref=str(self.pid), pid=self.pid, meta=meta)

    def record(self) -> str:
        return json.dumps({"pid": self.pid, "host": socket.gethostname(), "service": self.service, "standby": self.standby, "log": self.log_path, "started_at": self.started_at, "gpus": self.gpus})

    def alive(self) -> bool:
        if self.popen is not None and self.popen.poll() is not None:
            return False  # reaped: no zombie left behind
        try:
            return self.proc is not None and self.proc.is_running() and self.proc.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False


@dataclass
class LocalBackend(WorkerBackend):
    """Worker processes of this host, recorded in Redis so a restarted autoscaler adopts them."""

    r: redis.Redis
    log_dir: Path
    command: Command = scalejob_command
    cancel_consumer: CancelConsumer | None = None
    is_busy: Callable[[str], bool] = lambda name: True
    force_after: float = 60.0
    cwd: Path = field(default_factory=Path.cwd)
    template: Template | None = None  # fork scalejob workers from a pre-imported template (template.py)
    procs: dict[str, LocalProc] = field(default_factory=dict)

    # -- adoption ---------------------------------------------------------------------------
    def adopt(self) -> list[str]:
        """Take over the live workers a previous autoscaler on this host started; forget dead ones."""
        host, adopted, dead = socket.gethostname(), [], []
        for raw_name, raw in self.r.hgetall(keys.local_workers()).items():
            name, rec = raw_name.decode(), json.loads(raw)
            if rec.get("host") != host or name in self.procs:
                continue
            proc = _matching_process(int(rec["pid"]), name)
            if proc is None:
                dead.append(name)
                continue
            self.procs[name] = LocalProc(name, rec["service"], proc.pid, bool(rec.get("standby")), rec.get("log", ""), float(rec.get("started_at", 0)), proc=proc, gpus=rec.get("gpus", ""))
            adopted.append(name)
        if dead:
            self.r.hdel(keys.local_workers(), *dead)
        if adopted:
            log.info("adopted %d running worker(s): %s", len(adopted), ", ".join(sorted(adopted)))
        return adopted

    # -- WorkerBackend ----------------------------------------------------------------------
    def list(self, service: str) -> list[WorkerHandle]:
        self._reap()
        return [p.handle() for p in self.procs.values() if p.service == service]

    def services(self) -> set[str]:
        """Services that have processes here (including ones no longer deployed)."""
        self._reap()
        return {p.service for p in self.procs.values()}

    def spawn(self, service: str, env: dict[str, str]) -> WorkerHandle:
        env = dict(env)
        standby = env.pop("SCALEJOB_STANDBY", "") not in ("", "0")
        name = f"{service}-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"
        argv = self.command(service, name, standby)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name.split('@')[0]}.log"
        popen = None
        try:
            if self.template is not None and self.command is scalejob_command:
                pid = self.template.fork(service, name, standby, env, log_path)
            else:
                with open(log_path, "ab") as out:
                    popen = subprocess.Popen(argv, env={**os.environ, **env}, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
                pid = popen.pid
        except OSError as exc:
            raise BackendError(f"{service}: cannot start worker {argv[0]!r}: {exc}") from None
        p = LocalProc(name, service, pid, standby, str(log_path), time.time(), popen=popen, proc=_process(pid), gpus=env.get("CUDA_VISIBLE_DEVICES", ""))
        self.procs[name] = p
        self.r.hset(keys.local_workers(), name, p.record())
        log.info("started worker %s (pid %d%s), log %s", name, p.pid, ", standby" if standby else "", log_path)
        return p.handle()

    def drain(self, handle: WorkerHandle) -> None:
        p = self.procs.get(handle.name)
        if p is not None:
            if p.draining:
                return
            p.draining = True
        if self.cancel_consumer is not None:
            self.cancel_consumer(handle.service, handle.name)

    def stop(self, handle: WorkerHandle) -> None:
        p = self.procs.get(handle.name)
        if p is None or p.stopping_at is not None:
            return
        p.draining, p.stopping_at = True, time.monotonic()
        _signal(p.pid, signal.SIGTERM)
        log.info("warm shutdown of worker %s (pid %d)", p.name, p.pid)

    def stop_all(self, timeout: float | None = None) -> bool:
        """Warm-shutdown every worker and wait up to ``timeout`` s (None: until they exit)."""
        for p in list(self.procs.values()):
            self.stop(p.handle())
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.procs and (deadline is None or time.monotonic() < deadline):
            self._reap()
            time.sleep(0.1)
        return not self.procs

    def close(self) -> None:
        if self.template is not None:
            self.template.close()

    # -- internals --------------------------------------------------------------------------
    def _reap(self) -> None:
        """Forget exited processes; force-kill a stuck shutdown that holds no task."""
        gone = []
        for name, p in self.procs.items():
            if not p.alive():
                gone.append(name)
            elif p.stopping_at is not None and time.monotonic() - p.stopping_at > self.force_after and not self.is_busy(name):
                log.warning("worker %s did not exit %.0fs after SIGTERM and holds no task; killing it", name, self.force_after)
                _signal(-p.pid, signal.SIGKILL)
        for name in gone:
            del self.procs[name]
        if gone:
            self.r.hdel(keys.local_workers(), *gone)


def recorded_processes(r: redis.Redis) -> list[psutil.Process]:
    """The live worker processes of this host recorded in Redis, with their descendants (user apps).

    ``scalejob up`` kills these when the autoscaler did not stop them in time: workers run in
    sessions of their own, so they are neither in its process group nor, once adopted, its children.
    """
    host, out = socket.gethostname(), []
    for raw_name, raw in r.hgetall(keys.local_workers()).items():
        rec = json.loads(raw)
        proc = _matching_process(int(rec["pid"]), raw_name.decode()) if rec.get("host") == host else None
        if proc is not None:
            try:
                out += [proc, *proc.children(recursive=True)]
            except psutil.Error:
                pass
    return out


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def _matching_process(pid: int, name: str) -> psutil.Process | None:
    """The live process ``pid`` if it is still the worker ``name`` (guards against pid reuse)."""
    proc = _process(pid)
    try:
        if proc is None or proc.status() == psutil.STATUS_ZOMBIE or name not in " ".join(proc.cmdline()):
            return None
    except psutil.Error:
        return None
    return proc


def _signal(pid: int, sig: int) -> None:
    try:
        if pid < 0:
            os.killpg(-pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
