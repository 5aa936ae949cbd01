"""``python -m workers.process.reaper PARENT_PID GRACE COMMAND``: run a command so that nothing outlives its worker.

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

``--serve PARENT_PID FD`` runs the per-worker spawn server instead (:func:`serve`): the same
guarantees for all of a worker's commands without a Python process per command.
"""

from __future__ import annotations

import os
import signal
import sys

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing would cost the lean reaper (mypy reads the name)
if TYPE_CHECKING:
    from collections.abc import Callable

# Lean on purpose: started directly it runs once per command task, under ``python -I -S``, so every import is
# paid on the task's critical path (subprocess + pathlib alone cost ~20 ms; these cost ~3 ms).
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PARENT_GONE_GRACE = 3.0


def _prctl(option: int, value: int) -> None:
    try:
        import ctypes  # noqa: PLC0415 - a reaper starts per command: it imports only what its path needs

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


def kill_descendants(spare: Callable[[int], bool] = lambda _pid: False) -> None:
    """SIGKILL every process re-parented to this subreaper (but those ``spare`` keeps), until none is left."""
    me = os.getpid()
    for _ in range(50):
        kids = [pid for pid in children_of(me) if not spare(pid)]
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
    import time  # noqa: PLC0415 - a reaper starts per command: it imports only what its path needs

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


SPAWN_DEFAULTS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGCHLD, signal.SIGUSR1, signal.SIGPIPE,
                  signal.SIGXFSZ)


class Spawned:
    """The commands a spawn server runs: shell pid -> (status fd, env marker)."""

    def __init__(self) -> None:
        self.running: dict[int, tuple[int, str]] = {}
        self.seq = 0

    def start(self, req: dict, out: int, status: int) -> None:
        """``/bin/sh -c COMMAND`` in a new session (it leads its group), output to ``out``."""
        self.seq += 1
        token = f"{os.getpid()}.{self.seq}"
        env = {**req["env"], "SCALEJOB_COMMAND_TOKEN": token}
        try:
            os.chdir(req["cwd"])  # single-threaded: the cwd is ours alone between here and the spawn
            pid = os.posix_spawn(
                "/bin/sh", ["/bin/sh", "-c", req["command"]], env,
                file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                              (os.POSIX_SPAWN_DUP2, out, 1), (os.POSIX_SPAWN_DUP2, out, 2)],
                setsid=True, setsigmask=(), setsigdef=SPAWN_DEFAULTS,
            )
        except OSError:  # no pid written: the worker starts the reaper directly and reports the error
            os.close(status)
            return
        finally:
            os.close(out)
        self.running[pid] = (status, f"SCALEJOB_COMMAND_TOKEN={token}")
        try:
            os.write(status, f"{pid}\n".encode())
        except OSError:
            pass

    def reap(self) -> None:
        """Collect every exited child; a command that ended takes its leftovers with it."""
        while True:
            try:
                pid, st = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            entry = self.running.pop(pid, None)
            if entry is not None:
                self.finished(pid, entry[0], os.waitstatus_to_exitcode(st))

    def finished(self, pid: int, status: int, code: int) -> None:
        try:
            os.killpg(pid, signal.SIGKILL)  # what is left of its group
        except (ProcessLookupError, PermissionError):
            pass
        self.kill_orphans()
        try:
            os.write(status, f"{code}\n".encode())
        except OSError:
            pass
        os.close(status)

    def kill_orphans(self) -> None:
        """SIGKILL descendants re-parented to us (they left the group) unless a running command owns them.

        Why the marker: with several commands at once, an orphan is told apart by the
        ``SCALEJOB_COMMAND_TOKEN`` its command's environment passed down to it.
        """
        keep = {marker for _, marker in self.running.values()}
        kill_descendants(lambda pid: pid in self.running or bool(keep & _environ(pid)))

    def end_all(self) -> None:
        """The worker is gone: SIGTERM every command's group, a short grace, then SIGKILL everything."""
        import time  # noqa: PLC0415 - a reaper starts per command: it imports only what its path needs

        for pid in self.running:
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + PARENT_GONE_GRACE
        while self.running and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.05)
        for pid in self.running:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        kill_descendants()


def _environ(pid: int) -> set[str]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            entries = f.read().split(b"\0")
        return {x.decode(errors="replace") for x in entries if x.startswith(b"SCALEJOB_COMMAND_TOKEN=")}
    except OSError:
        return set()


def serve(parent: int, fd: int) -> int:
    """Spawn server: ``posix_spawn`` each command's shell, so a command costs no Python fork.

    Requests come from the worker over a ``SOCK_SEQPACKET`` socket (``fd``): one JSON message
    (command, cwd, env) with two descriptors: the write end of the command's output pipe
    and a status socket. The shell leads a new session (the worker's ``killpg`` reaches its whole
    group); the server writes ``<pid>\n`` to the status socket and, when the shell exits, its
    exit code. The server is the child subreaper of every command: a descendant that left the
    group is re-parented to it and killed when its command ends. Its death signal (the worker
    died, even by SIGKILL) ends every command: SIGTERM to each group, a 3 s grace, SIGKILL to
    everything it has left.
    """
    import json  # noqa: PLC0415 - a reaper starts per command: it imports only what its path needs
    import select  # noqa: PLC0415 - a reaper starts per command: it imports only what its path needs
    import socket  # noqa: PLC0415 - a reaper starts per command: it imports only what its path needs

    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1, signal.SIGCHLD})  # exec keeps the worker thread's mask
    gone: list[int] = []  # the death signal (the worker died) can come more than once: a flag, not an exception
    signal.signal(signal.SIGUSR1, lambda s, _f: gone.append(s))
    _prctl(PR_SET_PDEATHSIG, signal.SIGUSR1)
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    if os.getppid() != parent:
        return 0
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):  # only the worker ends us (EOF or death)
        signal.signal(sig, signal.SIG_IGN)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda _s, _f: None)  # handlers, so both signals reach the wakeup fd
    os.set_inheritable(fd, False)
    ctl = socket.socket(fileno=fd)
    spawned = Spawned()
    while not gone:
        watched: list[socket.socket | int] = [ctl, wake_r]
        ready = select.select(watched, [], [])[0]
        if wake_r in ready:
            while True:
                try:
                    if not os.read(wake_r, 512):
                        break
                except BlockingIOError:
                    break
            spawned.reap()
        if ctl not in ready:
            continue
        msg, fds, _flags, _addr = socket.recv_fds(ctl, 1 << 20, 2)
        if not msg:
            break  # the worker closed its end: it is exiting
        for x in fds:
            os.set_inheritable(x, False)  # received descriptors would leak into every later command
        if len(fds) != 2:
            for x in fds:
                os.close(x)
            continue
        spawned.start(json.loads(msg), fds[0], fds[1])
    spawned.end_all()
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[1] == "--serve":
        return serve(int(argv[2]), int(argv[3]))
    if len(argv) != 4:
        print("usage: python -m workers.process.reaper PARENT_PID GRACE COMMAND | --serve PARENT_PID FD",
              file=sys.stderr)
        return 2
    parent, grace, command = int(argv[1]), float(argv[2]), argv[3]
    return die_like(run_shell(parent, grace, command, dict(os.environ)))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
