"""Assemble and run an autoscaler: ``scalejob autoscale`` (scalejob services or a plain Celery queue).

Exit (SIGTERM / Ctrl-C): the leader lock is released at once (a standby takes over without
waiting for the TTL) and every worker this autoscaler runs gets a warm shutdown; it waits for
their running tasks. A second signal leaves them running: they are recorded in Redis, and the
next autoscaler on this host adopts them.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import redis
from celery.utils.imports import symbol_by_name
from prometheus_client import start_http_server

from app.core.connections import endpoints, is_redis_url, state_redis
from app.core.gpu import GpuMonitor
from app.core.settings import Settings
from app.core.specs import ServiceSpec
from app.queue import recovery, services, tenants
from autoscale.backends.base import WorkerBackend
from autoscale.backends.kubernetes import KubernetesBackend
from autoscale.backends.local import LocalBackend, celery_command
from autoscale.backends.template import Template
from autoscale.controller import Controller
from autoscale.leader import Leadership
from autoscale.metrics.broker import BrokerDepth
from autoscale.metrics.registry import InspectObserver, RegistryObserver
from autoscale.policy import AutoscalerConfig
from autoscale.scalein import Control
from autoscale.targets import ScalejobTargets, Target

log = logging.getLogger("autoscale")


@dataclass
class Autoscaler:
    """A controller with its backend and lock, ready to :meth:`serve`."""

    controller: Controller
    backend: WorkerBackend
    leadership: Leadership

    def serve(self, stop: threading.Event | None = None, metrics_port: int | None = None,
              handle_signals: bool = True) -> None:
        """Run the controller until ``stop`` (or a signal); then stop this host's workers (see the module docstring)."""
        stop = stop or threading.Event()
        if metrics_port:
            start_http_server(metrics_port, addr="127.0.0.1")
            log.info("Prometheus metrics on http://127.0.0.1:%d/metrics", metrics_port)
        if handle_signals:
            _on_signals(stop, self)
        local = self.backend if isinstance(self.backend, LocalBackend) else None
        try:
            self.controller.run(self.leadership, stop, on_lead=local.adopt if local else lambda: None)
        finally:
            self.leadership.release()
            if local is not None and local.procs:  # pods outlive their autoscaler: only local workers stop
                log.info("stopping %d worker(s) (warm shutdown: running tasks finish first)", len(local.procs))
                local.stop_all(timeout=None)
            self.backend.close()


def _on_signals(stop: threading.Event, scaler: Autoscaler) -> None:
    def handler(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():  # second signal: leave the workers running, a later autoscaler adopts them
            procs = scaler.backend.procs if isinstance(scaler.backend, LocalBackend) else {}
            log.warning("second signal: leaving %d worker(s) running", len(procs))
            procs.clear()
            raise SystemExit(1)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def scalejob_autoscaler(settings: Settings, fork: bool = True) -> Autoscaler:
    """The autoscaler of every deployed scalejob service, on ``settings.autoscaler_backend``.

    ``local``: worker processes on this machine; ``fork``: they are forked from a pre-imported
    template (``backends/template.py``) instead of started as fresh Python processes.
    ``kubernetes``: the Deployment ``scalejob-<service>`` in ``settings.k8s_namespace`` (in-cluster
    config, else ``$KUBECONFIG``).
    """
    from app.core.celery_app import celery_app  # noqa: PLC0415 - scalejob's own app: not built in plain-Celery mode

    r = state_redis()
    leadership = Leadership(r, settings.autoscaler_lock_ttl)
    control = Control(celery_app)
    observer = RegistryObserver(r)
    cancel = lambda service, name: [  # noqa: E731
        control.cancel_consumer(q, name) for q in tenants.service_queues(r, service)
    ]
    backend: WorkerBackend
    if settings.autoscaler_backend == "kubernetes":
        backend = KubernetesBackend(namespace=settings.k8s_namespace, cancel_consumer=cancel,
                                    spec_of=lambda s: _spec_or_none(r, s), fence=leadership)
    else:
        backend = LocalBackend(
            r,
            settings.data_dir.resolve() / "logs",
            cancel_consumer=cancel,
            is_busy=observer.is_busy,
            template=Template(Path.cwd()) if fork else None,
            fence=leadership,
            start_timeout=settings.worker_start_timeout,
        )
        if backend.template is not None:
            backend.template.start()
    controller = Controller(
        r, backend, BrokerDepth(endpoints().broker_url), observer, control, ScalejobTargets(r),
        poll_interval=settings.poll_interval, decisions_kept=settings.decisions_kept, gpu=_gpu_monitor(),
        recover=_recovery(r, f"autoscaler-{os.getpid()}@{socket.gethostname()}"),
        recover_every=settings.heartbeat_interval,
        requeue_dead=_requeue_dead(r),
    )
    return Autoscaler(controller, backend, leadership)


def celery_autoscaler(settings: Settings, celery_app_path: str, queue: str, worker_cmd: str,
                      cfg: AutoscalerConfig) -> Autoscaler:
    """The autoscaler of one queue of any Celery project (``--celery-app``), same policy and scale-in.

    Running tasks come from Celery's ``inspect active``; state (lock, history, the process
    records) goes to ``settings.redis_url``, else the project's broker when it is Redis, else
    scalejob's embedded Redis.
    """
    app = symbol_by_name(celery_app_path)
    broker = app.connection_for_read().as_uri(include_password=True)
    state_url = settings.redis_url or (broker if is_redis_url(broker) else endpoints().redis_url)
    r = redis.Redis.from_url(state_url)
    leadership = Leadership(r, settings.autoscaler_lock_ttl, scope=f"celery:{queue}")
    control = Control(app)
    observer = InspectObserver(app)
    backend = LocalBackend(
        r,
        settings.data_dir.resolve() / "logs",
        command=celery_command(worker_cmd),
        cancel_consumer=lambda _service, name: control.cancel_consumer(queue, name),
        is_busy=observer.is_busy,
        fence=leadership,
        start_timeout=settings.worker_start_timeout,
    )
    target = Target(queue, (queue,), cfg)
    controller = Controller(r, backend, BrokerDepth(broker), observer, control, lambda: [target],
                            poll_interval=settings.poll_interval, decisions_kept=settings.decisions_kept)
    return Autoscaler(controller, backend, leadership)


def _spec_or_none(r: redis.Redis, service: str) -> ServiceSpec | None:
    """The deployed spec (its longest task sets a pod's termination grace); None once undeployed."""
    try:
        return services.get(r, service)
    except services.UnknownService:
        return None


def _recovery(r: redis.Redis, me: str) -> Callable[[], None]:
    """One lease-expiry recovery pass under the workers' shared recovery lock (app/queue/recovery.py)."""
    send = recovery.celery_sender()

    def recover() -> None:
        if recovery.try_lead(r, me):
            recovery.recover_once(r, send)

    return recover


def _requeue_dead(r: redis.Redis) -> Callable[[str, str], object]:
    """Requeue a local worker's requests the moment it is confirmed dead (app/queue/recovery.py)."""
    send = recovery.celery_sender()
    return lambda worker, service: recovery.requeue_dead(r, worker, service, send)


def _gpu_monitor() -> GpuMonitor | None:
    """NVML when a driver is present; None (GPU features off, logged once by the monitor) otherwise."""
    try:
        monitor = GpuMonitor.from_system()
    except Exception as exc:  # noqa: BLE001 - GPU support must never stop the autoscaler
        log.info("GPU features off: %s", exc)
        return None
    return monitor if monitor.enabled else None
