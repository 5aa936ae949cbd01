"""The service JSON: every malformed spec is refused with the exact key path and what was expected."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app.core.specs import SpecError, json_schema, load_spec, parse_spec
from app.queue.services import spec_hash
from tests.helpers import ROOT

EXAMPLES = sorted((ROOT / "deploy" / "examples").glob("*.json"))
SCHEMA_FILE = ROOT / "docs" / "service-spec.schema.json"


def spec(**parts: Any) -> dict[str, Any]:
    """A valid minimal spec with ``parts`` merged over it (``metadata`` keys merge too)."""
    base: dict[str, Any] = {"metadata": {"name": "svc"}}
    meta = parts.pop("metadata", {})
    base["metadata"].update(meta)
    base.update(parts)
    return base


# (spec, the start of the error message: "<key path>: <what>")
MALFORMED: list[tuple[dict[str, Any] | Any, str]] = [
    ({}, "metadata: required key is missing"),
    ([], "(spec): expected a JSON object"),
    ({"metadata": {}}, "metadata.name: required key is missing"),
    (spec(metadata={"name": "Bad_Name"}), "metadata.name: expected 1-63 characters"),
    (spec(metadata={"name": "-x"}), "metadata.name: expected 1-63 characters"),
    (spec(metadata={"typo": 1}), "metadata.typo: unknown key; did you mean type?"),
    (spec(metadata={"type": "Job"}), "metadata.type: expected 'ScalableJob' or 'ScalableJobService'"),
    (spec(metadata={"gpu": -1}), "metadata.gpu: expected a number >= 0, got -1"),
    (spec(metadata={"rpc.worker_thread": 2}), "metadata.rpc.worker_thread: unknown key; did you mean rpc.worker_threads?"),
    (spec(metadata={"rpc.worker_threads": 0}), "metadata.rpc.worker_threads: expected a number >= 1"),
    (spec(metadata={"token": "short"}), "metadata.token: expected at least 8 character(s), got \"<hidden>\""),
    (spec(metadata={"task_types": ["query"]}), "metadata.task_types: query tasks need containers[0].port"),
    (spec(metadata={"task_types": ["train"]}), "metadata.task_types[0]: expected 'command' or 'query'"),
    (spec(metadata={"tenant_max_waiting": 0}), "metadata.tenant_max_waiting: expected a number >= 1"),
    (spec(containers="x"), "containers: expected a valid list"),
    (spec(containers=[]), "containers: expected at least 1 item(s)"),
    (spec(containers=[{"comand": "x"}]), "containers[0].comand: unknown key; did you mean command?"),
    (spec(containers=[{}, {"port": 70000}]), "containers[1].port: expected a number <= 65535"),
    (spec(containers=[{"port": "http"}]), "containers[0].port: expected a valid integer, got \"http\""),
    (spec(containers=[{"init_commands": "pip install x"}]), "containers[0].init_commands: expected a valid list"),
    (spec(containers=[{"env": [{"nme": "A", "value": "1"}]}]), "containers[0].env[0].name: required key is missing"),
    (spec(containers=[{"env": [{"name": "A", "valeu": "1"}]}]), "containers[0].env[0].valeu: unknown key; did you mean value?"),
    (spec(containers=[{"env": {"A": 1}}]), "containers[0].env[0].value: expected a valid string"),
    (spec(front_end={"script": "x"}), "front_end: only allowed when metadata.type is ScalableJobService"),
    (spec(metadata={"type": "ScalableJobService"}), "front_end.script: required when metadata.type is ScalableJobService"),
    (spec(metadata={"type": "ScalableJobService"}, front_end={"scrpt": "x"}), "front_end.scrpt: unknown key; did you mean script?"),
    (spec(scalable_job={"enable_write_log_to_queue": "maybe"}), "scalable_job.enable_write_log_to_queue: expected a valid boolean"),
    (spec(autoscaler={"min": 3, "max": 2}), "autoscaler.max: expected max >= min (3), got 2"),
    (spec(autoscaler={"mx": 2}), "autoscaler.mx: unknown key; did you mean max?"),
    (spec(autoscaler={"strategies": {"avg_waiting_lenght": 2}}), "autoscaler.strategies.avg_waiting_lenght: unknown key; did you mean avg_waiting_length?"),
    (spec(autoscaler={"strategies": {"avg_waiting_length": 0}}), "autoscaler.strategies.avg_waiting_length: expected a number > 0"),
    (
        spec(autoscaler={"strategies": {"avg_waiting_length": 2, "target_wait_seconds": 60}}),
        "autoscaler.strategies: set either avg_waiting_length or target_wait_seconds, not both",
    ),
    (spec(autoscaler={"strategies": {"target_wait_seconds": 0}}), "autoscaler.strategies.target_wait_seconds: expected a number > 0"),
    (
        spec(autoscaler={"behavior": {"onZero": {"scaleDownGracePeriod": 5}}}),
        "autoscaler.behavior.onZero.scaleDownGracePeriod: unknown key; did you mean scaleDownGracePeriodSeconds?",
    ),
    (
        spec(autoscaler={"behavior": {"scaleDown": {"stabilizationWindowSeconds": -1}}}),
        "autoscaler.behavior.scaleDown.stabilizationWindowSeconds: expected a number >= 0",
    ),
    (spec(storage=[{"local": {"path": "/d"}}]), "storage[0].mount_path: required key is missing"),
    (spec(storage=[{"mount_path": "/m", "local": {"pth": "/d"}}]), "storage[0].local.path: required key is missing"),
    (spec(storage=[{"mount_path": "/m", "local": {"path": "/d"}, "oss": {}}]), "storage[0].oss: unknown key"),
    (spec(zzz=1), "zzz: unknown key; known keys: containers, metadata"),
]


@pytest.mark.parametrize(("data", "expected"), MALFORMED, ids=[m[1].split(":")[0] + f"#{i}" for i, m in enumerate(MALFORMED)])
def test_malformed_spec_names_the_key_path_and_what_was_expected(data: Any, expected: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_spec(data)
    message = str(exc.value)
    assert expected in message, message
    assert "\n" not in message and "Traceback" not in message


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SpecError) as exc:
        parse_spec(spec(metadata={"gpu": -1, "typo": 1}, autoscaler={"mx": 1}))
    assert str(exc.value).count("; ") >= 2
    assert {"metadata.gpu", "metadata.typo", "autoscaler.mx"} <= {p.split(":")[0] for p in str(exc.value).split("; ")}


def test_defaults_are_the_documented_ones() -> None:
    s = parse_spec(spec())
    a = s.autoscaler
    assert (a.min, a.max, a.strategies.avg_waiting_length) == (1, 10, 2)
    assert (a.behavior.onZero.scaleDownGracePeriodSeconds, a.behavior.scaleDown.stabilizationWindowSeconds) == (60, 1)
    assert s.metadata.type == "ScalableJob" and s.metadata.rpc_worker_threads == 1
    assert s.write_logs_to_queue("command") and not s.write_logs_to_queue("query")


def test_env_accepts_the_eas_list_and_a_plain_map() -> None:
    as_list = parse_spec(spec(containers=[{"env": [{"name": "A", "value": "1"}]}]))
    as_map = parse_spec(spec(containers=[{"env": {"A": "1"}}]))
    assert as_list.app.env_dict() == as_map.app.env_dict() == {"A": "1"}
    assert parse_spec(json.loads(as_map.to_json())) == as_map  # a stored spec reads back the same


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_spec_validates(path: Path) -> None:
    parsed = load_spec(path)
    assert parsed.name == path.stem


def test_examples_cover_inference_training_and_an_integrated_service() -> None:
    specs = {p.stem: load_spec(p) for p in EXAMPLES}
    assert "query" in specs["inference"].allowed_task_types()
    assert specs["training"].allowed_task_types() == ["command"]
    assert specs["integrated"].metadata.type == "ScalableJobService" and specs["integrated"].front_end.script


def test_load_spec_names_the_file() -> None:
    with pytest.raises(SpecError, match=r"nope\.json: no such file"):
        load_spec("nope.json")


def test_shipped_json_schema_is_the_current_model() -> None:
    shipped = json.loads(SCHEMA_FILE.read_text())
    assert shipped == json_schema(), "docs/service-spec.schema.json is stale: run `scalejob spec-schema > docs/service-spec.schema.json`"
    assert shipped["additionalProperties"] is False and "metadata" in shipped["required"]
    assert shipped["$defs"]["Metadata"]["properties"]["rpc.worker_threads"]["default"] == 1


def test_spec_schema_command_prints_the_schema() -> None:
    out = subprocess.run([sys.executable, "-m", "app.cli", "spec-schema"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == json_schema()


def test_spec_hash_changes_only_for_what_needs_a_worker_restart() -> None:
    base = parse_spec(spec(containers=[{"command": "python app.py", "port": 8000}]))
    same = [
        spec(containers=[{"command": "python app.py", "port": 8000}], autoscaler={"max": 3}),
        spec(containers=[{"command": "python app.py", "port": 8000}], metadata={"token": "t" * 12, "max_waiting": 5}),
    ]
    changed = [
        spec(containers=[{"command": "python app2.py", "port": 8000}]),
        spec(containers=[{"command": "python app.py", "port": 8000, "env": {"A": "1"}}]),
        spec(containers=[{"command": "python app.py", "port": 8000}], metadata={"gpu": 1}),
        spec(containers=[{"command": "python app.py", "port": 8000}], metadata={"rpc.worker_threads": 2}),
        spec(containers=[{"command": "python app.py", "port": 8000}], storage=[{"mount_path": "/m", "local": {"path": "/d"}}]),
    ]
    assert all(spec_hash(parse_spec(s)) == spec_hash(base) for s in same)
    assert len({spec_hash(parse_spec(s)) for s in changed} | {spec_hash(base)}) == len(changed) + 1


def _leaf_keys(model: Any, prefix: str = "") -> list[str]:
    from app.core.specs import _submodel

    out = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        sub = _submodel(field.annotation)
        out += _leaf_keys(sub, key + ("[]." if "list" in str(field.annotation) else ".")) if sub else [key]
    return out


def test_every_key_is_documented() -> None:
    from app.core.specs import ServiceSpec

    doc = (ROOT / "docs" / "service-spec.md").read_text()
    missing = [k for k in _leaf_keys(ServiceSpec) if f"`{k}`" not in doc]
    assert missing == [], f"docs/service-spec.md lacks {missing}"


def test_deploy_of_a_bad_spec_is_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(spec(autoscaler={"strategies": {"avg_waiting_lenght": 2}})))
    out = subprocess.run([sys.executable, "-m", "app.cli", "deploy", str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "COLUMNS": "300"})
    assert out.returncode == 1
    assert out.stderr.strip() == f"error: {bad}:1: autoscaler.strategies.avg_waiting_lenght: unknown key; did you mean avg_waiting_length?"


SEED = Path(__file__).parent / "specs" / "seed"  # the EAS documentation's examples, copied as written


@pytest.mark.parametrize("name", ["inference", "integrated", "independent"])
def test_the_seed_documents_json_examples_load_as_written(name: str) -> None:
    spec = load_spec(SEED / f"{name}.json")  # trailing commas (inference) included
    assert spec.name in ("scalablejob", "kohya_job")


def test_hash_and_slash_comments_and_trailing_commas_are_allowed(tmp_path: Path) -> None:
    fragment = (SEED / "autoscaler-defaults.fragment").read_text()  # the docs' autoscaler block, '#' comments and all
    path = tmp_path / "s.json"
    path.write_text('{\n  // a comment\n  "metadata": {"name": "seedauto", "token": "secret#token-1",},  # hash inside a string stays\n  "autoscaler": ' + fragment + ",\n}\n")
    spec = load_spec(path)
    assert spec.metadata.token == "secret#token-1" and spec.autoscaler.max == 10 and spec.autoscaler.behavior.onZero.scaleDownGracePeriodSeconds == 60


def test_spec_file_errors_name_the_key_and_its_line(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text('{\n  "metadata": {"name": "x"},\n  "autoscaler": {\n    "strategies": {"avg_waiting_lenght": 2},\n  },\n}\n')
    with pytest.raises(SpecError) as exc:
        load_spec(path)
    assert "avg_waiting_lenght" in str(exc.value) and f"{path}:4:" in str(exc.value), str(exc.value)
    path.write_text('{\n  "metadata": {"name": "x"},,\n}\n')
    with pytest.raises(SpecError, match="line 2"):
        load_spec(path)


def test_the_seed_examples_deploy_with_the_cli(stack) -> None:  # noqa: ANN001 - tests.conftest.Stack
    import subprocess

    from tests.helpers import python_argv

    for name in ("inference", "integrated", "independent"):
        out = subprocess.run(python_argv("-m", "app.cli", "deploy", str(SEED / f"{name}.json")), env=stack.env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
    assert {"scalablejob", "kohya_job"} <= set(stack.r.hkeys(f"{stack.prefix}:services") and [k.decode() for k in stack.r.hkeys(f"{stack.prefix}:services")])


def test_deploy_prints_the_token_it_made_or_how_to_get_one(stack) -> None:  # noqa: ANN001 - tests.conftest.Stack
    from app.api import auth
    from tests.helpers import python_argv

    path = Path(stack.tmp) / "s.json"
    name = stack.service_name("tok")
    path.write_text(json.dumps({"metadata": {"name": name}}))
    first = subprocess.run(python_argv("-m", "app.cli", "deploy", str(path)), env={**stack.env, "COLUMNS": "300"}, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    token = first.stdout.split("token ")[1].split()[0]
    assert auth.digest(token).encode() in stack.r.hkeys(auth.keys.tokens())  # a real token of the service (stored outside the key prefix)
    again = subprocess.run(python_argv("-m", "app.cli", "deploy", str(path)), env={**stack.env, "COLUMNS": "300"}, capture_output=True, text=True, timeout=60)
    assert f"scalejob token create {name}" in again.stdout, again.stdout


def test_a_progress_pattern_that_does_not_compile_or_captures_nothing_is_refused_at_deploy() -> None:
    for bad, why in (("([", "not a valid regular expression"), ("done", "needs one group")):
        with pytest.raises(SpecError) as exc:
            parse_spec({"metadata": {"name": "p"}, "scalable_job": {"progress_pattern": bad}})
        assert "progress_pattern" in str(exc.value) and why in str(exc.value), str(exc.value)
    assert parse_spec({"metadata": {"name": "p"}, "scalable_job": {"progress_pattern": r"(\d+)%"}}).scalable_job.progress_pattern == r"(\d+)%"
