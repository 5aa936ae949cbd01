"""Scenario 6: bad input never gives a 5xx, never kills a worker, never leaks a token.

schemathesis drives every route of the OpenAPI schema (positive and negative cases, with the
admin token, a service token, a wrong token and none; 80 examples to fit CI), then hand-made
abuse: malformed service specs, a 100 MB body (413 before the server reads it), a non-UTF-8
command, a pickle-serialized Celery message injected straight into the queue.
"""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.apiserver import ADMIN_TOKEN, ApiServer, api  # noqa: F401 - fixture
from tests.chaos.conftest import Row, count_outcomes
from tests.conftest import Stack
from tests.helpers import wait_for
from tests.test_messages import Exploit, _publish_raw

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402

TOKEN = "svc-token-chaos-7f3a9c"
MALFORMED_SPECS: list[bytes] = [
    b"", b"{", b"null", b"[]", b'"spec"', b"\xff\xfe\x00", b"[" * 5000 + b"]" * 5000,
    json.dumps({"metadata": {}}).encode(),
    json.dumps({"metadata": {"name": 5}}).encode(),
    json.dumps({"metadata": {"name": "other-name"}}).encode(),
    json.dumps({"metadata": {"name": "NAME"}, "containers": "x"}).encode(),
    json.dumps({"metadata": {"name": "NAME", "max_payload_bytes": -1}}).encode(),
    json.dumps({"metadata": {"name": "NAME"}, "autoscaler": {"min": 5, "max": 1}}).encode(),
    json.dumps({"metadata": {"name": "NAME"}, "autoscaler": {"strategies": {"nope": 1}}}).encode(),
    json.dumps({"metadata": {"name": "NAME", "task_types": ["rm -rf"]}}).encode(),
    json.dumps({"metadata": {"name": "NAME"}, "containers": [{"port": 99999}]}).encode(),
]


def announce_huge_body(api: ApiServer, path: str, token: str, method: str = "POST") -> tuple[bytes, float]:
    """Announce 100 MB, send 1 MB of it: the status line must come back without the rest."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as s:
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {100 * 1024 * 1024}\r\n\r\n".encode())
        try:
            s.sendall(b"x" * (1024 * 1024))
        except OSError:
            pass  # the server may already have answered and closed
        return s.recv(4096).split(b"\r\n")[0], time.monotonic() - t0


def redis_dump(stack: Stack) -> bytes:
    """Every value this test's keys hold (records, running hashes, output queues, leases), minus the spec registry."""
    r, out = stack.r, []
    read = {b"hash": r.hgetall, b"stream": r.xrange, b"string": r.get, b"list": lambda k: r.lrange(k, 0, -1),
            b"set": r.smembers, b"zset": lambda k: r.zrange(k, 0, -1)}
    for key in r.scan_iter(f"{stack.prefix}:*"):
        if not key.endswith(b":services") and (fn := read.get(r.type(key))):
            out.append(repr(fn(key)).encode())
    return b"".join(out)


def test_bad_input(stack: Stack, api: ApiServer, row: Row) -> None:
    spec = stack.deploy(stack.command_spec(token=TOKEN, max_waiting=200))
    worker = stack.start_worker(spec.name)
    stack.wait_workers(spec.name, 1, "idle")
    statuses: list[int] = []

    def seen(status: int, what: str) -> None:
        statuses.append(status)
        if status >= 500:
            row.five_xx += 1
            row.notes.append(f"{what} -> {status}"[:160])

    # 1. schemathesis over every route, with and without auth
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    any_case = st.one_of(schema.as_strategy(GenerationMode.POSITIVE), schema.as_strategy(GenerationMode.NEGATIVE))
    on_service = schema.include(path_regex="^/api/predict/").as_strategy(GenerationMode.POSITIVE, path_parameters={"service": spec.name})

    @settings(max_examples=80, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=st.one_of(any_case, on_service), auth=st.sampled_from([ADMIN_TOKEN, TOKEN, "wrong-token", None]))
    def fuzz(case, auth: str | None) -> None:  # noqa: ANN001
        if case.path.endswith("/events"):
            return  # an SSE stream stays open until its request ends: covered by tests/test_api_requests.py
        case.query = {**(case.query or {}), "_timeout_": "0s"} if (case.query or {}).get("_timeout_") else case.query
        resp = case.call(base_url=api.url, headers={"Authorization": auth} if auth else {}, timeout=15)
        seen(resp.status_code, f"{case.method} {case.path} {case.query}")

    fuzz()
    fuzzed = len(statuses)
    assert fuzzed >= 40 and any(s == 401 for s in statuses) and any(200 <= s < 300 for s in statuses), sorted(set(statuses))

    with api.client(ADMIN_TOKEN) as http:
        # 2. malformed service specs
        name = stack.service_name("bad")
        for body in MALFORMED_SPECS:
            resp = http.put(f"/api/services/{name}", content=body.replace(b"NAME", name.encode()))
            seen(resp.status_code, f"PUT spec {body[:40]!r}")
            assert 400 <= resp.status_code < 500 and "detail" in resp.json(), (body[:60], resp.status_code, resp.text[:200])
        assert http.get(f"/api/services/{name}").status_code == 404, "a malformed spec was deployed"

    # 3. 100 MB announced: 413 at once, the body is never read
    status, took = announce_huge_body(api, f"/api/predict/{spec.name}?taskType=command", TOKEN)
    seen(int(status.split()[1]), "100 MB put")
    assert b" 413 " in status and took < 5, (status, took)
    spec_status, spec_took = announce_huge_body(api, f"/api/services/{stack.service_name('huge')}", ADMIN_TOKEN, "PUT")
    seen(int(spec_status.split()[1]), "100 MB spec")
    assert b" 413 " in spec_status and spec_took < 5, (spec_status, spec_took)

    # 4. a non-UTF-8 command fails with a clear error; the worker survives
    with api.client(TOKEN) as http:
        bad = http.post(f"/api/predict/{spec.name}", params={"taskType": "command"}, content=b"echo \xff\xfe\xfd")
        seen(bad.status_code, "non-UTF-8 put")
    if bad.status_code == 200:
        rec = stack.wait_done(bad.headers["X-Eas-Queueservice-Request-Id"], 20)
        assert rec.state == "failed" and "utf-8" in (rec.error or "").lower(), rec
        row.notes.append(f"non-UTF-8 command: {rec.error}"[:160])
    else:
        assert bad.status_code == 400 and "utf-8" in bad.text.lower(), bad.text

    # 5. a pickle message straight into the queue: refused and logged, nothing unpickled
    marker = stack.tmp / "pwned.txt"
    body = __import__("pickle").dumps(((), {"service": spec.name, "payload": Exploit(str(marker))}, {}))
    headers = {"id": "evil-chaos", "task": "scalejob.command", "lang": "py", "argsrepr": "", "kwargsrepr": ""}
    _publish_raw(stack, f"scalejob.{spec.name}", body, "application/x-python-serialize", headers)
    wait_for(lambda: "ContentDisallowed" in worker.output() or "Refusing to deserialize" in worker.output(), 20, what="pickle refusal logged")

    # 5b. the audit's cases (issue 13): garbage on the broker list, a request id that climbs out of its
    # directory, another service's message, NUL in a path, a 5,000-digit integer, an absurd offset
    from app.core.celery_app import celery_app

    if stack.broker_url.startswith("redis"):
        stack.r.lpush(f"scalejob.{spec.name}", b"not a kombu envelope")
    celery_app.send_task("scalejob.command", kwargs={"service": spec.name, "payload": "true", "request_id": "../../tmp/x"},
                         queue=f"scalejob.{spec.name}")
    celery_app.send_task("scalejob.command", kwargs={"service": "another-service", "payload": "true", "request_id": "abc123"},
                         queue=f"scalejob.{spec.name}")
    wait_for(lambda: worker.output().count("refused") >= 2, 20, what="both messages refused")
    with api.client(ADMIN_TOKEN) as http:
        for what, resp in (
            ("NUL static path", http.get("/ui/static/dashboard.js%00.js")),
            ("5,000-digit integer", http.put(f"/api/services/{spec.name}", content=b'{"metadata": {"name": "x", "max_waiting": ' + b"9" * 5000 + b"}}")),
            ("absurd offset", http.get(f"/api/services/{spec.name}/requests", params={"offset": "9" * 21})),
        ):
            seen(resp.status_code, what)
            assert 400 <= resp.status_code < 500, (what, resp.status_code, resp.text[:200])

    ok = [stack.put(spec, "command", f"echo after-{i}") for i in range(3)]
    [stack.wait_done(i, 20) for i in ok]
    count_outcomes(stack, spec.name, ok, row)
    assert worker.alive() and not marker.exists()

    # 6. no token in any log, record or output queue
    dump = redis_dump(stack)
    logs = api.output() + worker.output()
    leaked = [t for t in (TOKEN, ADMIN_TOKEN, "wrong-token") if t in logs or t.encode() in dump]
    row.requests += len(statuses)
    row.notes.append(f"{fuzzed} schemathesis calls ({sorted(set(statuses))}); 100 MB -> 413 in {took:.2f}s; tokens leaked: {leaked}")
    assert not leaked and "Traceback" not in api.output()
    row.check()
