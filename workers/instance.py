"""A worker is an *instance*: init commands once, the user app supervised, then tasks in a loop.

``scalejob worker SERVICE`` calls :func:`run_worker`: it names the service in the app's
configuration (:class:`Launch`) and runs a Celery worker with the threads pool
(``rpc.worker_threads`` slots) on the queue ``scalejob.<service>``. The worker's bootsteps
(``workers/steps.py``) then do the rest before the first task: ``init_commands`` (a failure exits
non-zero with the command's output before any task is taken), the spawn server, the user app of a
query service (its port waited for), and once consuming the heartbeat and the tenant queues.
Threads, not prefork: the consumer stays responsive to control commands (``cancel_consumer``,
``shutdown``) while tasks run, and warm shutdown waits for running tasks by joining the pool.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from celery import Celery
from celery.signals import worker_init

from app.core import keys
from app.core.celery_app import celery_app, redis_transport_options
from app.core.connections import endpoints, state_redis
from app.core.private import restrict
from app.core.settings import get_settings
from app.core.specs import ServiceSpec
from app.queue import services, tenants
from workers.command import remove_progress_dir

log = logging.getLogger(__name__)


LAUNCH = "scalejob_launch"  # the app setting run_worker leaves for the bootsteps


class InitFailed(RuntimeError):
    """An init command exited non-zero."""


class StartFailed(RuntimeError):
    """The instance could not be made ready (init command, user app): the worker exits before a task."""


@dataclass(frozen=True)
class Launch:
    """How :func:`run_worker` started this worker: what its bootsteps set up (a plain ``celery worker`` has none)."""

    spec: ServiceSpec
    name: str
    state: str  # "idle", or "standby" (consumes only its standby queue until activated)
    queues: str  # the --queues it was started with, comma-separated


@dataclass
class Instance:
    """What one worker process knows about its service: the spec, the storage and the environment."""

    spec: ServiceSpec
    name: str
    storage: Path
    env: dict[str, str]


# What a command or user app inherits from the worker: enough to find programs, a home, a locale
# and the GPUs it was placed on. Never the control plane's settings (admin token, Redis and broker
# URLs with their passwords, cloud credentials): a task is not trusted with them (docs/security.md).
INHERITED = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM",
             "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES")


def base_env(spec: ServiceSpec) -> dict[str, str]:
    """The environment of the service's processes: an allowlist of this worker's env, plus the spec's ``env``."""
    env = {k: v for k, v in os.environ.items() if k in INHERITED or k.startswith("LC_")}
    env.update(spec.app.env_dict())
    env["SCALEJOB_SERVICE"] = spec.name
    return env


def run_init_commands(spec: ServiceSpec, cwd: Path, env: dict[str, str]) -> None:
    """Run each init command once, in order; raise :class:`InitFailed` with its output."""
    cwd.mkdir(parents=True, exist_ok=True)
    for cmd in spec.app.init_commands:
        proc = subprocess.run(["/bin/sh", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            out = (proc.stdout + proc.stderr).strip()[-4000:]
            raise InitFailed(f"init command {cmd!r} exited with code {proc.returncode}:\n{out}")


def worker_name(service: str) -> str:
    return f"{service}-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"


def prepare(spec: ServiceSpec, name: str) -> Instance:
    """The instance of ``spec``, its init commands run (raises :class:`InitFailed`)."""
    inst = instance_of(spec, name)
    run_init_commands(spec, inst.storage, inst.env)
    return inst


def instance_of(spec: ServiceSpec, name: str) -> Instance:
    """The instance of ``spec`` as worker ``name``, nothing run (a plain ``celery worker`` builds it per task)."""
    storage = spec.storage_dir(get_settings().data_dir).resolve()
    return Instance(spec=spec, name=name, storage=storage, env=base_env(spec))


def user_app_log(name: str) -> Path:
    """Where the user app of worker ``name`` writes its output."""
    return get_settings().data_dir.resolve() / "logs" / f"{name.split('@', maxsplit=1)[0]}.app.log"


@worker_init.connect
def _private(**_: object) -> None:
    """A worker started as ``celery -A app.celery_app worker`` (not through the CLI) is private too."""
    restrict()


def _per_service_visibility(app: Celery, spec: ServiceSpec) -> None:
    """Redis broker: this worker restores its service's unacked messages with the service's timeout."""
    if endpoints().broker_is_redis:
        timeout = spec.metadata.visibility_timeout or get_settings().visibility_timeout
        app.conf.broker_transport_options = redis_transport_options(timeout, spec.name)


def run_worker(service: str, name: str | None = None, loglevel: str = "INFO", standby: bool = False) -> int:
    """Run one instance of ``service`` until it is shut down; returns the exit code."""
    spec = services.get(state_redis(), service)
    name = name or worker_name(service)
    standby_queue = f"{keys.celery_queue(service)}.standby"
    queue = standby_queue if standby else ",".join(tenants.service_queues(state_redis(), service))
    celery_app.conf[LAUNCH] = Launch(spec, name, "standby" if standby else "idle", queue)
    argv = [
        "worker",
        f"--hostname={name}",
        f"--queues={queue}",
        "--pool=threads",
        f"--concurrency={spec.metadata.rpc_worker_threads}",
        f"--loglevel={loglevel}",
        "--without-mingle",
        "--without-gossip",
    ]
    _per_service_visibility(celery_app, spec)
    if (celery_app.conf.broker_url or "").startswith(("redis://", "rediss://")):
        celery_app.conf.broker_transport = "workers.transport:Transport"  # garbage on the list is dropped, not fatal
    if standby and celery_app.conf.broker_url and celery_app.conf.broker_url.startswith(("redis", "unix")):
        # kombu's Redis consumer only adds a queue to its BRPOP when the running BRPOP returns
        # (1 s by default): poll 100x/s while on standby so add_consumer takes effect within ~10 ms.
        options = celery_app.conf.broker_transport_options
        celery_app.conf.broker_transport_options = {**options, "polling_interval": 0.01}
    try:
        celery_app.worker_main(argv)
    except StartFailed as exc:  # raised by a bootstep while the worker is built: no task was taken
        print(f"scalejob worker {service}: {exc}", file=sys.stderr)
        return 3
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        remove_progress_dir()  # a forked worker leaves through os._exit: atexit would not run
    return 0
