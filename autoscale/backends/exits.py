"""Know the moment a local worker is dead, and everything it started with it.

Why: a worker that dies holding a request keeps its lease until the lease TTL runs out
(``SCALEJOB_HEARTBEAT_TTL``, 5 s), because nobody else can tell a dead worker from a slow one.
The local backend can: it owns the process. A pidfd (``os.pidfd_open``) becomes readable when
its process exits, whoever its parent is (a worker forked by the template, one started with
``Popen``, one adopted from a previous autoscaler), so one thread polling them learns of each
exit at once, with no signal handler and no polling of ``/proc``.

"Dead" must mean *nothing of it runs*: a worker's commands run under ``workers/process/reaper.py``
(directly, or under its spawn server), which end them when the worker dies but give them
``PARENT_GONE_GRACE`` (3 s) to exit on SIGTERM. A request released while its command still
runs would run twice. So on a worker's exit the watcher also waits for the processes that
still name it: reapers whose command line carries its pid as their parent, and forks of it not
yet exec'd (its name in their command line). Only when all are gone is ``on_exit(name, service)``
called; if some outlive ``give_up`` seconds the worker is left to the lease TTL.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

log = logging.getLogger(__name__)

OnExit = Callable[[str, str], object]  # (worker name, service)


@dataclass
class _Watched:
    name: str
    service: str
    pid: int
    fds: set[int] = field(default_factory=set)  # pidfds still open: the worker's, then its leftovers'
    since: float = 0.0  # monotonic: when the worker itself exited (0: still running)


class ExitWatcher:
    """pidfds of a backend's workers, polled by one daemon thread (started on first :meth:`watch`)."""

    def __init__(self, on_exit: OnExit, give_up: float = 30.0) -> None:
        self.on_exit, self.give_up = on_exit, give_up
        self._by_fd: dict[int, _Watched] = {}
        self._names: dict[str, _Watched] = {}
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._thread: threading.Thread | None = None
        self._closed = False

    def watch(self, name: str, service: str, pid: int, created: float | None) -> None:
        """Watch worker ``name`` (process ``pid``, created at ``created`` if known: a reused pid is not it)."""
        if self._closed or not pid or name in self._names:
            return
        w = _Watched(name, service, pid)
        fd = _pidfd(pid, created)
        with self._lock:
            self._names[name] = w
            if fd is None:  # already gone
                w.since = time.monotonic()
            else:
                w.fds.add(fd)
                self._by_fd[fd] = w
        if fd is None:
            threading.Thread(target=self._exited, args=(w,), name="scalejob-exit", daemon=True).start()
        self._start()
        self._wake()

    def close(self) -> None:
        """Stop watching (the autoscaler exits; its successor watches again after adopting)."""
        self._closed = True
        self._wake()

    # -- the thread ---------------------------------------------------------------------------
    def _start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="scalejob-exits", daemon=True)
                self._thread.start()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass

    def _loop(self) -> None:
        poller = select.poll()
        registered: set[int] = set()
        poller.register(self._wake_r, select.POLLIN)
        while not self._closed:
            with self._lock:
                want = set(self._by_fd)
            for fd in want - registered:
                poller.register(fd, select.POLLIN)
            for fd in registered - want:
                poller.unregister(fd)
            registered = want
            for fd, _ev in poller.poll(1000):
                if fd == self._wake_r:
                    os.read(self._wake_r, 4096)
                else:
                    self._ended(fd)
            self._expire()
        for fd in registered:
            os.close(fd)

    def _ended(self, fd: int) -> None:
        """A watched process exited: the worker (look for its leftovers) or one of its leftovers."""
        with self._lock:
            w = self._by_fd.pop(fd, None)
            if w is None:
                return  # closed meanwhile (given up): not ours to close again
            w.fds.discard(fd)
        os.close(fd)
        if not w.since:
            w.since = time.monotonic()
            self._exited(w)
        elif not w.fds:
            self._fire(w)

    def _exited(self, w: _Watched) -> None:
        """The worker process is gone: wait for what it started, or report it dead now."""
        fds = {fd for proc in leftovers(w.pid, w.name) if (fd := _pidfd(proc.pid, _created(proc))) is not None}
        with self._lock:
            for fd in fds:
                w.fds.add(fd)
                self._by_fd[fd] = w
        if fds:
            log.info("worker %s exited; waiting for %d process(es) it started before releasing its requests",
                     w.name, len(fds))
            self._wake()
        else:
            self._fire(w)

    def _fire(self, w: _Watched) -> None:
        with self._lock:
            self._names.pop(w.name, None)
        try:
            self.on_exit(w.name, w.service)
        except Exception:  # noqa: BLE001 - the watcher must outlive a failed callback
            log.exception("exit of worker %s", w.name)

    def _expire(self) -> None:
        """Leftovers that outlive ``give_up``: stop waiting (the lease TTL recovers their requests)."""
        now = time.monotonic()
        with self._lock:
            late = [w for w in self._names.values() if w.since and w.fds and now - w.since > self.give_up]
            for w in late:
                for fd in w.fds:
                    self._by_fd.pop(fd, None)
                    os.close(fd)
                w.fds.clear()
                self._names.pop(w.name, None)
        for w in late:
            log.warning("worker %s exited but processes it started still run after %.0fs; "
                        "its requests wait for the lease TTL", w.name, self.give_up)


def leftovers(pid: int, name: str) -> list[psutil.Process]:
    """Live processes a dead worker started that may still run a command of it.

    ``workers/process/reaper.py PARENT GRACE CMD`` and ``workers/process/reaper.py --serve PARENT FD`` name the
    worker's pid as PARENT; a fork of the worker that has not exec'd yet still carries its name.
    """
    me, out = str(pid), []
    for proc in psutil.process_iter(["cmdline", "status"]):
        argv = proc.info["cmdline"] or []
        if proc.pid == pid or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        reaper = next((i for i, a in enumerate(argv) if a.endswith("reaper.py")), None)
        args = argv[reaper + 1:reaper + 3] if reaper is not None else []
        if me in args[:1] or args == ["--serve", me] or (name and any(name == a for a in argv)):
            out.append(proc)
    return out


def _created(proc: psutil.Process) -> float | None:
    try:
        return proc.create_time()
    except psutil.Error:
        return None


def _pidfd(pid: int, created: float | None) -> int | None:
    """A pidfd of ``pid`` if that process still runs and is the one created at ``created``; else None."""
    try:
        fd = os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE or (created is not None and abs(proc.create_time() - created) > 0.01):
            os.close(fd)
            return None
    except psutil.Error:
        os.close(fd)
        return None
    return fd
