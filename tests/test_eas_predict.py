"""Synchronous predict (``PredictClient``, ``?_sync_=true``) on a query service: the app's answer, not an index.

Finding 4 of issue 14: ``PredictClient`` + ``StringRequest`` (``eas-prediction`` 0.36, unchanged)
got 401 with ``set_token`` (it signs) and only the queue index with a raw token.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import httpx

from tests.apiserver import ApiServer, api, eas_python, run_eas  # noqa: F401
from tests.conftest import Stack
from tests.helpers import ROOT, free_port, wait_for

APP = ROOT / "tests" / "apps" / "eas_suite_app.py"
TOKEN = "svc-token-predict-0123"


def query_service(stack: Stack) -> Any:
    port = free_port()
    return stack.deploy({
        "containers": [{"command": f"{sys.executable} {APP} --port {port}", "port": port}],
        "metadata": {"name": stack.service_name("pred"), "token": TOKEN, "task_types": ["query"], "rpc.worker_threads": 2},
    })


def test_predict_client_gets_the_apps_answer(stack: Stack, api: ApiServer, eas_python: str) -> None:
    spec = query_service(stack)
    stack.start_worker(spec.name)
    got = run_eas(eas_python, """
        from eas_prediction import PredictClient, StringRequest
        from eas_prediction.exception import PredictException
        def call(token, **kw):
            c = PredictClient(ARGS["host"], ARGS["svc"], **kw)
            c.set_token(token)
            c.set_timeout(30000)
            c.init()
            try:
                return c.predict(StringRequest("[{}]")).response_data.decode()
            except PredictException as exc:
                return exc.code
        out({"signed": call(ARGS["token"]),
             "raw": call(ARGS["token"], custom_url=f"http://{ARGS['host']}/api/predict/{ARGS['svc']}"),
             "admin_signed": call(ARGS["admin"]),
             "wrong": call("not-the-token")})
    """, host=api.host, token=TOKEN, svc=spec.name, admin=api.env["SCALEJOB_ADMIN_TOKEN"])
    assert json.loads(got["signed"]) == [{"echo": "[{}]", "ok": True}], got
    assert json.loads(got["raw"]) == [{"echo": "[{}]", "ok": True}], got
    assert json.loads(got["admin_signed"]) == [{"echo": "[{}]", "ok": True}], got
    assert got["wrong"] == 401, got
    with api.client(TOKEN) as http:
        teapot = http.post(f"/api/predict/{spec.name}", params={"_sync_": "true"}, content=b"status:418")
        queued = http.post(f"/api/predict/{spec.name}", headers={"X-EAS-QueueService-Redis-Uid": "u1"}, content=b"[{}]")
    assert teapot.status_code == 418 and json.loads(teapot.content)[0]["ok"] is False, teapot.text
    assert stack.record(teapot.headers["X-Eas-Queueservice-Request-Id"]).state == "failed"
    assert queued.status_code == 200 and queued.text.isdigit(), "a QueueClient put stays asynchronous"


def test_sync_predict_timeout_and_a_client_that_leaves_cancel_nothing(stack: Stack, api: ApiServer) -> None:
    spec = query_service(stack)  # no worker yet: nothing can answer
    with api.client(TOKEN) as http:
        late = http.post(f"/api/predict/{spec.name}", params={"_sync_": "true", "_timeout_": "300ms"}, content=b"late")
        try:
            http.post(f"/api/predict/{spec.name}", params={"_sync_": "true"}, content=b"left", timeout=0.5)
            raise AssertionError("the sync call answered without a worker")
        except httpx.ReadTimeout:
            pass
    assert late.status_code == 202 and late.json()["request_id"] == late.headers["X-Eas-Queueservice-Request-Id"], late.text
    stack.start_worker(spec.name)
    results = wait_for(lambda: (rs := [m for m in stack.sink(spec.name) if m.tags.get("type") == "result"]) and len(rs) == 2 and rs, 60,
                       what="both results in the sink")
    assert sorted(json.loads(m.data)[0]["echo"] for m in results) == ["late", "left"]
    assert stack.record(late.json()["request_id"]).state == "succeeded"


def test_bad_sync_calls_are_4xx(stack: Stack, api: ApiServer) -> None:
    spec = query_service(stack)
    cmd = stack.deploy(stack.command_spec(token=TOKEN))
    with api.client(TOKEN) as http:
        on_command = http.post(f"/api/predict/{cmd.name}", params={"_sync_": "true"}, content=b"true")
        bad_timeout = http.post(f"/api/predict/{spec.name}", params={"_sync_": "true", "_timeout_": "soon"}, content=b"x")
        bad_flag = http.post(f"/api/predict/{spec.name}", params={"_sync_": "maybe"}, content=b"x")
    with api.client(None) as http:
        bad_md5 = http.post(f"/api/predict/{spec.name}", content=b"x",
                            headers={"Authorization": "EAS c2ln", "Content-MD5": "0" * 32, "Date": "Sun, 29 Nov 2026 20:00:00 GMT"})
        no_date = http.post(f"/api/predict/{spec.name}", content=b"x", headers={"Authorization": "EAS c2ln", "Content-MD5": "9dd4e461268c8034f5c8564e155c67a6"})
    assert on_command.status_code == 400 and "query" in on_command.json()["detail"]
    assert bad_timeout.status_code == 400 and bad_flag.status_code == 400
    assert bad_md5.status_code == 401 and no_date.status_code == 401
    assert stack.r.llen(f"scalejob.{cmd.name}") == 0
