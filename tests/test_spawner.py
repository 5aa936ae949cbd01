"""The spawn server (workers/spawner.py + reaper.py --serve): commands through a forked reaper.

Real processes only: a real server, real shells; the worker side is this test process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.helpers import wait_for
from workers import spawner
from workers.command import REAPER, run_command


@pytest.fixture
def server() -> Iterator[spawner.Server]:
    spawner.start(REAPER)  # pytest runs tests in the main thread
    srv = spawner.current()
    assert srv is not None
    yield srv
    spawner.stop()


def _run(cmd: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[object, list[str]]:
    lines: list[str] = []
    out = run_command(cmd, cwd, env or dict(os.environ), lines.append, lambda _p: None, lambda: None)
    return out, lines


def test_forked_reaper_runs_the_command_like_a_started_one(server: spawner.Server, tmp_path: Path) -> None:
    out, lines = _run("pwd; echo $SJ_T; echo err >&2; exit 7", tmp_path, {**os.environ, "SJ_T": "env-ok"})
    assert out.exit_code == 7 and lines == [str(tmp_path), "env-ok", "err"]  # type: ignore[attr-defined]
    out, _ = _run("kill -TERM $$", tmp_path)
    assert out.exit_code == -signal.SIGTERM  # type: ignore[attr-defined]
    reapers = [p for p in psutil.Process(server.proc.pid).children()]
    assert reapers == []  # each reaper is reaped by the server: no zombies left


def test_server_death_ends_the_running_command_group(server: spawner.Server, tmp_path: Path) -> None:
    """The worker's death reaches the command through the server (SIGKILL) and the reaper's own death signal."""
    marker = uuid.uuid4().hex[:6].translate(str.maketrans("abcdef", "123456"))
    done: list[object] = []
    t = threading.Thread(target=lambda: done.append(_run(f"sleep 300.{marker} & setsid sleep 301.{marker} & wait", tmp_path)))
    t.start()

    def marked(first: str | None = None) -> list[int]:
        """Live processes whose command line names the marker (``first``: only that program)."""
        out = []
        for p in psutil.process_iter(["cmdline", "status"]):
            argv = p.info["cmdline"] or []
            if p.info["status"] != psutil.STATUS_ZOMBIE and any(marker in a for a in argv) and (first is None or argv[0] == first):
                out.append(p.pid)
        return out

    wait_for(lambda: len(marked("sleep")) == 2, timeout=10, what="the command's sleeps")
    os.kill(server.proc.pid, signal.SIGKILL)
    wait_for(lambda: marked() == [], timeout=10, what="every process of the command to be gone")
    t.join(timeout=10)
    assert done and done[0][0].exit_code is not None  # type: ignore[index]


def test_without_a_live_server_commands_start_their_reaper_directly(server: spawner.Server, tmp_path: Path) -> None:
    server.proc.kill()
    server.proc.wait()
    out, lines = _run("echo direct; exit 3", tmp_path)
    assert out.exit_code == 3 and lines == ["direct"]  # type: ignore[attr-defined]
    assert subprocess.run(["true"]).returncode == 0
