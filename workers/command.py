"""Running a ``command`` task: the payload as a shell command line, its output streamed live.

The child is ``workers.reaper`` (which runs ``/bin/sh -c COMMAND``): it leads its own process
group (so cancel/timeout can end the whole tree with one ``killpg``), gets ``PR_SET_PDEATHSIG``
and, as a child subreaper, ends the whole group, grandchildren included, when the worker dies
(even on SIGKILL). In a ``scalejob worker`` the reaper is forked by the worker's spawn server
(``workers/spawner.py``, ~1 ms) rather than started as a new interpreter (~20 ms).
Every output line is timestamped, kept in a bounded tail, scanned for progress and, when the
service writes logs to the queue, emitted as a ``log`` event at a capped rate.
"""

from __future__ import annotations

import ctypes
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from workers import spawner

PR_SET_PDEATHSIG = 1
DEFAULT_PROGRESS = r"(?:progress[:=]\s*(\d{1,3}(?:\.\d+)?)\s*%)|(?:(\d{1,3})%\|)"
TAIL_LINES = 50
REAPER = str(Path(__file__).with_name("reaper.py"))  # stdlib only: runs without the package on sys.path


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
    """``wait(timeout) -> exited?`` that wakes the moment the process exits.

    ``Popen.wait(timeout)`` polls with sleeps growing to 50 ms, which adds that much to every
    short task; a pidfd becomes readable exactly at exit.
    """

    def __init__(self, proc: subprocess.Popen[bytes] | spawner.Forked) -> None:
        self.proc = proc
        self.owned = not isinstance(proc, spawner.Forked)
        try:  # a forked reaper reports its exit on its status socket (it is not our child)
            self.fd: int | None = os.pidfd_open(proc.pid) if self.owned else proc.exit_fd()
        except (AttributeError, OSError):
            self.fd = None

    def wait(self, timeout: float) -> bool:
        if self.fd is None or (not self.owned and self.proc.buffered.endswith(b"\n")):  # type: ignore[union-attr]
            try:
                self.proc.wait(timeout=timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        return bool(select.select([self.fd], [], [], timeout)[0])

    def close(self) -> None:
        if self.fd is not None and self.owned:
            os.close(self.fd)
        self.fd = None


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
) -> CommandOutcome:
    """Run ``command`` to completion (or until ``should_stop`` names a reason) and report."""
    cwd.mkdir(parents=True, exist_ok=True)
    pattern = re.compile(progress_pattern or DEFAULT_PROGRESS, re.IGNORECASE)
    started = time.monotonic()
    server = spawner.current()
    proc: subprocess.Popen[bytes] | spawner.Forked | None = server.spawn(command, cwd, env, grace) if server else None
    if proc is None:  # no spawn server in this process: start the reaper directly (an interpreter start)
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", REAPER, str(os.getpid()), f"{grace:g}", command],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # no preexec_fn: the reaper arms its own death signal (fast spawn path)
        )
    if on_start:
        on_start(proc.pid)
    tail: deque[str] = deque(maxlen=TAIL_LINES)

    def pump() -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            tail.append(line)
            value = parse_progress(line, pattern)
            if value is not None:
                on_progress(value)
            on_line(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    reason: str | None = None
    watcher = ExitWatcher(proc)
    while True:
        if watcher.wait(0.25):
            proc.wait()
            break
        if max_runtime and time.monotonic() - started > max_runtime:
            reason = "max_runtime"
        else:
            reason = should_stop()
        if reason:
            kill_group(proc, grace)
            break
    watcher.close()
    reader.join(timeout=5)
    try:  # the leader exited on its own: end whatever it left in its group
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return CommandOutcome(proc.returncode, time.monotonic() - started, list(tail), reason)
