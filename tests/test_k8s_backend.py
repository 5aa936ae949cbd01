"""The kubernetes backend against an in-process fake API server (tests/fake_k8s.py).

The real ``kubernetes`` client makes real HTTP calls; only the cluster is fake.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("kubernetes", reason="the k8s extra is not installed (pip install 'scalejob[k8s]')")

from kubernetes import client  # noqa: E402

from app.core.specs import parse_spec  # noqa: E402
from autoscale.backends.base import BackendError  # noqa: E402
from autoscale.backends.kubernetes import DELETION_COST, KubernetesBackend, deployment_name, termination_grace  # noqa: E402
from tests.fake_k8s import FakeKube  # noqa: E402

SERVICE = "train"
DEP = deployment_name(SERVICE)


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with FakeKube() as k:
        k.add_deployment(DEP)
        yield k


@pytest.fixture
def cancelled() -> list[tuple[str, str]]:
    return []


@pytest.fixture
def backend(kube: FakeKube, cancelled: list[tuple[str, str]]) -> KubernetesBackend:
    conf = client.Configuration()
    conf.host = kube.url
    spec = parse_spec({"metadata": {"name": SERVICE, "max_runtime": 600}})
    return KubernetesBackend(
        api_client=client.ApiClient(conf),
        cancel_consumer=lambda service, name: cancelled.append((service, name)),
        spec_of=lambda s: spec if s == SERVICE else None,
    )


def by_name(backend: KubernetesBackend, name: str):  # noqa: ANN201
    return next(h for h in backend.list(SERVICE) if h.name == name)


def test_spawn_raises_replicas_and_sets_grace_from_max_runtime(kube: FakeKube, backend: KubernetesBackend) -> None:
    backend.spawn(SERVICE, {})
    backend.spawn(SERVICE, {"CUDA_VISIBLE_DEVICES": "0"})
    dep = kube.deployments[DEP]
    assert dep["spec"]["replicas"] == 2 and len(kube.active(DEP)) == 2
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 630
    template_patches = [r for r in kube.requests if r[0] == "PATCH" and r[1].endswith(f"deployments/{DEP}")]
    assert len(template_patches) == 1, "the template (a rollout) is patched once, not per spawn"
    assert sorted(h.name for h in backend.list(SERVICE)) == sorted(kube.active(DEP))


def test_replicas_without_a_pod_yet_are_listed_as_pending(kube: FakeKube, backend: KubernetesBackend) -> None:
    kube.deployments[DEP]["spec"]["replicas"] = 2  # scaled, but the ReplicaSet has not acted yet
    handles = backend.list(SERVICE)
    assert [h.meta.get("pending") for h in handles] == ["1", "1"]
    backend.stop(handles[0])
    assert kube.deployments[DEP]["spec"]["replicas"] == 1


def test_drain_cancels_the_consumer_and_marks_the_pod_without_scaling(kube: FakeKube, backend: KubernetesBackend, cancelled: list) -> None:
    for _ in range(3):
        backend.spawn(SERVICE, {})
    victim = kube.active(DEP)[1]
    backend.drain(by_name(backend, victim))
    backend.drain(by_name(backend, victim))  # idempotent
    assert cancelled == [(SERVICE, victim)]
    assert kube.deployments[DEP]["spec"]["replicas"] == 3 and kube.terminating() == []
    assert kube.pods[victim]["metadata"]["annotations"][DELETION_COST] == "-1000"
    assert by_name(backend, victim).meta["draining"] == "1"


def test_scale_in_deletes_exactly_the_victim(kube: FakeKube, backend: KubernetesBackend) -> None:
    for _ in range(3):
        backend.spawn(SERVICE, {})
    pods = kube.active(DEP)
    victim = pods[0]  # the oldest: without the deletion cost the ReplicaSet would pick the newest
    h = by_name(backend, victim)
    backend.drain(h)
    backend.stop(by_name(backend, victim))
    assert kube.terminating() == [victim]
    assert kube.active(DEP) == pods[1:] and kube.deployments[DEP]["spec"]["replicas"] == 2
    stopping = by_name(backend, victim)
    assert stopping.meta["stopping"] == "1"
    backend.stop(stopping)  # idempotent: does not lower replicas again
    assert kube.deployments[DEP]["spec"]["replicas"] == 2
    kube.finish()
    assert sorted(h.name for h in backend.list(SERVICE)) == pods[1:]


def test_victim_is_deleted_even_when_the_replicaset_prefers_a_pending_pod(kube: FakeKube, backend: KubernetesBackend) -> None:
    backend.spawn(SERVICE, {})
    backend.spawn(SERVICE, {})
    busy, victim = kube.active(DEP)
    kube.new_pod_phase = "Pending"
    backend.spawn(SERVICE, {})
    pending = kube.active(DEP)[2]
    backend.stop(by_name(backend, victim))
    assert victim in kube.terminating() and busy in kube.active(DEP)
    assert len(kube.active(DEP)) == 2 == kube.deployments[DEP]["spec"]["replicas"]
    assert pending in kube.terminating(), "the pending pod went first and was replaced"


def test_standby_is_refused_with_one_line(backend: KubernetesBackend) -> None:
    with pytest.raises(BackendError, match="warm standby is not supported"):
        backend.spawn(SERVICE, {"SCALEJOB_STANDBY": "1"})


def test_missing_deployment_is_a_one_line_error(backend: KubernetesBackend) -> None:
    with pytest.raises(BackendError) as exc:
        backend.list("nope")
    assert str(exc.value) == "nope: kubernetes read deployment scalejob-nope failed: 404 Not Found"


def test_termination_grace_defaults() -> None:
    assert termination_grace(None) == 3630
    assert termination_grace(parse_spec({"metadata": {"name": "x", "max_runtime": 5.5}}), margin=0) == 6
    assert deployment_name("My_svc") == "scalejob-my-svc"
