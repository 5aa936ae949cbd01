"""The worker side of the spawn server (``workers/process/reaper.py --serve``): each command's shell spawned by it.

Why: starting a Python reaper for each command costs ~20 ms (most of a short task's cycle), and
even forking one from a lean server costs ~1 ms more than needed. The server is started once per
worker process, from its main thread (``PR_SET_PDEATHSIG`` follows the thread that started a
process), so its death signal means "the worker is gone". It ``posix_spawn``s each command's
``/bin/sh -c`` in a session of its own and is the child subreaper of all of them: it kills what a
command leaves behind when it ends, and every command when the worker dies. Where no server runs
(a plain ``celery worker``, a request too large for one message, a server that died),
:func:`workers.command.run_command` starts the reaper directly. The server belongs to the
worker's spawn-server bootstep (``workers/steps.py``), which starts and stops it.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

MAX_REQUEST = 200_000  # bytes of one request message (command + env); larger ones start a reaper directly


class Forked:
    """A command's shell spawned by the server, with the parts of ``subprocess.Popen`` that ``run_command`` uses."""

    def __init__(self, pid: int, stdout: IO[bytes], status: socket.socket, buffered: bytes = b"") -> None:
        self.pid, self.stdout, self.status, self.buffered = pid, stdout, status, buffered
        self.returncode: int | None = None

    def exit_fd(self) -> int:
        """Readable when the command has exited (its code, or EOF if the server died)."""
        return self.status.fileno()

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            data = self.buffered
            if not data.endswith(b"\n") and not select.select([self.status], [], [], timeout)[0]:
                raise subprocess.TimeoutExpired("reaper", timeout or 0)
            while not data.endswith(b"\n"):
                chunk = self.status.recv(64)
                if not chunk:
                    break
                data += chunk
            self.returncode = int(data) if data.strip() else -9  # no code: the server was SIGKILLed
            self.status.close()
        return self.returncode


class Server:
    """One worker's spawn server process and its control socket."""

    def __init__(self, reaper: str) -> None:
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", reaper, "--serve", str(os.getpid()), str(theirs.fileno())],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to the worker's group is not for it
        )
        theirs.close()
        self.lock = threading.Lock()

    def spawn(self, command: str, cwd: Path, env: dict[str, str]) -> Forked | None:
        """Spawn ``command``'s shell; None when the server cannot take it (start a reaper directly)."""
        msg = json.dumps({"command": command, "cwd": str(cwd), "env": env}).encode()
        if len(msg) > MAX_REQUEST or self.proc.poll() is not None:
            return None
        out_r, out_w = os.pipe()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with self.lock:
                socket.send_fds(self.sock, [msg], [out_w, theirs.fileno()])
        except OSError:
            os.close(out_r)
            mine.close()
            return None
        finally:
            os.close(out_w)
            theirs.close()
        buf = b""
        while b"\n" not in buf:
            chunk = mine.recv(32)
            if not chunk:  # not spawned (server killed, cwd missing): run it directly, which reports why
                os.close(out_r)
                mine.close()
                return None
            buf += chunk
        pid, rest = buf.split(b"\n", 1)  # a fast command's exit code may already follow
        return Forked(int(pid), os.fdopen(out_r, "rb"), mine, rest)

    def stop(self) -> None:
        self.sock.close()  # EOF: the server exits
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start(reaper: str) -> Server | None:
    """A spawn server for this process, or None where one cannot run (not the main thread, no ``send_fds``).

    Call it from the main thread (see the module doc); the caller owns the server and stops it.
    """
    if threading.current_thread() is threading.main_thread() and hasattr(socket, "send_fds"):
        return Server(reaper)
    return None
