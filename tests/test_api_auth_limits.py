"""Auth, limits and bad input on the real ingress: 401/404/400/413/429/422, never a 500."""

from __future__ import annotations

import socket

from tests.apiserver import ADMIN_TOKEN, ApiServer, api  # noqa: F401
from tests.conftest import Stack
from tests.helpers import free_port

TOKEN = "svc-token-auth-0123"
OTHER = "svc-token-other-4567"


def test_missing_wrong_and_other_services_token_are_401(stack: Stack, api: ApiServer) -> None:
    spec = stack.deploy(stack.command_spec(token=TOKEN))
    stack.deploy(stack.command_spec(token=OTHER))
    url = f"/api/predict/{spec.name}"
    for token in (None, "wrong-token-xyz", OTHER, f"Bearer {OTHER}"):
        with api.client(token) as http:
            for method, path in (("POST", url), ("GET", url), ("GET", url + "/sink"), ("PUT", url + "/sink?_indexes_=1")):
                resp = http.request(method, path, params={"taskType": "command"} if method == "POST" else None, content=b"x")
                assert resp.status_code == 401, (token, method, path, resp.text)
                assert "detail" in resp.json() and (token is None or token.split()[-1] not in resp.text)
    for token in (TOKEN, f"Bearer {TOKEN}", ADMIN_TOKEN):
        with api.client(token) as http:
            assert http.post(url, params={"taskType": "command"}, content=b"true").status_code == 200
    with api.client(TOKEN) as http:
        assert http.get("/api/services").status_code == 401, "a service token is not an admin token"
    assert api.client(None).get("/healthz").status_code == 200


def test_token_never_in_logs_or_records(stack: Stack, api: ApiServer) -> None:
    spec = stack.deploy(stack.command_spec(token=TOKEN))
    stack.start_worker(spec.name)
    with api.client(f"Bearer {TOKEN}") as http:
        rid = http.post(f"/api/predict/{spec.name}", params={"taskType": "command", "note": "hi"}, content=b"echo ok").headers[
            "X-Eas-Queueservice-Request-Id"
        ]
        stack.wait_done(rid)
        assert http.get(f"/api/requests/{rid}").json()["state"] == "succeeded"
        http.get(f"/api/predict/{spec.name}/sink", params={"_attrs_": "true"})
        assert http.post(f"/api/predict/{spec.name}", params={"taskType": "nope"}, content=b"x").status_code == 400
    with api.client("Bearer wrong-secret-abcdef") as http:
        http.get(f"/api/requests/{rid}")
    with api.client(ADMIN_TOKEN) as http:
        service = http.get(f"/api/services/{spec.name}").json()
    assert service["spec"]["metadata"]["token"] == "***"
    dump = b""
    for key in stack.r.scan_iter(f"{stack.prefix}:*"):
        kind = stack.r.type(key)
        if kind == b"hash":
            dump += b"".join(k + v for k, v in stack.r.hgetall(key).items() if key != f"{stack.prefix}:services".encode())
        elif kind == b"stream":
            dump += repr(stack.r.xrange(key)).encode()
    logs = api.output() + "".join(p.output() for p in stack.procs)
    for secret in (TOKEN, "wrong-secret-abcdef", ADMIN_TOKEN):
        assert secret.encode() not in dump and secret not in logs


def test_unknown_service_and_request_are_404(stack: Stack, api: ApiServer) -> None:
    with api.client(ADMIN_TOKEN) as http:
        for method, path in (("POST", "/api/predict/nope"), ("GET", "/api/predict/nope/sink"), ("GET", "/api/requests/nope"),
                             ("DELETE", "/api/requests/nope"), ("GET", "/api/services/nope"), ("DELETE", "/api/services/nope")):
            resp = http.request(method, path)
            assert resp.status_code == 404 and "nope" in resp.json()["detail"], (method, path, resp.text)


def test_missing_or_unknown_task_type_is_400(stack: Stack, api: ApiServer) -> None:
    spec = stack.deploy(stack.command_spec(token=TOKEN))
    both = stack.deploy({"containers": [{"command": "true", "port": free_port()}], "metadata": {"name": stack.service_name("both"), "token": TOKEN}})
    with api.client(TOKEN) as http:
        missing = http.post(f"/api/predict/{both.name}", content=b"echo")
        unknown = http.post(f"/api/predict/{spec.name}", params={"taskType": "query"}, content=b"echo")
        junk = http.post(f"/api/predict/{spec.name}", params={"taskType": "rm -rf"}, content=b"echo")
    detail = missing.json()["detail"]
    assert missing.status_code == 400 and "taskType" in detail and "query" in detail and "command" in detail
    assert unknown.status_code == 400 and "query" in unknown.json()["detail"]
    assert junk.status_code == 400
    assert stack.r.llen(f"scalejob.{spec.name}") == 0 and stack.r.llen(f"scalejob.{both.name}") == 0


def test_put_without_task_type_on_a_one_type_service_takes_that_type(stack: Stack, api: ApiServer) -> None:
    """EAS asynchronous-inference clients never send taskType: a service with one task type needs none."""
    cmd = stack.deploy(stack.command_spec(token=TOKEN))
    query = stack.deploy({"containers": [{"command": "true", "port": free_port()}],
                          "metadata": {"name": stack.service_name("q"), "token": TOKEN, "task_types": ["query"]}})
    with api.client(TOKEN) as http:
        got = {s.name: http.post(f"/api/predict/{s.name}", content=b"[{}]") for s in (cmd, query)}
    for resp in got.values():
        assert resp.status_code == 200, resp.text
    assert stack.record(got[cmd.name].headers["X-Eas-Queueservice-Request-Id"]).task_type == "command"
    assert stack.record(got[query.name].headers["X-Eas-Queueservice-Request-Id"]).task_type == "query"


def test_oversize_body_is_413_before_it_is_read(stack: Stack, api: ApiServer) -> None:
    spec = stack.deploy(stack.command_spec(token=TOKEN, max_payload_bytes=1000))
    with api.client(TOKEN) as http:
        assert http.post(f"/api/predict/{spec.name}", params={"taskType": "command"}, content=b"x" * 1000).status_code == 200
        big = http.post(f"/api/predict/{spec.name}", params={"taskType": "command"}, content=b"x" * 1001)
        chunked = http.post(f"/api/predict/{spec.name}", params={"taskType": "command"}, content=iter([b"x" * 600, b"x" * 600]))
    assert big.status_code == 413 and "1000" in big.json()["detail"]
    assert chunked.status_code == 413
    # a client announcing 100 MB gets its 413 at once, without sending the body
    with socket.create_connection(("127.0.0.1", api.port), timeout=5) as s:
        s.sendall(f"POST /api/predict/{spec.name}?taskType=command HTTP/1.1\r\nHost: x\r\nAuthorization: {TOKEN}\r\n"
                  f"Content-Length: {100 * 1024 * 1024}\r\n\r\n".encode())
        assert b" 413 " in s.recv(4096).split(b"\r\n")[0]


def test_queue_full_is_429_with_retry_after(stack: Stack, api: ApiServer) -> None:
    spec = stack.deploy(stack.command_spec(token=TOKEN, max_waiting=3))
    with api.client(TOKEN) as http:
        codes = [http.post(f"/api/predict/{spec.name}", params={"taskType": "command"}, content=b"true").status_code for _ in range(3)]
        full = http.post(f"/api/predict/{spec.name}", params={"taskType": "command"}, content=b"true")
    assert codes == [200, 200, 200]
    assert full.status_code == 429 and int(full.headers["Retry-After"]) >= 1 and "waiting" in full.json()["detail"]


def test_malformed_params_are_400_or_422_with_json_detail(stack: Stack, api: ApiServer) -> None:
    spec = stack.deploy(stack.command_spec(token=TOKEN))
    url = f"/api/predict/{spec.name}/sink"
    with api.client(TOKEN) as http:
        for params in ({"_index_": "abc"}, {"_length_": "0"}, {"_timeout_": "soon"}, {"_auto_delete_": "maybe"},
                       {"_search_": "true", "_index_": "-1"}, {"_watch_": "true"}):
            resp = http.get(url, params=params)
            assert resp.status_code == 400 and resp.json()["detail"], (params, resp.text)
        assert http.put(url, params={"_indexes_": "1,x"}).status_code == 400
        assert http.delete(url).status_code == 400
        assert http.get(url, params={"_index_": str(2**70)}).status_code == 400
        assert http.get("/api/requests/x/events", headers={"Last-Event-ID": "junk"}).status_code in (400, 404)
    with api.client(ADMIN_TOKEN) as http:
        bad_json = http.put(f"/api/services/{spec.name}", content=b"{not json")
        bad_spec = http.put(f"/api/services/{spec.name}", json={"metadata": {"name": spec.name}, "autoscaler": {"mx": 3}})
        mismatch = http.put(f"/api/services/{spec.name}", json={"metadata": {"name": "other"}})
    assert bad_json.status_code == 422 and bad_json.json()["detail"]
    assert bad_spec.status_code == 400 and "autoscaler.mx" in bad_spec.json()["detail"]
    assert mismatch.status_code == 400 and "other" in mismatch.json()["detail"]


def test_services_admin_routes_issue_tenant_tokens_and_show_live_stats(stack: Stack, api: ApiServer) -> None:
    import json

    from app.api import auth
    from app.core import keys

    name = stack.service_name("adm")
    with api.client(ADMIN_TOKEN) as http:
        created = http.put(f"/api/services/{name}", json={"metadata": {"name": name}}).json()
        token = created["token"]
        assert created["version"] == 1
        assert http.put(f"/api/services/{name}", json={"metadata": {"name": name}}).json().get("token") is None
        stack.r.lpush(keys.decisions(name), json.dumps({"desired": 2, "reason": "load 3", "rule": "scale-up", "at": 1.0}))
        listed = {s["name"]: s for s in http.get("/api/services").json()}
        assert listed[name]["stats"]["desired"] == 2 and listed[name]["stats"]["waiting"] == 0
        assert listed[name]["stats"]["last_decision"]["reason"] == "load 3"
        metrics = http.get("/metrics").text
        assert "scalejob_http_requests_total" in metrics
    assert stack.r.hget(keys.tokens(), auth.digest(token)) is not None and not stack.r.hexists(keys.tokens(), token)
    frontend = auth.issue(stack.r, name, tenant="acme")
    with api.client(frontend) as http:
        rid = http.post(f"/api/predict/{name}", params={"taskType": "command", "tenant": "spoofed"}, content=b"true").headers[
            "X-Eas-Queueservice-Request-Id"
        ]
        assert http.get(f"/api/requests/{rid}").json()["tenant"] == "acme"
    with api.client(token) as http:
        other = http.post(f"/api/predict/{name}", params={"taskType": "command"}, content=b"true").headers["X-Eas-Queueservice-Request-Id"]
    with api.client(frontend) as http:
        assert http.get(f"/api/requests/{other}").status_code == 404, "a tenant token sees only its tenant's requests"
    with api.client(ADMIN_TOKEN) as http:
        assert http.delete(f"/api/services/{name}").status_code == 200
    with api.client(token) as http:  # revoked with its service: no longer a valid token, so not told whether it exists (issue 13)
        assert http.post(f"/api/predict/{name}", params={"taskType": "command"}, content=b"true").status_code == 401
    assert stack.r.hget(keys.tokens(), auth.digest(token)) is None
