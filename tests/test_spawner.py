"""The spawn server (workers/process/spawner.py + reaper.py --serve): each command's shell spawned by it.

Real processes only: a real server, real shells; the worker side is this test process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.helpers import wait_for
from workers.command import REAPER, run_command
from workers.process import spawner


@pytest.fixture
def server() -> Iterator[spawner.Server]:
    srv = spawner.start(REAPER)  # pytest runs tests in the main thread
    assert srv is not None
    yield srv
    srv.stop()


def _run(cmd: str, cwd: Path, server: spawner.Server, env: dict[str, str] | None = None) -> tuple[object, list[str]]:
    lines: list[str] = []
    out = run_command(cmd, cwd, env or dict(os.environ), lines.append, lambda _p: None, lambda: None, server=server)
    return out, lines


def test_spawned_command_runs_like_one_under_a_started_reaper(server: spawner.Server, tmp_path: Path) -> None:
    out, lines = _run("pwd; echo $SJ_T; echo err >&2; exit 7", tmp_path, server, {**os.environ, "SJ_T": "env-ok"})
    assert out.exit_code == 7 and lines == [str(tmp_path), "env-ok", "err"]  # type: ignore[attr-defined]
    out, _ = _run("kill -TERM $$", tmp_path, server)
    assert out.exit_code == -signal.SIGTERM  # type: ignore[attr-defined]
    assert psutil.Process(server.proc.pid).children() == []  # each shell is reaped by the server: no zombies left


def _marked(marker: str, first: str | None = None) -> list[int]:
    """Live processes whose command line names ``marker`` (``first``: only that program)."""
    out = []
    for p in psutil.process_iter(["cmdline", "status"]):
        argv = p.info["cmdline"] or []
        live = p.info["status"] != psutil.STATUS_ZOMBIE
        if live and any(marker in a for a in argv) and (first is None or argv[0] == first):
            out.append(p.pid)
    return out


def _marker() -> str:
    return uuid.uuid4().hex[:6].translate(str.maketrans("abcdef", "123456"))


WORKER = """
import os, sys
from pathlib import Path
from workers import command
from workers.process import spawner
server = spawner.start(command.REAPER)
command.run_command(sys.argv[1], Path(sys.argv[2]), dict(os.environ), print, lambda _p: None, lambda: None,
                    server=server)
"""


def test_worker_death_ends_the_running_command_group(tmp_path: Path) -> None:
    """A SIGKILLed worker's commands die with it, through the server's death signal, escaped ones included."""
    marker = _marker()
    cmd = f"sleep 300.{marker} & setsid sleep 301.{marker} & wait"
    worker = subprocess.Popen([sys.executable, "-c", WORKER, cmd, str(tmp_path)],
                              cwd=Path(__file__).parents[1], start_new_session=True)
    try:
        wait_for(lambda: len(_marked(marker, "sleep")) == 2, timeout=10, what="the command's sleeps")
        os.kill(worker.pid, signal.SIGKILL)
        wait_for(lambda: _marked(marker) == [], timeout=10, what="every process of the command to be gone")
    finally:
        worker.kill()
        worker.wait()


def test_a_command_ending_takes_its_escaped_descendants_but_not_a_neighbours(server: spawner.Server,
                                                                              tmp_path: Path) -> None:
    """The server is the subreaper of all commands: leftovers of the one that ended go, the other's stay."""
    mine, theirs = _marker(), _marker()
    done: list[object] = []
    neighbour = f"(setsid sleep 302.{theirs} &); sleep 2.{theirs}"
    t = threading.Thread(target=lambda: done.append(_run(neighbour, tmp_path, server)))
    t.start()
    wait_for(lambda: len(_marked(theirs, "sleep")) == 2, timeout=10, what="the neighbour's sleeps")
    out, _ = _run(f"setsid sleep 304.{mine} & exit 0", tmp_path, server)
    assert out.exit_code == 0  # type: ignore[attr-defined]
    assert _marked(mine) == [] and len(_marked(theirs, "sleep")) == 2
    t.join(timeout=10)
    assert done and done[0][0].exit_code == 0  # type: ignore[index]
    wait_for(lambda: _marked(theirs) == [], timeout=10, what="the neighbour's escaped sleep to go with it")


def test_without_a_live_server_commands_start_their_reaper_directly(server: spawner.Server, tmp_path: Path) -> None:
    server.proc.kill()
    server.proc.wait()
    out, lines = _run("echo direct; exit 3", tmp_path, server)
    assert out.exit_code == 3 and lines == ["direct"]  # type: ignore[attr-defined]
    assert subprocess.run(["true"]).returncode == 0
