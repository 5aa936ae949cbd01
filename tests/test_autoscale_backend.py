"""``scalejob autoscale --backend kubernetes``: the flag (and its env twin) pick the Kubernetes backend.

The cluster is the fake API server of tests/fake_k8s.py, reached through a real kubeconfig file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("kubernetes", reason="the k8s extra is not installed (pip install 'scalejob[k8s]')")

from app.core.settings import Settings  # noqa: E402
from autoscale.backends.kubernetes import KubernetesBackend, deployment_name  # noqa: E402
from tests.conftest import Stack  # noqa: E402
from tests.fake_k8s import FakeKube  # noqa: E402
from tests.helpers import Proc, python_argv, wait_for  # noqa: E402

NS = "scalejob-workers"


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with FakeKube(namespace=NS) as k:
        yield k


def kubeconfig(tmp: Path, kube: FakeKube) -> Path:
    path = tmp / "kubeconfig"
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters: [{{name: fake, cluster: {{server: "{kube.url}"}}}}]
users: [{{name: test, user: {{token: not-a-secret}}}}]
contexts: [{{name: fake, context: {{cluster: fake, user: test}}}}]
current-context: fake
"""
    )
    return path


def test_backend_env_twins_build_the_kubernetes_backend(stack: Stack, kube: FakeKube, monkeypatch: pytest.MonkeyPatch) -> None:
    from autoscale.main import scalejob_autoscaler

    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(stack.tmp, kube)))
    monkeypatch.setenv("SCALEJOB_AUTOSCALER_BACKEND", "kubernetes")
    monkeypatch.setenv("SCALEJOB_K8S_NAMESPACE", NS)
    scaler = scalejob_autoscaler(Settings())  # read from the environment, not the cached settings
    assert isinstance(scaler.backend, KubernetesBackend) and scaler.backend.namespace == NS
    scaler.backend.close()


def test_autoscale_backend_flag_scales_the_service_deployment(stack: Stack, kube: FakeKube) -> None:
    spec = stack.deploy({"metadata": {"name": stack.service_name("k8s")}, "autoscaler": {"min": 0, "max": 3}})
    kube.add_deployment(deployment_name(spec.name))
    env = {**stack.env, "KUBECONFIG": str(kubeconfig(stack.tmp, kube))}
    scaler = Proc(python_argv("-m", "app.cli", "autoscale", "--backend", "kubernetes", "--k8s-namespace", NS), env, stack.tmp / "autoscaler.log")
    stack.procs.append(scaler)
    stack.put(spec, "command", "echo hi")
    wait_for(lambda: kube.deployments[deployment_name(spec.name)]["spec"]["replicas"] >= 1 or not scaler.alive(), 30, what="the deployment to scale up")
    assert scaler.alive(), scaler.output()
    assert len(kube.active(deployment_name(spec.name))) >= 1
    assert "started worker" not in scaler.output(), "no local worker process"


def test_unknown_backend_is_a_one_line_error(stack: Stack) -> None:
    import subprocess

    out = subprocess.run(python_argv("-m", "app.cli", "autoscale", "--backend", "nomad"), env=stack.env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "--backend: expected local or kubernetes, got 'nomad'" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
