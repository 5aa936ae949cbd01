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

import os
import signal
import sys

# Lean on purpose: this runs once per command task, under ``python -I -S``, so every import is
# paid on the task's critical path (subprocess + pathlib alone cost ~20 ms; these cost ~3 ms).
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PARENT_GONE_GRACE = 3.0


def _prctl(option: int, value: int) -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(option, value, 0, 0, 0)
    except OSError:
        pass


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid``: /proc/PID/task/*/children, else a scan of /proc/*/stat."""
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
        return out
    except OSError:
        pass
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            out.append(int(entry))
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


def _alive(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return False


def _end_group(child: int | None) -> None:
    """The worker is gone: end the whole command now (nobody will wait for a graceful stop)."""
    import time

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGALRM, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)  # our own killpg must not re-enter a handler
    pgid = os.getpgrp()
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + PARENT_GONE_GRACE
    while child is not None and _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    kill_descendants()
    os.killpg(pgid, signal.SIGKILL)  # the reaper included: its work is done


def run_shell(parent: int, grace: float, command: str, env: dict[str, str]) -> int:
    """Run ``/bin/sh -c command`` under this process as reaper; returns its exit code (-N: signal N)."""
    handled = {signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGALRM, signal.SIGUSR1}
    signal.pthread_sigmask(signal.SIG_UNBLOCK, handled)  # exec keeps the spawning thread's mask
    # A signal of its own for "the worker thread that started me is gone": when a worker is
    # SIGKILLed its threads die one by one, so getppid() may still name the worker at that
    # moment and cannot tell this apart from a SIGTERM the worker sent to stop the command.
    spawned: list[int] = []
    signal.signal(signal.SIGUSR1, lambda _s, _f: _end_group(spawned[0] if spawned else None))
    _prctl(PR_SET_PDEATHSIG, signal.SIGUSR1)
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    if os.getppid() != parent:  # the worker died before we armed the death signal
        return 137
    child = os.posix_spawn("/bin/sh", ["/bin/sh", "-c", command], env, setsigmask=())
    spawned.append(child)

    def on_term(signum: int, _frame: object) -> None:
        if os.getppid() != parent:
            _end_group(child)
        else:  # the worker stops the command (cancel, max_runtime): the group got SIGTERM;
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # whatever ignores it is killed
            signal.setitimer(signal.ITIMER_REAL, max(grace, 0.01))  # ``grace`` s from now

    def on_alarm(signum: int, _frame: object) -> None:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, on_term)
    signal.signal(signal.SIGALRM, on_alarm)
    _, status = os.waitpid(child, 0)  # blocks; signal handlers run and the wait resumes (PEP 475)
    code = os.waitstatus_to_exitcode(status)
    kill_descendants()  # SIGKILL the rest of the subtree, members that left the group included
    return code


def die_like(code: int) -> int:
    """Exit with ``code``; a signal death (code < 0) is repeated so the parent sees the same."""
    if code < 0:  # died by a signal: die the same way, so the worker sees what the shell saw
        if -code not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


def serve(parent: int, fd: int) -> int:
    """Spawn server: fork a reaper per request, so a command costs a fork, not an interpreter start.

    Requests come from the worker over a ``SOCK_SEQPACKET`` socket (``fd``): one JSON message
    (command, cwd, env, grace) with two descriptors: the write end of the command's output pipe
    and a status socket. The forked reaper leads a new session, writes ``<pid>\\n`` to the status
    socket, runs the command like ``main`` and writes its exit code there before exiting. Death
    chain: the worker dies -> this server gets SIGKILL (its death signal) -> each reaper gets
    its own death signal and ends its command's group, as when the worker starts it directly.
    """
    import json
    import socket

    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        return 0
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):  # only the worker ends us (EOF or death)
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # reapers report on their status socket: no zombies
    me = os.getpid()
    ctl = socket.socket(fileno=fd)
    while True:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(ctl, 1 << 20, 2)
        except InterruptedError:
            continue
        if not msg:
            return 0  # the worker closed its end: it is exiting
        if len(fds) != 2:
            for x in fds:
                os.close(x)
            continue
        out, status = fds
        req = json.loads(msg)
        if os.fork() == 0:  # the reaper of this command
            code = 1
            try:
                ctl.close()
                for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)
                os.setsid()
                os.set_inheritable(status, False)  # the command must not hold the status socket
                os.write(status, f"{os.getpid()}\n".encode())
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)
                os.dup2(out, 1)
                os.dup2(out, 2)
                os.close(null)
                os.close(out)
                os.chdir(req["cwd"])
                code = run_shell(me, float(req["grace"]), req["command"], req["env"])
                os.write(status, f"{code}\n".encode())
            finally:
                os._exit(code & 0xFF)
        os.close(out)
        os.close(status)


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[1] == "--serve":
        return serve(int(argv[2]), int(argv[3]))
    if len(argv) != 4:
        print("usage: python -m workers.reaper PARENT_PID GRACE COMMAND | --serve PARENT_PID FD", file=sys.stderr)
        return 2
    parent, grace, command = int(argv[1]), float(argv[2]), argv[3]
    return die_like(run_shell(parent, grace, command, dict(os.environ)))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
