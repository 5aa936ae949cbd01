"""Finding a local worker's process: by pid (guarded against reuse), by its name, or for adoption.

Why by name: a worker's command line carries ``--name NAME`` (its title when forked from the
template), so a process whose pid was never recorded (its autoscaler died around the fork) or
whose pid was reused is still told apart. Split from ``local.py``, which uses these; :class:`LocalProc` is
the record both keep of a worker.
"""

from __future__ import annotations

import json
import socket
import subprocess
from dataclasses import dataclass
from typing import Any

import psutil
import redis

from app.core import keys, replies
from autoscale.backends.base import WorkerHandle
from autoscale.leader import Leadership, lua


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
    # wall clock by which a starting worker must register; 0 once it did (or adopted from an old record)
    start_by: float = 0.0
    term: int = 0  # the leader term that decided the spawn

    def handle(self) -> WorkerHandle:
        meta = {"standby": "1" if self.standby else "", "gpus": self.gpus, "draining": "1" if self.draining else "",
                "stopping": "1" if self.stopping_at else "", "log": self.log_path,
                "start_by": repr(self.start_by) if self.start_by else ""}
        return WorkerHandle(name=self.name, service=self.service, ref=str(self.pid), pid=self.pid or None, meta=meta)

    def record(self) -> str:
        return json.dumps({"pid": self.pid, "host": socket.gethostname(), "service": self.service,
                           "standby": self.standby, "log": self.log_path, "started_at": self.started_at,
                           "gpus": self.gpus, "term": self.term, "start_by": self.start_by,
                           "stopping": self.stopping_at is not None})

    def alive(self) -> bool:
        if self.popen is not None and self.popen.poll() is not None:
            return False  # reaped: no zombie left behind
        try:
            return self.proc is not None and self.proc.is_running() and self.proc.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False


def stored_records(r: redis.Redis) -> dict[str, dict[str, Any]]:
    """Every local worker's record in Redis (name -> pid, host, service, ...), any host's."""
    stored = replies.fields(r.hgetall(keys.local_workers()))
    return {raw_name.decode(): json.loads(raw) for raw_name, raw in stored.items()}


def forget_records(r: redis.Redis, *names: str) -> None:
    if names:
        r.hdel(keys.local_workers(), *names)


def save_record(r: redis.Redis, name: str, record: str, fence: Leadership | None = None, what: str = "") -> None:
    """Store a worker's record; through ``fence`` (the leader's fenced write) when one is given."""
    if fence is not None:
        fence.write(keys.local_workers(), name, record, what)
    else:
        r.hset(keys.local_workers(), name, record)


def update_record(r: redis.Redis, p: LocalProc) -> None:
    """Rewrite a record only while it exists: a worker forgotten meanwhile is not brought back."""
    lua("hset_if_present")(keys=[keys.local_workers()], args=[p.name, p.record()], client=r)


def recorded_processes(r: redis.Redis) -> list[psutil.Process]:
    """The live worker processes of this host recorded in Redis, with their descendants (user apps).

    ``scalejob up`` kills these when the autoscaler did not stop them in time: workers run in
    sessions of their own, so they are neither in its process group nor, once adopted, its children.
    """
    host, out = socket.gethostname(), []
    for name, rec in stored_records(r).items():
        pid = int(rec.get("pid") or 0)
        proc = (matching_process(pid, name) if pid else find_process(name)) if rec.get("host") == host else None
        if proc is not None:
            try:
                out += [proc, *proc.children(recursive=True)]
            except psutil.Error:
                pass
    return out


def process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def matching_process(pid: int, name: str) -> psutil.Process | None:
    """The live process ``pid`` if it is still the worker ``name`` (guards against pid reuse)."""
    proc = process(pid)
    try:
        if proc is None or proc.status() == psutil.STATUS_ZOMBIE or name not in " ".join(proc.cmdline()):
            return None
    except psutil.Error:
        return None
    return proc


def find_process(name: str) -> psutil.Process | None:
    """The live worker process named ``name`` (its command line carries it), whatever its pid."""
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if name in " ".join(proc.info["cmdline"] or []) and proc.status() != psutil.STATUS_ZOMBIE:
                return proc
        except psutil.Error:
            continue
    return None


def adoptable(p: LocalProc, now: float, grace: float) -> psutil.Process | None:
    """The process of a recorded worker, if it still runs.

    A starting entry may name a child the template forked that has not set its title yet (its
    command line is still the template's): a process with that pid created after the record was
    written, while the spawn is young, is taken as the worker.
    """
    if not p.pid:
        return find_process(p.name)
    proc = matching_process(p.pid, p.name)
    if proc is None and p.start_by and now < p.started_at + grace:
        young = process(p.pid)
        try:
            if young is not None and young.create_time() >= p.started_at - 1 and young.status() != psutil.STATUS_ZOMBIE:
                return young
        except psutil.Error:
            return None
    return proc
