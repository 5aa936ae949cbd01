"""The Celery bootsteps that build and own a worker's runtime state.

Modelled on Celery's own consumer bootsteps (``celery/worker/consumer/*.py``): each step sets up
its part in ``create`` (once, while the worker is built, in the main thread: before the banner and
before any task), follows the consumer in ``start``/``stop`` (every connect and connection loss),
and tears its part down in ``shutdown``, which Celery calls once, after the pool was joined: a
running task keeps its user app and spawn server to its end. Every part lives on the worker's
:class:`Runtime`, set on the consumer as ``c.scalejob``; a task finds its worker's runtime with
:func:`runtime_of`, the one accessor. The two moments without a bootstep hook (the consumer is
ready and consuming; a shutdown was asked for) come from Celery's signals, which a step connects
for its own worker.

A worker started by :func:`workers.instance.run_worker` names its service in the app's settings
(:class:`~workers.instance.Launch`) and gets every step. A plain ``celery -A app.celery_app worker
-Q scalejob.<svc>`` names none: it gets the runtime (its instance built from the registry at its
first task) and the ack gate, and no init commands, user app, spawn server, heartbeat or tenant
queues, as before the steps.
"""

from __future__ import annotations

import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery import Celery, Task, bootsteps
from celery.signals import worker_ready, worker_shutting_down
from celery.worker.request import Request

from app.core.connections import state_redis
from app.queue import services, tenants
from workers.ackgate import DELIVERY_KEY, AckGate
from workers.command import REAPER
from workers.heartbeat import Heartbeat
from workers.instance import LAUNCH, Instance, Launch, StartFailed, instance_of, prepare, user_app_log
from workers.leases import fencing_redis
from workers.process import spawner
from workers.process.progress_server import ProgressServer
from workers.process.userapp import UserApp

TASKS = "celery.worker.consumer.tasks:Tasks"  # Celery's task-consumer step: consuming starts with it


@dataclass
class Hold:
    """A delivery of this worker that holds its request's lease (set by ``workers.tasks.execute``)."""

    worker: str
    registry_name: str
    epoch: str = ""  # the fencing token its lease was granted with (the record's attempts)
    tenant: str = "default"  # the request's tenant: every output-queue event carries it (the API filters on it)
    final_state: str | None = None  # set once the outcome was recorded (and the lease released with it)
    acked_early: bool = False  # its delivery was acked at start (AMQP): its end frees a slot of the ack gate


class Runtime:
    """Everything one worker holds while it runs; each part is made and ended by one step below."""

    def __init__(self, hostname: str, launch: Launch | None) -> None:
        self.hostname, self.launch = hostname, launch
        self.instance: Instance | None = None
        self.spawner: spawner.Server | None = None
        self.user_app: UserApp | None = None
        self.progress = ProgressServer()  # started only for a user app (it POSTs query progress here)
        self.heartbeat: Heartbeat | None = None
        self.gate = AckGate()
        self.holds: dict[str, Hold] = {}  # request id -> its running delivery here (pool threads share it)
        self.stopping = threading.Event()  # a shutdown was asked for: add no tenant queue any more

    def instance_for(self, service: str) -> Instance:
        """This worker's instance of ``service``; a plain ``celery worker`` builds it from the registry."""
        if self.instance is None or self.instance.spec.name != service:
            self.instance = instance_of(services.get(state_redis(), service), self.hostname)
        return self.instance

    def registry_name(self, service: str, worker: str) -> str:
        """The name a delivery is registered under: the instance's when its heartbeat renews the lease."""
        inst = self.instance
        return inst.name if inst is not None and inst.spec.name == service and self.heartbeat else worker


_runtimes: dict[str, Runtime] = {}  # worker hostname -> its runtime; set by RuntimeStep


def runtime_at(hostname: str) -> Runtime:
    """The runtime of worker ``hostname`` (a bare one for a task run outside a worker with these steps)."""
    found = _runtimes.get(hostname)
    return found if found is not None else _runtimes.setdefault(hostname, Runtime(hostname, None))


def runtime_of(task: Task) -> Runtime:
    """The runtime of the worker that runs ``task``: how a task reaches its worker's state."""
    return runtime_at(task.request.hostname or "")


class GatedRequest(Request):
    """The Celery request of scalejob's tasks: handed to its worker's ack gate, so the task can ack it early."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        token = uuid.uuid4().hex
        self._request_dict[DELIVERY_KEY] = token  # reaches the task as ``task.request.scalejob_delivery``
        runtime_at(self.hostname).gate.remember(token, self)


class RuntimeStep(bootsteps.StartStopStep):
    """The worker's :class:`Runtime`; for a launched worker its instance, init commands run once."""

    def __init__(self, c: Any, **kwargs: Any) -> None:
        launch = c.app.conf.get(LAUNCH)
        c.scalejob = self.runtime = Runtime(c.hostname, launch if isinstance(launch, Launch) else None)
        _runtimes[c.hostname] = self.runtime
        super().__init__(c, **kwargs)

    def create(self, c: Any) -> None:
        launch = self.runtime.launch
        if launch is not None:
            try:
                self.runtime.instance = prepare(launch.spec, launch.name)
            except Exception as exc:  # any failure: the worker exits before it takes a task
                raise StartFailed(str(exc)) from exc

    def shutdown(self, c: Any) -> None:
        _runtimes.pop(c.hostname, None)


def _instance(c: Any) -> Instance | None:
    """The instance of a launched worker (None for a plain ``celery worker``)."""
    rt: Runtime = c.scalejob
    return rt.instance if rt.launch is not None else None


class SpawnServerStep(bootsteps.StartStopStep):
    """The spawn server of a service that runs commands (``workers/process/spawner.py``)."""

    requires = (RuntimeStep,)

    def include_if(self, c: Any) -> bool:
        inst = _instance(c)
        return inst is not None and "command" in inst.spec.allowed_task_types()

    def create(self, c: Any) -> None:
        c.scalejob.spawner = spawner.start(REAPER)  # main thread: command reapers by fork, not by interpreter start

    def shutdown(self, c: Any) -> None:
        rt: Runtime = c.scalejob
        if rt.spawner is not None:
            rt.spawner.stop()
            rt.spawner = None


class UserAppStep(bootsteps.StartStopStep):
    """The supervised user app of a query service, its port waited for, and the progress endpoint it reports to."""

    requires = (SpawnServerStep,)  # the order of old: init commands, spawn server, user app

    def include_if(self, c: Any) -> bool:
        inst = _instance(c)
        return inst is not None and bool(inst.spec.app.command and inst.spec.app.port)

    def create(self, c: Any) -> None:
        rt: Runtime = c.scalejob
        inst = rt.instance
        assert inst is not None and inst.spec.app.command and inst.spec.app.port  # include_if
        # paths in the command are relative to where scalejob runs
        rt.user_app = UserApp(inst.spec.app.command, inst.spec.app.port, Path.cwd(), inst.env, user_app_log(inst.name))
        try:
            rt.user_app.start()
        except Exception as exc:  # it never listened: the worker exits before it takes a task
            raise StartFailed(str(exc)) from exc
        rt.progress.start()  # the app POSTs query progress here (X-Scalejob-Progress-Url)

    def shutdown(self, c: Any) -> None:
        rt: Runtime = c.scalejob
        if rt.user_app is not None:
            rt.user_app.stop()


class HeartbeatStep(bootsteps.StartStopStep):
    """The heartbeat (registry entry, leases, a turn at recovery): from the first time it consumes to shutdown."""

    requires = (TASKS, RuntimeStep)

    def include_if(self, c: Any) -> bool:
        return _instance(c) is not None

    def create(self, c: Any) -> None:
        self.consumer: Any = c
        worker_ready.connect(self._on_ready)  # weak: the step lives as long as its consumer
        worker_shutting_down.connect(self._on_shutting_down)

    def _on_ready(self, sender: object = None, **_: object) -> None:
        rt: Runtime = self.consumer.scalejob
        if sender is not self.consumer or rt.instance is None or rt.launch is None or rt.heartbeat is not None:
            return
        gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "")  # where it was placed: status and the autoscaler read it
        inst = rt.instance
        rt.heartbeat = Heartbeat(fencing_redis(), inst.name, inst.spec.name, state=rt.launch.state, gpus=gpus,
                                 spec_hash=services.spec_hash(inst.spec))
        rt.heartbeat.start()

    def _on_shutting_down(self, sender: object = None, **_: object) -> None:
        if sender not in (None, self.consumer.hostname):
            return
        rt: Runtime = self.consumer.scalejob
        rt.stopping.set()  # the tenant watcher adds no tenant queue to a worker on its way out
        if rt.heartbeat is not None:
            rt.heartbeat.set_state("draining")

    def shutdown(self, c: Any) -> None:
        rt: Runtime = c.scalejob
        if rt.heartbeat is not None:
            rt.heartbeat.stop()


class TenantQueuesStep(bootsteps.StartStopStep):
    """Fair sharing: the tenant queues this worker consumes follow the service and its state (app/queue/tenants.py)."""

    requires = (HeartbeatStep,)

    def include_if(self, c: Any) -> bool:
        return _instance(c) is not None

    def create(self, c: Any) -> None:
        self.consumer: Any = c
        self.watcher: tenants.TenantWatcher | None = None
        worker_ready.connect(self._on_ready)  # after the heartbeat's receiver: connected later

    def _on_ready(self, sender: object = None, **_: object) -> None:
        rt: Runtime = self.consumer.scalejob
        if sender is not self.consumer or rt.instance is None or rt.launch is None or self.watcher is not None:
            return
        consumed = set(rt.launch.queues.split(","))  # what --queues named at start
        inst = rt.instance
        self.watcher = tenants.TenantWatcher(state_redis(), inst.spec.name, inst.name, consumed, rt.stopping)
        self.watcher.start()


class GateStep(bootsteps.StartStopStep):
    """Ack-on-start for RabbitMQ (``workers/ackgate.py``): the gate follows the consumer across reconnects."""

    requires = (TASKS, RuntimeStep)

    def start(self, c: Any) -> None:
        c.scalejob.gate.bind(c)

    def stop(self, c: Any) -> None:
        c.scalejob.gate.unbind()


STEPS = (RuntimeStep, SpawnServerStep, UserAppStep, HeartbeatStep, TenantQueuesStep, GateStep)


def install(app: Celery) -> None:
    """Add the steps to ``app``'s consumer blueprint; the worker must import this before it builds one."""
    app.steps["consumer"].update(STEPS)
