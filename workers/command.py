"""Running a ``command`` task: the payload as a shell command line, its output streamed live.

In a ``scalejob worker`` the worker's spawn server (``workers/process/spawner.py``) ``posix_spawn``s
``/bin/sh -c COMMAND`` in a new session: the shell leads its process group (cancel/timeout end
the whole tree with one ``killpg``), and the server, a child subreaper with a death signal, kills
what a command leaves behind and ends every command when the worker dies (even on SIGKILL).
Without a server the child is ``workers.process.reaper`` started directly (an interpreter start, ~20 ms),
which does the same for one command.
Every output line is timestamped, kept in a bounded tail, scanned for progress and, when the
service writes logs to the queue, emitted as a ``log`` event at a capped rate.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from workers.process import spawner

PR_SET_PDEATHSIG = 1
DEFAULT_PROGRESS = r"(?:progress[:=]\s*(\d{1,3}(?:\.\d+)?)\s*%)|(?:(\d{1,3})%\|)"
TAIL_LINES = 50
TAIL_LINE_CHARS = 2000  # each tail line is cut to this: the record's tail stays under ~100 KB whatever is printed
STORED_LINE_BYTES = 16 << 10  # a log line longer than this is cut before it is stored (marker + count)
REAPER = str(Path(__file__).parent / "process" / "reaper.py")  # stdlib only: runs without the package on sys.path


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


@dataclass
class CommandOutcome:
    exit_code: int | None
    duration: float
    tail: list[str]
    stopped_reason: str | None = None  # "cancelled" or "max_runtime" when we ended it

    def as_result(self) -> dict[str, object]:
        return {"exit_code": self.exit_code, "duration": round(self.duration, 3), "tail": self.tail}


@functools.cache
def progress_dir() -> str:
    """This process's private directory (0700) for the commands' progress files, made once.

    Why not a temp file per task: creating and removing one cost ~0.1 ms of a no-op task; a name
    in a directory only this worker can write is as safe and costs nothing until a command uses it.
    Named with the pid, so what a worker leaves can be told apart. Removed at exit by ``atexit``
    and, for a worker forked from the template (which leaves through ``os._exit``, skipping
    ``atexit``), by :func:`remove_progress_dir` in ``run_worker``.
    """
    path = tempfile.mkdtemp(prefix=f"scalejob-progress-{os.getpid()}-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def remove_progress_dir() -> None:
    """Remove this process's progress directory if it made one (every exit path of a worker calls this)."""
    if progress_dir.cache_info().currsize:
        shutil.rmtree(progress_dir(), ignore_errors=True)
        progress_dir.cache_clear()


class OutputBudget:
    """Per-request cap on the log bytes a command may store in Redis (stream and output queue).

    Why: one command printing 100 MB without a newline made a 54 MB request record and took
    Redis from 18 to 416 MiB. Over-long lines are cut; past ``cap`` bytes lines are dropped;
    either way the bytes not stored are counted and the result says ``truncated``.
    """

    def __init__(self, cap: int) -> None:
        self.cap, self.used, self.dropped_bytes = cap, 0, 0

    def take(self, line: str) -> str | None:
        """The line to store (perhaps cut), or None when the budget is spent."""
        data = line.encode("utf-8", errors="replace")
        if len(data) > STORED_LINE_BYTES:
            self.dropped_bytes += len(data) - STORED_LINE_BYTES
            cut = len(data) - STORED_LINE_BYTES
            line = data[:STORED_LINE_BYTES].decode("utf-8", errors="ignore") + f" [... {cut} bytes cut]"
            data = line.encode()
        if self.used + len(data) > self.cap:
            self.dropped_bytes += len(data)
            return None
        self.used += len(data)
        return line

    @property
    def truncated(self) -> bool:
        return self.dropped_bytes > 0


class RateLimiter:
    """Token bucket: a chatty command cannot flood Redis with log lines."""

    def __init__(self, per_second: float) -> None:
        self.rate, self.tokens, self.last = per_second, per_second, time.monotonic()
        self.dropped = 0

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        self.dropped += 1
        return False


def parse_progress(line: str, pattern: re.Pattern[str]) -> float | None:
    m = pattern.search(line)
    if not m:
        return None
    value = next((g for g in m.groups() if g is not None), None) if m.groups() else m.group(0)
    try:
        return max(0.0, min(100.0, float(value))) if value is not None else None
    except ValueError:
        return None


def kill_group(proc: subprocess.Popen[bytes] | spawner.Forked, grace: float) -> None:
    """SIGTERM the command's process group, SIGKILL it ``grace`` s later if the command is still there.

    A shell spawned by the spawn server leads the group itself, so the SIGKILL is sent here; a
    reaper started directly SIGKILLs its subtree after ``grace`` on its own, and gets 5 s more.
    """
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace if isinstance(proc, spawner.Forked) else grace + 5.0)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class ExitWatcher:
    """``ready(timeout, out) -> (exited, output readable)`` that wakes the moment either happens.

    ``Popen.wait(timeout)`` polls with sleeps growing to 50 ms, which adds that much to every
    short task; a pidfd (or the spawn server's status socket) becomes readable exactly at exit.
    The command's output pipe is watched in the same ``select``, so no reader thread is needed.
    """

    def __init__(self, proc: subprocess.Popen[bytes] | spawner.Forked) -> None:
        self.proc = proc
        self.owned = not isinstance(proc, spawner.Forked)
        try:  # a spawned command reports its exit on its status socket (it is not our child)
            self.fd: int | None = os.pidfd_open(proc.pid) if self.owned else cast(spawner.Forked, proc).exit_fd()
        except (AttributeError, OSError):
            self.fd = None

    def ready(self, timeout: float, out: int | None) -> tuple[bool, bool]:
        watched = [] if out is None else [out]
        if self.fd is None or (not self.owned and self.proc.buffered.endswith(b"\n")):  # type: ignore[union-attr]
            step = min(timeout, 0.05)  # no exit descriptor: poll the process while waiting on the output
            if watched:
                return self._exited(), bool(select.select(watched, [], [], step)[0])
            time.sleep(step)
            return self._exited(), False
        readable = select.select([self.fd, *watched], [], [], timeout)[0]
        return self.fd in readable, out is not None and out in readable

    def _exited(self) -> bool:
        try:
            self.proc.wait(timeout=0)
            return True
        except subprocess.TimeoutExpired:
            return False

    def close(self) -> None:
        if self.fd is not None and self.owned:
            os.close(self.fd)
        self.fd = None


class Lines:
    """Splits the command's output pipe into lines as it is read (a partial last line counts at EOF)."""

    MAX_LINE = 1 << 20  # a line longer than this without a newline is handed on in pieces

    def __init__(self, fd: int, on_line: Callable[[bytes], None]) -> None:
        self.fd, self.on_line, self.buf, self.open = fd, on_line, b"", True

    def read(self) -> None:
        """One ``read`` of what is available; call when ``select`` says the pipe is readable."""
        chunk = os.read(self.fd, 65536)
        if not chunk:
            self.open = False
            if self.buf:
                self.on_line(self.buf)
            self.buf = b""
            return
        *lines, self.buf = (self.buf + chunk).split(b"\n")
        if len(self.buf) > self.MAX_LINE:
            lines.append(self.buf)
            self.buf = b""
        for line in lines:
            self.on_line(line)

    def drain(self, timeout: float) -> None:
        """Read to EOF, for at most ``timeout`` s (a straggler may hold the pipe open)."""
        deadline = time.monotonic() + timeout
        while self.open and (left := deadline - time.monotonic()) > 0:
            if select.select([self.fd], [], [], left)[0]:
                self.read()


def run_command(
    command: str,
    cwd: Path,
    env: dict[str, str],
    on_line: Callable[[str], None],
    on_progress: Callable[[float], None],
    should_stop: Callable[[], str | None],
    progress_pattern: str | None = None,
    max_runtime: float | None = None,
    grace: float = 10.0,
    on_start: Callable[[int], None] | None = None,
    server: spawner.Server | None = None,
) -> CommandOutcome:
    """Run ``command`` to completion (or until ``should_stop`` names a reason) and report.

    ``server``: the worker's spawn server (None, or one that cannot take it: a reaper is started
    directly). One thread does everything: it waits in ``select`` on the command's exit and its
    output, and checks ``should_stop`` (cancel, progress file) every 0.25 s.
    """
    if not cwd.is_dir():  # one stat per task; mkdir(exist_ok=True) pays a failing syscall and an exception
        cwd.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    proc = _start(command, cwd, env, grace, server)
    if on_start:
        on_start(proc.pid)
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    assert proc.stdout is not None
    pattern = re.compile(progress_pattern or DEFAULT_PROGRESS, re.IGNORECASE)
    out = Lines(proc.stdout.fileno(), _line_handler(tail, pattern, on_progress, on_line))
    watcher = ExitWatcher(proc)
    try:
        reason = _watch(proc, out, watcher, started, max_runtime, should_stop, grace)
        out.drain(timeout=5.0)
    finally:
        watcher.close()
        proc.stdout.close()
    try:  # the leader exited on its own: end whatever it left in its group
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return CommandOutcome(proc.returncode, time.monotonic() - started, list(tail), reason)


def _start(command: str, cwd: Path, env: dict[str, str], grace: float,
           server: spawner.Server | None) -> subprocess.Popen[bytes] | spawner.Forked:
    """The command's shell: spawned by the server, or (no server, or it cannot) under a reaper started directly."""
    proc = server.spawn(command, cwd, env) if server else None
    if proc is not None:
        return proc
    return subprocess.Popen(  # an interpreter start (~20 ms)
        [sys.executable, "-I", "-S", REAPER, str(os.getpid()), f"{grace:g}", command],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # no preexec_fn: the reaper arms its own death signal (fast spawn path)
    )


def _line_handler(tail: deque[str], pattern: re.Pattern[str], on_progress: Callable[[float], None],
                  on_line: Callable[[str], None]) -> Callable[[bytes], None]:
    """What each output line goes through: the bounded tail, the progress pattern, then ``on_line``."""
    def line(raw: bytes) -> None:
        text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        cut = len(text) - TAIL_LINE_CHARS
        tail.append(text if cut <= 0 else text[:TAIL_LINE_CHARS] + f" [... {cut} chars cut]")
        value = parse_progress(text, pattern)
        if value is not None:
            on_progress(value)
        on_line(text)

    return line


def _watch(proc: subprocess.Popen[bytes] | spawner.Forked, out: Lines, watcher: ExitWatcher, started: float,
           max_runtime: float | None, should_stop: Callable[[], str | None], grace: float) -> str | None:
    """Read output until the command exits, or stop it when it ran too long or ``should_stop`` says why."""
    check_at = started + 0.25
    while True:
        exited, readable = watcher.ready(max(check_at - time.monotonic(), 0.0), out.fd if out.open else None)
        if readable:
            out.read()
        if exited:
            proc.wait()
            return None
        if time.monotonic() < check_at:
            continue
        check_at = time.monotonic() + 0.25
        reason = "max_runtime" if max_runtime and time.monotonic() - started > max_runtime else should_stop()
        if reason:
            kill_group(proc, grace)
            return reason
