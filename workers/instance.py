"""A worker is an *instance*: init commands once, the user app supervised, then tasks in a loop.

``scalejob worker SERVICE`` calls :func:`run_worker`: it loads the spec, runs ``init_commands``
(a failure exits non-zero with the command's output before any task is taken), starts the user
app of a query service and waits for its port, then runs a Celery worker with the threads pool
(``rpc.worker_threads`` slots) on the queue ``scalejob.<service>``. Threads, not prefork: the
consumer stays responsive to control commands (``cancel_consumer``, ``shutdown``) while tasks
run, and warm shutdown waits for running tasks by joining the pool.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from celery.signals import worker_init, worker_ready, worker_shutdown, worker_shutting_down

from app.core import keys
from app.core.connections import state_redis
from app.core.settings import get_settings
from app.core.specs import ServiceSpec
from app.queue import services, tenants
from workers.command import REAPER, remove_progress_dir
from workers.heartbeat import Heartbeat
from workers.leases import fencing_redis
from workers.process import progress_server, spawner
from workers.process.userapp import UserApp

log = logging.getLogger(__name__)


class InitFailed(RuntimeError):
    """An init command exited non-zero."""


@dataclass
class Instance:
    """What one worker process knows about itself."""

    spec: ServiceSpec
    name: str
    storage: Path
    env: dict[str, str]
    user_app: UserApp | None = None
    heartbeat: Heartbeat | None = None
    extra: dict[str, str] = field(default_factory=dict)


current: Instance | None = None


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
    """Init commands and user app: everything that must be ready before the first task."""
    settings = get_settings()
    storage = spec.storage_dir(settings.data_dir).resolve()
    env = base_env(spec)
    run_init_commands(spec, storage, env)
    inst = Instance(spec=spec, name=name, storage=storage, env=env)
    if "command" in spec.allowed_task_types():
        spawner.start(REAPER)  # main thread: command reapers by fork, not by interpreter start
    if spec.app.command and spec.app.port:
        log_path = settings.data_dir.resolve() / "logs" / f"{name.split('@', maxsplit=1)[0]}.app.log"
        inst.user_app = UserApp(spec.app.command, spec.app.port, Path.cwd(), env, log_path)  # paths in the command are relative to where scalejob runs
        inst.user_app.start()
        progress_server.start()  # the app POSTs query progress here (X-Scalejob-Progress-Url)
    return inst


def instance_for(service: str, name: str) -> Instance:
    """The current instance, or one built from the registry for plain ``celery worker`` use."""
    global current
    if current is None or current.spec.name != service:
        spec = services.get(state_redis(), service)
        settings = get_settings()
        current = Instance(spec=spec, name=name, storage=spec.storage_dir(settings.data_dir).resolve(), env=base_env(spec))
    return current


_stopping = threading.Event()


def _start_tenant_watcher(inst: Instance) -> None:
    """Fair sharing: tenant queues follow the service and this worker's state (app/queue/tenants.py)."""
    consumed = set(inst.extra.get("queues", "").split(","))  # what --queues named at start
    tenants.TenantWatcher(state_redis(), inst.spec.name, inst.name, consumed, _stopping).start()


@worker_init.connect
def _private(**_: object) -> None:
    """A worker started as ``celery -A app.celery_app worker`` (not through the CLI) is private too."""
    from app.core.private import restrict

    restrict()


@worker_ready.connect
def _on_ready(sender: object = None, **_: object) -> None:
    if current is None:
        return
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "")  # the devices it was placed on: status and the autoscaler read them
    hb = Heartbeat(fencing_redis(), current.name, current.spec.name, state=current.extra.get("state", "idle"), gpus=gpus, spec_hash=services.spec_hash(current.spec))
    current.heartbeat = hb
    hb.start()
    _start_tenant_watcher(current)


@worker_shutting_down.connect
def _on_shutting_down(**_: object) -> None:
    _stopping.set()  # app/tenants.TenantWatcher: add no tenant queue to a worker on its way out
    if current is not None and current.heartbeat is not None:
        current.heartbeat.set_state("draining")


@worker_shutdown.connect
def _on_shutdown(**_: object) -> None:
    if current is None:
        return
    if current.heartbeat is not None:
        current.heartbeat.stop()
    if current.user_app is not None:
        current.user_app.stop()


def _per_service_visibility(celery_app: object, spec: ServiceSpec) -> None:
    """Redis broker: this worker restores its service's unacked messages with the service's timeout."""
    from app.core.celery_app import redis_transport_options
    from app.core.connections import endpoints

    if endpoints().broker_is_redis:
        timeout = spec.metadata.visibility_timeout or get_settings().visibility_timeout
        celery_app.conf.broker_transport_options = redis_transport_options(timeout, spec.name)  # type: ignore[attr-defined]


def run_worker(service: str, name: str | None = None, loglevel: str = "INFO", standby: bool = False) -> int:
    """Run one instance of ``service`` until it is shut down; returns the exit code."""
    global current
    from app.core.celery_app import celery_app

    spec = services.get(state_redis(), service)
    name = name or worker_name(service)
    try:
        current = prepare(spec, name)
    except (InitFailed, Exception) as exc:  # noqa: BLE001 - any init failure: exit before a task
        print(f"scalejob worker {service}: {exc}", file=sys.stderr)
        return 3
    queue = ",".join(tenants.service_queues(state_redis(), service)) if not standby else f"{keys.celery_queue(service)}.standby"
    current.extra["state"] = "standby" if standby else "idle"
    current.extra["queues"] = queue
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
        celery_app.conf.broker_transport_options = {**celery_app.conf.broker_transport_options, "polling_interval": 0.01}
    try:
        celery_app.worker_main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        if current.user_app is not None:
            current.user_app.stop()
        spawner.stop()
        remove_progress_dir()  # a forked worker leaves through os._exit: atexit would not run
    return 0
