"""deploy/: Kubernetes manifests, compose file, Procfile and Dockerfile are valid and minimal.

No cluster and no kubeconform here: each manifest is checked strictly against the official
``kubernetes`` client's models (every key must be a field of the model, recursively; then the
client deserializes it, which enforces required fields), plus the properties that matter for
scalejob: RBAC is the least the autoscaler needs, workers get a GPU and a long grace period.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from app.cli.main import cli
from tests.helpers import ROOT

kubernetes = pytest.importorskip("kubernetes")
from kubernetes import client  # noqa: E402

K8S_DIR = ROOT / "deploy" / "kubernetes"
PRIMITIVES = {"str": str, "int": int, "float": (int, float), "bool": bool}
MIN_WORKER_GRACE = 600
ALLOWED_ROLE_RULES = {("apps", "deployments"), ("apps", "deployments/scale"), ("", "pods")}
ALLOWED_VERBS = {"get", "list", "watch", "patch", "delete"}


def strict_errors(data: Any, type_name: str, path: str) -> list[str]:
    """Keys the model ``type_name`` does not have, and values of the wrong shape.

    The client's generator spells container types ``list[X]`` / ``dict(str, X)`` up to v35 and
    ``List[X]`` / ``Dict[str, X]`` since: both are read.
    """
    if type_name.startswith("List["):
        type_name = "list[" + type_name[5:]
    if type_name.startswith("Dict["):
        type_name = "dict(" + type_name[5:-1] + ")"
    if type_name.startswith("list["):
        if not isinstance(data, list):
            return [f"{path}: expected a list"]
        return [e for i, item in enumerate(data) for e in strict_errors(item, type_name[5:-1], f"{path}[{i}]")]
    if type_name.startswith("dict("):
        value_type = re.match(r"dict\(([^,]*), (.*)\)$", type_name).group(2)  # type: ignore[union-attr]
        if not isinstance(data, dict):
            return [f"{path}: expected a mapping"]
        return [e for k, v in data.items() for e in strict_errors(v, value_type, f"{path}.{k}")]
    if type_name == "object":  # IntOrString, Quantity, free-form
        return []
    if type_name == "str" and re.search(r"\.(limits|requests)\.", path) and isinstance(data, (int, float)):
        return []  # a Quantity: the client types it str, the API server takes a plain number too
    if type_name in PRIMITIVES:
        return [] if isinstance(data, PRIMITIVES[type_name]) else [f"{path}: expected {type_name}, got {data!r}"]
    model = getattr(client.models, type_name)
    if not isinstance(data, dict):
        return [f"{path}: expected a {type_name} mapping"]
    by_json = {json_key: attr for attr, json_key in model.attribute_map.items()}
    errors = []
    for key, value in data.items():
        if key not in by_json:
            errors.append(f"{path}.{key}: not a field of {type_name}")
            continue
        errors += strict_errors(value, model.openapi_types[by_json[key]], f"{path}.{key}")
    return errors


def model_name(doc: dict[str, Any]) -> str:
    version = doc["apiVersion"].split("/")[-1]
    return f"{version.capitalize()}{doc['kind']}"


def load_manifests() -> list[tuple[Path, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        docs += [(path, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


MANIFESTS = load_manifests()


def find(kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for _, d in MANIFESTS if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


@pytest.mark.parametrize(("path", "doc"), MANIFESTS, ids=[f"{p.name}:{d['kind']}/{d['metadata']['name']}" for p, d in MANIFESTS])
def test_manifest_matches_the_kubernetes_schema(path: Path, doc: dict[str, Any]) -> None:
    name = model_name(doc)
    assert hasattr(client.models, name), f"{path.name}: unknown kind {doc['apiVersion']}/{doc['kind']}"
    assert strict_errors(doc, name, doc["kind"]) == []
    obj = client.ApiClient()._ApiClient__deserialize(doc, name)  # required fields are enforced here
    assert obj.metadata.name == doc["metadata"]["name"]
    if doc["kind"] not in ("Namespace",):
        assert obj.metadata.namespace in ("scalejob", "scalejob-workers")


def test_workloads_select_their_own_pods() -> None:
    for doc in find("Deployment") + find("StatefulSet"):
        selector = doc["spec"]["selector"]["matchLabels"]
        labels = doc["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), doc["metadata"]["name"]


def test_api_service_routes_to_the_api_pods_port() -> None:
    [dep] = find("Deployment", "scalejob-api")
    [svc] = find("Service", "scalejob-api")
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    ports = {p["name"] for c in dep["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= ports


def test_autoscaler_rbac_is_namespaced_and_minimal() -> None:
    assert find("ClusterRole") == [] and find("ClusterRoleBinding") == []
    [role] = find("Role", "scalejob-autoscaler")
    [binding] = find("RoleBinding", "scalejob-autoscaler")
    [dep] = find("Deployment", "scalejob-autoscaler")
    workers = [d for d in find("Deployment") if d["metadata"]["namespace"] == "scalejob-workers"]
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "scalejob-workers"
    for rule in role["rules"]:
        assert set(rule["verbs"]) <= ALLOWED_VERBS, rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                assert (group, resource) in ALLOWED_ROLE_RULES, rule
                if group == "apps":  # deployments only by name: the ones it manages
                    assert set(rule["resourceNames"]) == {d["metadata"]["name"] for d in workers}
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "scalejob-autoscaler"}
    [subject] = binding["subjects"]
    assert subject["name"] == dep["spec"]["template"]["spec"]["serviceAccountName"]
    assert subject["namespace"] == dep["metadata"]["namespace"]


def test_worker_deployment_has_a_gpu_and_a_long_grace_period() -> None:
    workers = [d for d in find("Deployment") if d["metadata"]["namespace"] == "scalejob-workers"]
    assert workers
    for dep in workers:
        pod = dep["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] >= MIN_WORKER_GRACE
        [c] = pod["containers"]
        assert int(c["resources"]["limits"]["nvidia.com/gpu"]) >= 1
        assert c["args"][:1] == ["worker"] and "--name" in c["args"] and "$(POD_NAME)" in c["args"]
        pod_name = next(e for e in c["env"] if e["name"] == "POD_NAME")
        assert pod_name["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        assert dep["metadata"]["name"] == f"scalejob-{dep['metadata']['labels']['scalejob.io/service']}"


def test_redis_keeps_its_data_and_every_namespace_gets_the_urls() -> None:
    [sts] = find("StatefulSet", "redis")
    assert sts["spec"]["volumeClaimTemplates"] and "--appendonly" in sts["spec"]["template"]["spec"]["containers"][0]["args"]
    secrets = {s["metadata"]["namespace"]: s["stringData"] for s in find("Secret", "scalejob-config")}
    assert set(secrets) == {"scalejob", "scalejob-workers"}
    for data in secrets.values():
        assert data["SCALEJOB_BROKER_URL"].startswith("redis://redis.scalejob.svc")
    assert "SCALEJOB_ADMIN_TOKEN" not in secrets["scalejob-workers"]  # workers need no admin rights


CLI_COMMANDS = set(typer.main.get_command(cli).commands)  # type: ignore[attr-defined]


def test_compose_runs_the_four_services_against_its_redis() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"redis", "api", "autoscaler", "flower"}
    assert "--appendonly" in services["redis"]["command"]
    for name in ("api", "autoscaler", "flower"):
        svc = services[name]
        assert svc["command"][0] in CLI_COMMANDS, svc["command"]
        env = svc["environment"]
        assert env["SCALEJOB_BROKER_URL"].startswith("redis://redis:6379") and env["SCALEJOB_REDIS_URL"] == env["SCALEJOB_BROKER_URL"]
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "8000:8000" in services["api"]["ports"]
    assert ":?" in services["flower"]["environment"]["SCALEJOB_FLOWER_PASSWORD"]  # compose refuses to start without one
    assert services["autoscaler"]["stop_grace_period"] == "1h"


def test_procfile_runs_api_autoscaler_and_flower_with_real_commands() -> None:
    procs = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, cmd = line.partition(":")
            procs[name.strip()] = shlex.split(cmd)
    assert set(procs) == {"api", "autoscaler", "flower"}
    for argv in procs.values():
        assert argv[0] == "scalejob" and argv[1] in CLI_COMMANDS, argv


def test_dockerfile_installs_the_project_and_copies_what_exists() -> None:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    instructions = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert any(line.startswith("FROM ") for line in instructions)
    assert 'ENTRYPOINT ["scalejob"]' in text and 'pip install ".[k8s]"' in text
    assert "nvidia/cuda" in text  # the GPU variant is documented
    for line in instructions:
        if line.startswith("COPY ") and "--from" not in line:
            for src in line.split()[1:-1]:
                if not src.startswith("--"):
                    assert (ROOT / src).exists(), src
    assert "USER scalejob" in text


def test_the_schema_check_catches_a_misspelt_field() -> None:
    bad = {"metadata": {"name": "x"}, "spec": {"template": {"spec": {"containers": [{"name": "a", "imagePullPolice": "Always"}]}}}}
    assert strict_errors(bad, "V1Deployment", "Deployment") == [
        "Deployment.spec.template.spec.containers[0].imagePullPolice: not a field of V1Container"
    ]
