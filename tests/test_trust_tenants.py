"""Tenant isolation on every route of a shared service (issue 13, finding 4).

Two tenant-bound tokens on one service, a worker running both tenants' jobs: each tenant reads,
watches, searches, commits, deletes and cancels only its own entries; truncating and writing to
the output queue need the service token; the dashboard's worker view hides the other's ids.
"""

from __future__ import annotations

import json

import httpx

from app.api import auth
from tests.apiserver import ADMIN_TOKEN, ApiServer, api  # noqa: F401 - fixture
from tests.conftest import Stack
from tests.helpers import wait_for

SERVICE_TOKEN = "svc-tok-" + "s" * 16
RID = "X-Eas-Queueservice-Request-Id"


def _put(http: httpx.Client, svc: str, cmd: str) -> tuple[int, str]:
    resp = http.post(f"/api/predict/{svc}?taskType=command", content=cmd.encode())
    assert resp.status_code == 200, resp.text
    return int(resp.text), resp.headers[RID]


def _entries(http: httpx.Client, path: str) -> list[dict]:
    resp = http.get(path, params={"_index_": 0, "_length_": 1000, "_auto_delete_": "false"}, headers={"Accept": "application/json"})
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_two_tenants_of_one_service_see_and_touch_only_their_own_entries(stack: Stack, api: ApiServer) -> None:  # noqa: F811
    spec = stack.deploy(stack.command_spec(token=SERVICE_TOKEN))
    svc = spec.name
    one, two = auth.issue(stack.r, svc, tenant="one"), auth.issue(stack.r, svc, tenant="two")
    stack.start_worker(svc)
    stack.wait_workers(svc, 1, "idle")
    with api.client(one) as h1, api.client(two) as h2, api.client(SERVICE_TOKEN) as hs:
        i1, r1 = _put(h1, svc, "echo one-secret")
        i2, r2 = _put(h2, svc, "echo two-secret; sleep 30")
        stack.wait_done(r1, 30)
        wait_for(lambda: stack.record(r2).state == "running", 30, what="tenant two's job to run")

        # read: input mirror and output queue
        ids1 = {e["tags"]["requestId"] for e in _entries(h1, f"/api/predict/{svc}")}
        assert r1 in ids1 and r2 not in ids1
        sink1 = _entries(h1, f"/api/predict/{svc}/sink")
        assert sink1 and all(e["tags"]["requestId"] == r1 for e in sink1), "only its own results and log lines"
        assert "two-secret" not in json.dumps(sink1)
        assert {e["tags"]["requestId"] for e in _entries(hs, f"/api/predict/{svc}")} >= {r1, r2}, "the service token sees all"
        # search
        assert h1.get(f"/api/predict/{svc}", params={"_search_": "true", "_index_": i2}).status_code == 404
        assert h2.get(f"/api/predict/{svc}", params={"_search_": "true", "_index_": i2}).status_code == 200
        # delete (cancels on the input queue): another tenant's index is not touched
        assert h1.delete(f"/api/predict/{svc}", params={"_indexes_": str(i2)}).status_code == 200
        assert not stack.record(r2).cancel_requested and stack.record(r2).state == "running"
        # truncate and forging a result: the service token's
        assert h1.delete(f"/api/predict/{svc}/sink", params={"_trunc_": "true", "_index_": 999}).status_code == 403
        assert h1.post(f"/api/predict/{svc}/sink", params={"requestId": r2}, content=b"forged").status_code == 403
        assert hs.post(f"/api/predict/{svc}/sink", params={"requestId": "x"}, content=b"ok").status_code == 200
        # watch: tenant one's watcher gets its own entries, never tenant two's, and takes none from tenant two's watcher
        for token, mine, other in ((two, r2, r1), (one, r1, r2)):  # two first: one's entries come before its own
            got = watch_request_ids(api, svc, token, want=mine)
            assert mine in got and other not in got, (token, got)
        # dashboard: tenant one sees the worker busy, not tenant two's request id
        view = h1.get(f"/api/services/{svc}/workers").json()
        shown = [x["id"] for w in view["workers"] for x in w["running"]]
        assert shown == [None], view
        assert hs.get(f"/api/services/{svc}/workers").json()["workers"][0]["running"][0]["id"] == r2
        # cancel through the request API: 404 for the other tenant, as if it did not exist
        assert h1.delete(f"/api/requests/{r2}").status_code == 404
        assert stack.record(r2).state == "running"
        assert h2.delete(f"/api/requests/{r2}").status_code == 200


def watch_request_ids(api: ApiServer, svc: str, token: str, want: str) -> set[str]:  # noqa: F811
    """Request ids a watcher of the output queue receives (auto-commit, shared group ``eas``) until it sees ``want``."""
    from app.eas.client import QueueClient

    q = QueueClient(api.host, f"{svc}/sink")
    q.set_token(token)
    q.init()
    seen: set[str] = set()
    watcher = q.watch(0, 5, auto_commit=True)
    try:
        for frame in watcher.run():
            seen.add(frame.tags["requestId"])
            if want in seen:
                break
    finally:
        watcher.close()
    return seen
