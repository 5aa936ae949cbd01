"""Property-based: whatever schemathesis generates from the OpenAPI schema, the server never answers 5xx."""

from __future__ import annotations

import pytest

from tests.apiserver import ADMIN_TOKEN, ApiServer, api  # noqa: F401
from tests.conftest import Stack

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402


def test_no_input_gives_a_5xx(stack: Stack, api: ApiServer) -> None:
    spec = stack.deploy(stack.command_spec(token="svc-token-fuzz-0123", max_waiting=50))
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    any_case = st.one_of(schema.as_strategy(GenerationMode.POSITIVE), schema.as_strategy(GenerationMode.NEGATIVE))
    on_service = schema.include(path_regex="^/api/predict/").as_strategy(GenerationMode.POSITIVE, path_parameters={"service": spec.name})
    failures: list[str] = []
    statuses: list[int] = []

    @settings(max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=st.one_of(any_case, on_service), auth=st.sampled_from([ADMIN_TOKEN, "svc-token-fuzz-0123", "nope"]))
    def check(case, auth: str) -> None:  # noqa: ANN001
        if case.path.endswith("/events") or (case.query or {}).get("_timeout_"):
            case.query = {**(case.query or {}), "_timeout_": "0s"} if not case.path.endswith("/events") else case.query
        resp = case.call(base_url=api.url, headers={"Authorization": auth}, timeout=15)
        statuses.append(resp.status_code)
        if resp.status_code >= 500:
            failures.append(f"{case.method} {case.path} {case.path_parameters} {case.query} -> {resp.status_code} {resp.text[:200]}")

    check()
    assert not failures, "\n".join(failures[:10])
    assert len(statuses) >= 50 and any(200 <= s < 300 for s in statuses), sorted(set(statuses))
    assert "Traceback" not in api.output()
