"""Workers as the pods of one Deployment per service (official ``kubernetes`` client, extra ``k8s``).

Scale-out raises the Deployment's replicas. Scale-in never lets Kubernetes pick a busy pod:

1. :meth:`drain` sends Celery ``cancel_consumer`` to the victim (so it takes nothing new) and
   annotates it ``scalejob.io/draining``; a running task goes on.
2. :meth:`stop` (the controller calls it once the registry shows the victim idle) gives the pod
   the lowest ``controller.kubernetes.io/pod-deletion-cost`` and only then lowers replicas, so
   the ReplicaSet deletes that pod. The ReplicaSet ranks unscheduled, pending and not-ready pods
   before deletion cost; if it deleted one of those instead, the victim is deleted explicitly
   and the ReplicaSet replaces the other. Either way the count is right and no task is cut.
3. deletion is a warm shutdown: SIGTERM, and Celery waits for the pool. The pod template's
   ``terminationGracePeriodSeconds`` is set from the service's longest task
   (``metadata.max_runtime``, else ``default_grace``) plus a margin, so even a task that raced
   past the cancel finishes before the kubelet's SIGKILL.

The worker in each pod must register under its pod name (``scalejob worker SVC --name
$(POD_NAME)``, POD_NAME from the downward API): that is how handles join registry entries.
Warm standby needs a second pod template and is not offered here (``spawn`` refuses it).
"""

from __future__ import annotations

import builtins
import logging
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from autoscale.backends.base import BackendError, WorkerBackend, WorkerHandle

if TYPE_CHECKING:  # pragma: no cover
    from app.core.specs import ServiceSpec
    from autoscale.leader import Leadership

log = logging.getLogger(__name__)

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
DRAINING = "scalejob.io/draining"
STOPPING = "scalejob.io/stopping"
VICTIM_COST = "-1000"  # lower than any other pod's (default 0): deleted first on scale-down
PENDING_PREFIX = "pending:"

CancelConsumer = Callable[[str, str], object]  # (service, worker name)


def deployment_name(service: str) -> str:
    """Default Deployment name of a service (``scalejob-<service>``, a valid DNS-1123 name)."""
    return "scalejob-" + re.sub(r"[^a-z0-9-]", "-", service.lower())


def termination_grace(spec: ServiceSpec | None, default: float = 3600, margin: float = 30) -> int:
    """Seconds a pod may take to shut down: the longest task it may be running, plus a margin."""
    longest = spec.metadata.max_runtime if spec is not None and spec.metadata.max_runtime else default
    return int(longest + margin + 0.999)


class KubernetesBackend(WorkerBackend):
    """One Deployment per service, scaled through its ``scale`` subresource."""

    def __init__(
        self,
        namespace: str = "default",
        api_client: Any = None,
        cancel_consumer: CancelConsumer | None = None,
        spec_of: Callable[[str], ServiceSpec | None] = lambda service: None,
        name_of: Callable[[str], str] = deployment_name,
        default_grace: float = 3600,
        fence: Leadership | None = None,
    ) -> None:
        try:
            from kubernetes import client, config  # noqa: PLC0415 - optional dependency (extra k8s)
        except ImportError:
            raise BackendError(
                "kubernetes backend: the 'kubernetes' package is missing; pip install 'scalejob[k8s]'"
            ) from None
        if api_client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                try:  # $KUBECONFIG as of now (the client reads it once, at import)
                    config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
                except config.ConfigException as exc:
                    raise BackendError(
                        f"kubernetes backend: no in-cluster config and no usable kubeconfig: {exc}"
                    ) from None
            api_client = client.ApiClient()
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.ApiException = client.exceptions.ApiException
        self.namespace = namespace
        self.cancel_consumer = cancel_consumer
        self.spec_of = spec_of
        self.name_of = name_of
        self.default_grace = default_grace
        self.fence = fence
        self._grace_set: dict[str, int] = {}

    # -- WorkerBackend ----------------------------------------------------------------------
    def list(self, service: str) -> list[WorkerHandle]:
        """The service's pods, plus one ``pending:`` handle per replica without a pod yet."""
        name = self.name_of(service)
        dep = self._call(service, "read deployment", self.apps.read_namespaced_deployment, name, self.namespace)
        pods = self._pods(service, dep)
        handles = [self._handle(service, p) for p in pods]
        active = sum(1 for h in handles if not h.meta.get("stopping"))
        missing = max((dep.spec.replicas or 0) - active, 0)
        handles += [WorkerHandle(f"{PENDING_PREFIX}{name}-{i}", service, meta={"pending": "1"}) for i in range(missing)]
        return handles

    def spawn(self, service: str, env: dict[str, str]) -> WorkerHandle:
        """One more replica. Per-pod env is not possible in a Deployment: GPUs come from the
        device plugin (``resources.limits.nvidia.com/gpu`` in the manifest), so placement env is
        ignored; a standby request is refused."""
        if env.get("SCALEJOB_STANDBY", "") not in ("", "0"):
            raise BackendError(f"{service}: warm standby is not supported by the kubernetes backend")
        self.check_fence(f"spawn {service}")  # the replica count is the spawn's durable record: a successor reads it
        self._ensure_grace(service)
        replicas = self._replicas(service) + 1
        self._scale(service, replicas)
        log.info("%s: replicas -> %d", self.name_of(service), replicas)
        return WorkerHandle(f"{PENDING_PREFIX}{self.name_of(service)}-{replicas - 1}", service, meta={"pending": "1"})

    def drain(self, handle: WorkerHandle) -> None:
        if handle.meta.get("pending") or handle.meta.get("draining"):
            return
        self.check_fence(f"drain {handle.name}")
        if self.cancel_consumer is not None:
            self.cancel_consumer(handle.service, handle.name)
        self._annotate(handle, {DRAINING: "1", DELETION_COST: VICTIM_COST})

    def stop(self, handle: WorkerHandle) -> None:
        if handle.meta.get("stopping"):
            return
        self.check_fence(f"stop {handle.name}")
        replicas = self._replicas(handle.service)
        if handle.meta.get("pending"):  # no pod yet: the ReplicaSet removes a pending one first
            self._scale(handle.service, max(replicas - 1, 0))
            return
        self._annotate(handle, {STOPPING: "1", DELETION_COST: VICTIM_COST})
        self._scale(handle.service, max(replicas - 1, 0))
        pod = self._read_pod(handle)
        if pod is not None and pod.metadata.deletion_timestamp is None:
            log.info("%s: the ReplicaSet removed another pod first; deleting victim %s",
                     self.name_of(handle.service), handle.name)
            self._call(handle.service, "delete pod", self.core.delete_namespaced_pod, handle.name, self.namespace)

    # -- internals --------------------------------------------------------------------------
    def _call(self, service: str, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One API call; any API error becomes a one-line :class:`BackendError`."""
        try:
            return fn(*args, **kwargs)
        except self.ApiException as exc:
            target = args[0] if args else ""
            raise BackendError(f"{service}: kubernetes {what} {target} failed: {exc.status} {exc.reason}") from None
        except OSError as exc:  # urllib3 connection errors
            raise BackendError(f"{service}: kubernetes {what} failed: {exc}") from None

    def _pods(self, service: str, dep: Any) -> builtins.list[Any]:  # builtins: the method list() shadows it
        labels = dep.spec.selector.match_labels or {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        pods = self._call(service, "list pods", self.core.list_namespaced_pod, self.namespace, label_selector=selector)
        return pods.items

    def _handle(self, service: str, pod: Any) -> WorkerHandle:
        ann = pod.metadata.annotations or {}
        meta = {
            "phase": pod.status.phase if pod.status else "",
            "draining": "1" if ann.get(DRAINING) else "",
            "stopping": "1" if ann.get(STOPPING) or pod.metadata.deletion_timestamp else "",
            "gpus": "",
        }
        return WorkerHandle(pod.metadata.name, service, ref=pod.metadata.name, meta=meta)

    def _read_pod(self, handle: WorkerHandle) -> Any:
        try:
            return self.core.read_namespaced_pod(handle.name, self.namespace)
        except self.ApiException as exc:
            if exc.status == 404:
                return None
            raise BackendError(
                f"{handle.service}: kubernetes read pod {handle.name} failed: {exc.status} {exc.reason}"
            ) from None

    def _annotate(self, handle: WorkerHandle, annotations: dict[str, str]) -> None:
        body = {"metadata": {"annotations": annotations}}
        try:
            self.core.patch_namespaced_pod(handle.name, self.namespace, body)
        except self.ApiException as exc:
            if exc.status != 404:  # already gone: nothing to mark
                raise BackendError(
                    f"{handle.service}: kubernetes patch pod {handle.name} failed: {exc.status} {exc.reason}"
                ) from None

    def _replicas(self, service: str) -> int:
        read = self.apps.read_namespaced_deployment_scale
        scale = self._call(service, "read scale", read, self.name_of(service), self.namespace)
        return int(scale.spec.replicas or 0)

    def _scale(self, service: str, replicas: int) -> None:
        body = {"spec": {"replicas": replicas}}
        patch = self.apps.patch_namespaced_deployment_scale
        self._call(service, "scale", patch, self.name_of(service), self.namespace, body)

    def _ensure_grace(self, service: str) -> None:
        """Set the pod template's grace period once per value (a template change rolls pods, and
        a rollout is itself a warm shutdown, so it must not happen on every tick)."""
        want = termination_grace(self.spec_of(service), self.default_grace)
        if self._grace_set.get(service) == want:
            return
        name = self.name_of(service)
        dep = self._call(service, "read deployment", self.apps.read_namespaced_deployment, name, self.namespace)
        if dep.spec.template.spec.termination_grace_period_seconds != want:
            body = {"spec": {"template": {"spec": {"terminationGracePeriodSeconds": want}}}}
            self._call(service, "patch deployment", self.apps.patch_namespaced_deployment, name, self.namespace, body)
            log.info("%s: terminationGracePeriodSeconds -> %d", name, want)
        self._grace_set[service] = want
