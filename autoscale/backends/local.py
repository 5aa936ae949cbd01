"""Worker processes on this machine: ``python -m app.cli worker SERVICE`` (or any command).

Each worker runs in its own session/process group (a Ctrl-C on the autoscaler's terminal never
reaches it, and it outlives an autoscaler that is SIGKILLed) and writes stdout/stderr to
``<data_dir>/logs/<name>.log``. It is spawned with a fixed worker name so its registry entry can
be joined to its process. Every process this backend starts is recorded in Redis
(``keys.local_workers``: name -> pid, host, service); a restarted autoscaler on the same host
re-reads that hash and *adopts* the processes that are still alive (pid, start time and command
line checked, so a reused pid is never mistaken for a worker): no duplicates, no orphans.

A spawn is recorded *before* the fork, as a ``starting`` entry (pid 0 until the fork returns,
``start_by`` = when it must have registered), through the leader's fence (autoscale/leader.py):
a leader SIGKILLed between recording and forking, or between forking and writing the pid, leaves
an entry the next leader adopts and counts as capacity, finding the process by its name when the
pid is missing. So a worker exists for the policy from the moment it is decided, and a leader
whose term is over cannot fork at all. A spawn that never registers is reaped by the controller
(:meth:`LocalBackend.abandon`) at ``start_by``; one whose process never appeared is forgotten
after ``find_grace`` seconds.

Each worker's exit is watched (``exits.py``: a pidfd per process): once it and every command it
started are gone, ``on_exit(name, service)`` is called at once, so the controller requeues its
requests without waiting for their leases to expire. The controller calls :meth:`spawn`,
:meth:`stop` and :meth:`drain` from its action threads while its loop calls :meth:`list`: the
process table is guarded by a lock that is never held across a fork.

Stopping is always a warm shutdown first (SIGTERM to the worker's main process: Celery waits for
the running task); SIGKILL to the group only after ``force_after`` seconds and only if the worker
holds no task (``is_busy``), so a long task that slipped in during scale-in still finishes.
"""

from __future__ import annotations

import builtins
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redis

from app.queue.health import FailedStart, failed_by_itself, log_tail, reason_from
from autoscale.backends.base import BackendError, WorkerBackend, WorkerHandle
from autoscale.backends.exits import ExitWatcher, OnExit
from autoscale.backends.procs import (
    LocalProc,
    adoptable,
    find_process,
    forget_records,
    process,
    save_record,
    stored_records,
    update_record,
)
from autoscale.backends.template import Template
from autoscale.leader import Leadership

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
            raise BackendError(
                f"{service}: warm standby needs scalejob workers (plain Celery workers cannot start without consuming)"
            )
        return [*base, "-n", name]

    return command


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
    fence: Leadership | None = None  # spawns and stops are refused once this leader's term is over (None: unfenced)
    start_timeout: float = 300.0  # a spawn must register within this (init commands included), else it is reaped
    find_grace: float = 10.0  # a recorded spawn whose process never appeared is forgotten after this
    procs: dict[str, LocalProc] = field(default_factory=dict)
    failed: list[FailedStart] = field(default_factory=list)  # failed starts not yet taken by the controller
    on_exit: OnExit | None = None  # (name, service): a worker and all it started exited (set by the controller)
    closed: bool = False  # stop_all() began: no more spawns
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _exits: ExitWatcher | None = None

    # -- adoption ---------------------------------------------------------------------------
    def adopt(self) -> list[str]:
        """Take over the live workers (and recorded, still starting spawns) a previous autoscaler on this host left."""
        with self._lock:
            return self._adopt()

    def _adopt(self) -> list[str]:
        host, adopted, dead, now = socket.gethostname(), [], [], time.time()
        for name, rec in stored_records(self.r).items():
            if rec.get("host") != host or name in self.procs:
                continue
            p = LocalProc(name, rec["service"], int(rec.get("pid") or 0), bool(rec.get("standby")), rec.get("log", ""),
                          float(rec.get("started_at", 0)), gpus=rec.get("gpus", ""),
                          start_by=float(rec.get("start_by") or 0), term=int(rec.get("term") or 0))
            p.proc = adoptable(p, now, self.find_grace)
            if rec.get("stopping"):  # its predecessor already told it to stop: it is on its way out, not starting
                p.draining, p.stopping_at = True, time.monotonic()
            if p.proc is None and not (p.pid == 0 and p.start_by and now < p.started_at + self.find_grace):
                dead.append(name)
                continue
            p.pid = p.proc.pid if p.proc else 0
            self.procs[name] = p
            self._watch(p)
            adopted.append(name)
        if dead:
            forget_records(self.r, *dead)
        if adopted:
            log.info("adopted %d running worker(s): %s", len(adopted), ", ".join(sorted(adopted)))
        return adopted

    # -- WorkerBackend ----------------------------------------------------------------------
    def list(self, service: str) -> list[WorkerHandle]:
        with self._lock:
            self._reap()
            return [p.handle() for p in self.procs.values() if p.service == service]

    def services(self) -> set[str]:
        """Services that have processes here (including ones no longer deployed)."""
        with self._lock:
            self._reap()
            return {p.service for p in self.procs.values()}

    def spawn(self, service: str, env: dict[str, str]) -> WorkerHandle:
        if self.closed:
            raise BackendError(f"{service}: not started: the autoscaler is stopping its workers")
        env = dict(env)
        standby = env.pop("SCALEJOB_STANDBY", "") not in ("", "0")
        name = f"{service}-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"
        argv = self.command(service, name, standby)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name.split('@', maxsplit=1)[0]}.log"
        now = time.time()
        p = LocalProc(name, service, 0, standby, str(log_path), now, gpus=env.get("CUDA_VISIBLE_DEVICES", ""),
                      start_by=now + self.start_timeout,
                      term=self.fence.term if self.fence else 0)
        self._write(name, p.record(), f"spawn {name}")  # before the fork: a successor counts it even if we die now
        popen = None
        try:
            if self.template is not None and self.command is scalejob_command:
                pid = self.template.fork(service, name, standby, env, log_path)
            else:
                with open(log_path, "ab") as out:
                    popen = subprocess.Popen(argv, env={**os.environ, **env}, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                             stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
                pid = popen.pid
        except OSError as exc:
            forget_records(self.r, name)
            raise BackendError(f"{service}: cannot start worker {argv[0]!r}: {exc}") from None
        p.pid, p.popen, p.proc = pid, popen, process(pid)
        with self._lock:
            self.procs[name] = p
            self._update(p)  # only if still there: a newer leader may have expired the entry meanwhile
            self._watch(p)
            if self.closed:  # stop_all() began while it forked: it waits for this one too
                self.stop(p.handle())
        log.info("started worker %s (pid %d%s), log %s", name, p.pid, ", standby" if standby else "", log_path)
        return p.handle()

    def drain(self, handle: WorkerHandle) -> None:
        with self._lock:
            p = self.procs.get(handle.name)
            if p is not None:
                if p.draining:
                    return
                self.check_fence(f"drain {handle.name}")
                p.draining = True
        if self.cancel_consumer is not None:
            self.cancel_consumer(handle.service, handle.name)

    def stop(self, handle: WorkerHandle) -> None:
        with self._lock:
            self._stop(handle)

    def _stop(self, handle: WorkerHandle) -> None:
        p = self.procs.get(handle.name)
        if p is None or p.stopping_at is not None:
            return
        self.check_fence(f"stop {p.name}")
        if not p.pid:  # recorded, its process not found yet: nothing to signal, nothing to wait for
            self._forget(p.name)
            return
        p.draining, p.stopping_at = True, time.monotonic()
        _signal(p.pid, signal.SIGTERM)
        self._update(p)
        log.info("warm shutdown of worker %s (pid %d)", p.name, p.pid)

    def failed_starts(self, service: str) -> builtins.list[FailedStart]:  # builtins: the method list() shadows it
        """Take the workers of ``service`` that exited before they registered (crash-loop backoff)."""
        mine = [f for f in self.failed if f.service == service]
        self.failed = [f for f in self.failed if f.service != service]
        return mine

    def started(self, handle: WorkerHandle) -> None:
        """The worker registered: it is no longer a spawn that may be reaped for not starting."""
        with self._lock:
            p = self.procs.get(handle.name)
            if p is not None and p.start_by:
                p.start_by = 0.0
                self._update(p)

    def abandon(self, handle: WorkerHandle) -> None:
        """A spawn that never registered by ``start_by``: kill it (it cannot hold a task) and drop its record."""
        with self._lock:
            self._abandon(handle)

    def _abandon(self, handle: WorkerHandle) -> None:
        p = self.procs.get(handle.name)
        if p is None:
            return
        self.check_fence(f"reap {p.name}")
        if p.pid:
            log.warning("worker %s (pid %d) did not register within %.0fs of its spawn; killing it",
                        p.name, p.pid, self.start_timeout)
            _signal(-p.pid, signal.SIGKILL)
        tail = log_tail(p.log_path)
        why = f"did not become ready within {self.start_timeout:.0f}s; last output: {tail[-1] if tail else 'none'}"
        self.failed.append(FailedStart(p.service, p.name, time.time(), None, why, tail))
        self._forget(p.name)

    def stop_all(self, timeout: float | None = None) -> bool:
        """Warm-shutdown every worker and wait up to ``timeout`` s (None: until they exit).

        Unfenced: this runs as the autoscaler exits, after it gave the lock back on purpose."""
        with self._lock:
            self.fence, self.closed = None, True
            for p in list(self.procs.values()):
                self._stop(p.handle())
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.procs and (deadline is None or time.monotonic() < deadline):
            with self._lock:
                self._reap()
            time.sleep(0.1)
        return not self.procs

    def close(self) -> None:
        if self._exits is not None:
            self._exits.close()
        if self.template is not None:
            self.template.close()

    # -- internals --------------------------------------------------------------------------
    def _write(self, name: str, value: str, what: str) -> None:
        """Record a process entry; fenced to our leader term when we have one."""
        save_record(self.r, name, value, self.fence, what)

    def _watch(self, p: LocalProc) -> None:
        """Report the exit of ``p`` (and of what it started) the moment it happens, once its pid is known."""
        if self.on_exit is None or not p.pid:
            return
        if self._exits is None:
            self._exits = ExitWatcher(lambda name, service: self.on_exit and self.on_exit(name, service))
        try:
            created = p.proc.create_time() if p.proc is not None else None
        except psutil.Error:
            created = None
        self._exits.watch(p.name, p.service, p.pid, created)

    def _update(self, p: LocalProc) -> None:
        update_record(self.r, p)

    def _forget(self, name: str) -> None:
        self.procs.pop(name, None)
        forget_records(self.r, name)

    def _resolve(self, p: LocalProc) -> bool:
        """A recorded spawn without a pid (its leader died around the fork): find it by name; False once given up."""
        proc = find_process(p.name)
        if proc is not None:
            p.pid, p.proc = proc.pid, proc
            self._update(p)
            self._watch(p)
            return True
        return time.time() < p.started_at + self.find_grace

    def _reap(self) -> None:
        """Forget exited processes; force-kill a stuck shutdown that holds no task."""
        gone = []
        for name, p in self.procs.items():
            if not p.pid:
                if not self._resolve(p):
                    gone.append(name)
            elif not p.alive():
                gone.append(name)
                if p.start_by and p.stopping_at is None:  # exited before it registered: a failed start?
                    code, tail = p.popen.returncode if p.popen is not None else None, log_tail(p.log_path)
                    if failed_by_itself(p.service, code, tail):
                        why = reason_from(p.service, code, tail)
                        self.failed.append(FailedStart(p.service, name, time.time(), code, why, tail))
            elif (p.stopping_at is not None and time.monotonic() - p.stopping_at > self.force_after
                  and not self.is_busy(name)):
                log.warning("worker %s did not exit %.0fs after SIGTERM and holds no task; killing it",
                            name, self.force_after)
                _signal(-p.pid, signal.SIGKILL)
        for name in gone:
            del self.procs[name]
        if gone:
            forget_records(self.r, *gone)


def _signal(pid: int, sig: int) -> None:
    try:
        if pid < 0:
            os.killpg(-pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
