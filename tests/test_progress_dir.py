"""A worker forked from the template leaves no progress directory behind (issue 13, finding 12)."""

from __future__ import annotations

import glob
import os
import signal
import tempfile

import psutil

from autoscale.backends.template import Template
from tests.conftest import Stack
from tests.helpers import ROOT, wait_for


def exited(pid: int) -> bool:
    """True once the process is gone or a zombie; a process that goes between two reads is gone."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_forked_worker_removes_its_progress_dir_when_it_exits(stack: Stack) -> None:
    spec = stack.deploy(stack.command_spec())
    template = Template(ROOT, env=stack.env)
    name = f"{spec.name}-fork@test"
    try:
        pid = template.fork(spec.name, name, False, {}, stack.tmp / "forked.log")
        stack.wait_workers(spec.name, 1, "idle", timeout=60)
        rid = stack.put(spec, "command", 'echo 50 > "$SCALEJOB_PROGRESS_FILE"; sleep 0.5')
        assert stack.wait_done(rid, 30).state == "succeeded"
        pattern = os.path.join(tempfile.gettempdir(), f"scalejob-progress-{pid}-*")
        assert glob.glob(pattern), "the worker made its progress dir"
        os.kill(pid, signal.SIGTERM)  # warm shutdown; the forked child ends with os._exit
        wait_for(lambda: exited(pid), 30, what="the worker to exit")
        assert glob.glob(pattern) == [], "its progress dir is gone"
    finally:
        template.close()
