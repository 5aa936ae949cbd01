"""A pre-imported worker template: new local workers are forked, not started from scratch.

Why: a cold ``python -m app.cli worker`` spends ~0.5 s of CPU importing Python, Celery, its CLI
plugins and scalejob before it can take a task (more on a busy machine); that is most of the
time between "a task arrived at zero workers" and "a worker runs it". The template process
(``python -m workers.process.template``) imports all of that once, holds no connection, no
thread and no settings, and forks one child per request: the child starts with everything
imported and only connects and runs :func:`workers.instance.run_worker`. Measured numbers are in
docs/performance.md (benchmarks/reaction.py). The local backend drives it
(``autoscale/backends/template.py``): the two meet over a pipe, not an import.

Protocol: one JSON request per line on the template's stdin ({service, name, standby, env,
log}); it answers one JSON line ``{"pid": N}`` on stdout. Each child gets its own session and
log file and is reaped by the kernel (SIGCHLD ignored in the template). When the autoscaler
goes away the template sees EOF and exits; the workers keep running (they are adopted by the
next autoscaler).
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import traceback
from typing import IO, Any

from workers.instance import run_worker

PRELOAD = (
    "workers.instance", "workers.tasks", "workers.steps", "app.queue.recovery", "celery.apps.worker",
    "celery.bin.celery",
    "celery.bin.worker", "celery.worker.components", "celery.worker.consumer", "celery.worker.loops",
    "celery.worker.pidbox", "celery.worker.control", "celery.worker.autoscale", "celery.worker.strategy",
    "celery.concurrency.thread", "celery.events.state", "celery.events.dispatcher", "kombu.transport.redis",
    "kombu.transport.pyamqp", "kombu.pidbox", "prometheus_client",
)


def preload() -> None:
    """Import what a worker needs before its first task (best effort: a missing extra is skipped)."""
    for mod in PRELOAD:
        try:
            importlib.import_module(mod)
        except ImportError:
            pass


def serve(stdin: IO[str], stdout: IO[str]) -> None:
    """Fork one worker per request line until stdin closes."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps exited workers: no zombies
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stdout.write(json.dumps({"ready": os.getpid()}) + "\n")
    stdout.flush()
    for line in stdin:
        req = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(req)
        stdout.write(json.dumps({"pid": pid}) + "\n")
        stdout.flush()


def _child(req: dict[str, Any]) -> None:
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the worker waits on its own subprocesses
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.setsid()
        fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.environ.update(req["env"])
        title = f"scalejob worker {req['service']} --name {req['name']}" + (" --standby" if req["standby"] else "")
        try:
            from setproctitle import setproctitle  # noqa: PLC0415 - optional dependency

            setproctitle(title)
        except ImportError:
            pass
        sys.argv = title.split()
        code = run_worker(req["service"], name=req["name"], standby=bool(req["standby"]))
    except BaseException:  # noqa: BLE001 - whatever happens, the child must never return into the template loop
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    preload()
    serve(sys.stdin, sys.stdout)
