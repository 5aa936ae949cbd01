"""``python -m workers.reaper PARENT_PID GRACE COMMAND``: run a command so that nothing outlives its worker.

Why a wrapper: ``PR_SET_PDEATHSIG`` only reaches the direct child of the worker. With
``/bin/sh -c 'a | b; c &'`` that child is the shell, and when the worker is SIGKILLed the
shell's own children (the actual training process) survive as orphans beside the copy the
recovery loop starts elsewhere. This tiny process sits between the worker and the shell:

* it is the leader of the command's process group (the worker starts it with ``setsid``), so the
  worker's ``killpg(SIGTERM)`` on cancel / ``max_runtime`` reaches every process of the command;
  ``GRACE`` seconds later it SIGKILLs whatever is left of its subtree;
* it asks for ``SIGTERM`` when its parent dies (``PR_SET_PDEATHSIG``) and then ends the whole
  group: ``SIGTERM``, a short grace, ``SIGKILL``;
* it is a child subreaper (``PR_SET_CHILD_SUBREAPER``): descendants whose parent exits are
  re-parented to it rather than to init, so even one that left the group (``setsid``,
  double fork) is still its child and is killed when the command ends.

Its exit status is the shell's: the same code, or death by the same signal.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PARENT_GONE_GRACE = 3.0


def _prctl(option: int, value: int) -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(option, value, 0, 0, 0)
    except OSError:
        pass


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc: no dependency beyond Linux)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def kill_descendants() -> None:
    """SIGKILL every process re-parented to this subreaper, until none is left."""
    me = os.getpid()
    for _ in range(50):
        kids = children_of(me)
        if not kids:
            return
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in kids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def _end_group(child: subprocess.Popen[bytes]) -> None:
    """The worker is gone: end the whole command now (nobody will wait for a graceful stop)."""
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)  # our own killpg must not re-enter the handler
    pgid = os.getpgrp()
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + PARENT_GONE_GRACE
    while child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    kill_descendants()
    os.killpg(pgid, signal.SIGKILL)  # the reaper included: its work is done


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print("usage: python -m workers.reaper PARENT_PID GRACE COMMAND", file=sys.stderr)
        return 2
    parent, grace, command = int(argv[1]), float(argv[2]), argv[3]
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    if os.getppid() != parent:  # the worker died before we armed the death signal
        return 137
    child = subprocess.Popen(["/bin/sh", "-c", command])
    stop_at: list[float] = []

    def on_term(signum: int, _frame: object) -> None:
        if os.getppid() != parent:
            _end_group(child)
        elif not stop_at:  # the worker stops the command (cancel, max_runtime): the group got
            stop_at.append(time.monotonic() + grace)  # SIGTERM; whatever ignores it is killed

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, on_term)
    while True:
        try:
            code = child.wait(timeout=0.2)
            break
        except subprocess.TimeoutExpired:
            if stop_at and time.monotonic() > stop_at[0]:
                child.kill()
                code = child.wait()
                break
    kill_descendants()  # SIGKILL the rest of the subtree, members that left the group included
    if code < 0:  # died by a signal: die the same way, so the worker sees what the shell saw
        if -code not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
