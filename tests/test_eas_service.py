"""The real EAS client driving a real query service end to end: input queue -> worker -> user app -> sink."""

from __future__ import annotations

import json
import sys

from tests.apiserver import ApiServer, api, eas_python, run_eas  # noqa: F401
from tests.conftest import Stack
from tests.helpers import ROOT, free_port

SLOW_APP = ROOT / "deploy" / "examples" / "slow_app.py"
TOKEN = "svc-token-query-0123"


def test_eas_client_through_a_real_query_service(stack: Stack, api: ApiServer, eas_python: str) -> None:
    port = free_port()
    spec = stack.deploy({
        "containers": [{"command": f"{sys.executable} {SLOW_APP} --port {port}", "port": port, "env": {"SLOW_APP_DELAY": "0.01"}}],
        "metadata": {"name": stack.service_name("q"), "token": TOKEN, "rpc.worker_threads": 4},
    })
    stack.start_worker(spec.name)
    got = run_eas(eas_python, """
        inq = client(ARGS["svc"])
        sink = client(ARGS["svc"] + "/sink")
        puts = [inq.put(f"item {i}", tags={"taskType": "query"}) for i in range(20)]
        mirrored = inq.get(request_id=puts[3][1], auto_delete=False)
        attrs = inq.attributes()
        results = {}
        w = sink.watch(0, 5, auto_commit=False)
        for df in w.run():
            sink.commit(df.index)
            if df.tags["type"] == "result":
                results[df.tags["requestId"]] = json.loads(df.data)
            if len(results) == 20:
                break
        w.close()
        out({"puts": puts, "mirrored": [(d.index, d.data.decode(), dict(d.tags)) for d in mirrored],
             "attrs": attrs, "results": results, "sink_len": sink.attributes()["stream.length"]})
    """, host=api.host, token=TOKEN, svc=spec.name, timeout=180)
    indexes = [int(i) for i, _ in got["puts"]]
    assert indexes == list(range(1, 21))
    [(index, data, tags)] = got["mirrored"]
    assert index == 4 and data == "item 3" and tags["taskType"] == "query"
    assert int(got["attrs"]["stream.lastEntry"]) == 20
    for i, (_, rid) in enumerate(got["puts"]):
        assert got["results"][rid]["upper"] == f"ITEM {i}"
        assert stack.record(rid).state == "succeeded"
    assert int(got["sink_len"]) == 0, "committed messages leave the output queue"


def test_celery_send_task_is_tracked_and_lands_in_the_output_queue(stack: Stack, api: ApiServer, eas_python: str) -> None:
    from app.core.celery_app import celery_app

    port = free_port()
    spec = stack.deploy({
        "containers": [{"command": f"{sys.executable} {SLOW_APP} --port {port}", "port": port}],
        "metadata": {"name": stack.service_name("q"), "token": TOKEN},
    })
    stack.start_worker(spec.name)
    sent = celery_app.send_task("scalejob.query", kwargs={"service": spec.name, "payload": "direct"}, queue=f"scalejob.{spec.name}")
    got = run_eas(eas_python, """
        sink = client(ARGS["svc"] + "/sink")
        # sent straight through Celery: the id is unknown (get answers [] at once) until a worker takes it
        deadline, got = time.time() + 30, []
        while not got and time.time() < deadline:
            got = sink.get(request_id=ARGS["rid"], timeout="5s", tags={"type": "result"})
        [df] = got
        out({"data": df.data.decode(), "tags": dict(df.tags)})
    """, host=api.host, token=TOKEN, svc=spec.name, rid=sent.id)
    assert json.loads(got["data"])["upper"] == "DIRECT" and got["tags"]["statusCode"] == "200"
    with api.client(TOKEN) as http:
        rec = http.get(f"/api/requests/{sent.id}").json()
    assert rec["state"] == "succeeded" and rec["service"] == spec.name and rec["worker"].startswith(spec.name)
