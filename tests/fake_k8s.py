"""A fake Kubernetes API server on 127.0.0.1 for the kubernetes backend's tests.

It serves only the endpoints the backend uses (deployment, its scale subresource, pods) and
plays the ReplicaSet controller: it creates pods up to ``replicas`` and, on scale-down, deletes
pods in Kubernetes' order: pending before running, then the lowest
``controller.kubernetes.io/pod-deletion-cost``, then the newest. A deleted pod is
``Terminating`` (``deletionTimestamp`` set) until the test calls :meth:`FakeKube.finish`.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

COST = "controller.kubernetes.io/pod-deletion-cost"


def merge(dst: dict[str, Any], patch: dict[str, Any]) -> None:
    """JSON merge patch (RFC 7386), good enough for strategic merge of plain maps."""
    for k, v in patch.items():
        if v is None:
            dst.pop(k, None)
        elif isinstance(v, dict) and isinstance(dst.get(k), dict):
            merge(dst[k], v)
        else:
            dst[k] = v


class FakeKube:
    """State of one namespace: deployments by name, pods by name, and a request log."""

    def __init__(self, namespace: str = "default") -> None:
        self.namespace = namespace
        self.deployments: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, Any]] = []  # (method, path, body)
        self.new_pod_phase = "Running"
        self._seq = itertools.count()
        self.lock = threading.RLock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeKube:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- test controls ------------------------------------------------------------------------
    def add_deployment(self, name: str, replicas: int = 0, labels: dict[str, str] | None = None) -> None:
        labels = labels or {"app": name}
        with self.lock:
            self.deployments[name] = {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name, "namespace": self.namespace},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {"containers": [{"name": "worker", "image": "scalejob:test"}], "terminationGracePeriodSeconds": 30},
                    },
                },
            }
            self.reconcile()

    def active(self, deployment: str) -> list[str]:
        """Names of the deployment's pods that are not terminating, oldest first."""
        with self.lock:
            return [n for n, p in self.pods.items() if p["_owner"] == deployment and "deletionTimestamp" not in p["metadata"]]

    def terminating(self) -> list[str]:
        with self.lock:
            return [n for n, p in self.pods.items() if "deletionTimestamp" in p["metadata"]]

    def set_phase(self, name: str, phase: str) -> None:
        with self.lock:
            self.pods[name]["status"]["phase"] = phase

    def finish(self) -> None:
        """Terminating pods exit (their warm shutdown ended)."""
        with self.lock:
            for n in self.terminating():
                del self.pods[n]

    def reconcile(self) -> None:
        """The ReplicaSet controller, synchronously."""
        with self.lock:
            for name, dep in self.deployments.items():
                want, active = dep["spec"]["replicas"], self.active(name)
                for _ in range(want - len(active)):
                    self._create_pod(name, dep)
                if len(active) > want:
                    for victim in sorted(active, key=self._rank)[: len(active) - want]:
                        self._delete(victim)

    # -- internals ----------------------------------------------------------------------------
    def _create_pod(self, owner: str, dep: dict[str, Any]) -> None:
        seq = next(self._seq)
        name = f"{owner}-{seq:04d}"
        self.pods[name] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": self.namespace, "labels": dict(dep["spec"]["template"]["metadata"]["labels"]), "annotations": {}},
            "spec": json.loads(json.dumps(dep["spec"]["template"]["spec"])),
            "status": {"phase": self.new_pod_phase},
            "_owner": owner,
            "_seq": seq,
        }

    def _rank(self, name: str) -> tuple:
        p = self.pods[name]
        cost = int(p["metadata"].get("annotations", {}).get(COST, "0"))
        return (p["status"]["phase"] == "Running", cost, -p["_seq"])

    def _delete(self, name: str) -> None:
        self.pods[name]["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        kube = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _send(self, code: int, obj: Any) -> None:
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> Any:
                n = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(n)) if n else None

            def _route(self, method: str) -> None:
                url = urlparse(self.path)
                body = self._body() if method in ("PATCH", "POST", "PUT") else None
                with kube.lock:
                    kube.requests.append((method, url.path, body))
                    try:
                        code, obj = kube._serve(method, url.path, parse_qs(url.query), body)
                    except KeyError as exc:
                        code, obj = 404, {"kind": "Status", "status": "Failure", "reason": "NotFound", "message": f"{exc} not found", "code": 404}
                self._send(code, obj)

            def do_GET(self) -> None:  # noqa: N802
                self._route("GET")

            def do_PATCH(self) -> None:  # noqa: N802
                self._route("PATCH")

            def do_DELETE(self) -> None:  # noqa: N802
                self._route("DELETE")

        return Handler

    def _public(self, pod: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in pod.items() if not k.startswith("_")}

    def _serve(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        ns = re.escape(self.namespace)
        if m := re.fullmatch(rf"/apis/apps/v1/namespaces/{ns}/deployments/([^/]+)/scale", path):
            dep = self.deployments[m.group(1)]
            if method == "PATCH":
                dep["spec"]["replicas"] = int(body["spec"]["replicas"])
                self.reconcile()
            n = dep["spec"]["replicas"]
            return 200, {"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": m.group(1), "namespace": self.namespace}, "spec": {"replicas": n}, "status": {"replicas": n}}
        if m := re.fullmatch(rf"/apis/apps/v1/namespaces/{ns}/deployments/([^/]+)", path):
            dep = self.deployments[m.group(1)]
            if method == "PATCH":
                merge(dep, body)
                self.reconcile()
            return 200, dep
        if re.fullmatch(rf"/api/v1/namespaces/{ns}/pods", path) and method == "GET":
            want = dict(kv.split("=", 1) for kv in query.get("labelSelector", [""])[0].split(",") if kv)
            items = [self._public(p) for p in self.pods.values() if want.items() <= p["metadata"]["labels"].items()]
            return 200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}
        if m := re.fullmatch(rf"/api/v1/namespaces/{ns}/pods/([^/]+)", path):
            pod = self.pods[m.group(1)]
            if method == "PATCH":
                merge(pod, body)
            elif method == "DELETE":
                self._delete(m.group(1))
                self.reconcile()
            return 200, self._public(pod)
        return 404, {"kind": "Status", "status": "Failure", "reason": "NotFound", "message": path, "code": 404}
