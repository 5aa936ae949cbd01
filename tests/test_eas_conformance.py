"""Findings of issue 14 with the real ``eas-prediction`` 0.36 client: stranded watch messages, long-poll timing.

Each test drives the unchanged client (in its own venv, :func:`tests.apiserver.run_eas`) against a
real ``scalejob api``; the client's own test file runs in ``tests/test_eas_suite.py``.
"""

from __future__ import annotations

from tests.apiserver import ApiServer, api, eas_python, run_eas  # noqa: F401
from tests.conftest import Stack
from tests.helpers import free_port

TOKEN = "svc-token-conformance-0123"


def test_a_watcher_that_disconnects_strands_nothing(stack: Stack, api: ApiServer, eas_python: str) -> None:
    """Finding 1: A (auto-commit) takes one message and leaves; one put at once; a new client B must get it."""
    spec = stack.deploy(stack.command_spec(token=TOKEN))
    got = run_eas(eas_python, """
        import websocket
        from eas_prediction.queue_client import DataFrameCodec
        def take_one_and_leave(q):  # Watcher.run() + close(), with a deadline on the receive
            w = q.watch(0, 5, auto_commit=True)
            sock = websocket.create_connection(w.url, header=w.headers, timeout=5)
            try:
                return DataFrameCodec.decode(sock.recv()).data.decode()
            except websocket.WebSocketTimeoutException:
                return None
            finally:
                sock.abort()
        trials = []
        for t in range(8):
            q = client(ARGS["svc"] + "/sink")
            q.put(f"a-{t}")
            first = take_one_and_leave(q)
            q.put(f"b-{t}")
            second = take_one_and_leave(client(ARGS["svc"] + "/sink"))  # a new uid, as init() gives
            trials.append([first, second])
        deadline = time.time() + 10
        while time.time() < deadline and q.attributes()["stream.length"] != "0":
            time.sleep(0.1)
        out({"trials": trials, "left": q.attributes()["stream.length"]})
    """, host=api.host, token=TOKEN, svc=spec.name, timeout=150)
    stranded = [t for t, pair in enumerate(got["trials"]) if None in pair]
    assert stranded == [], f"trials whose message never reached the next watcher: {stranded}; {got}"
    assert got["trials"] == [[f"a-{t}", f"b-{t}"] for t in range(8)]
    assert got["left"] == "0", "every message was committed by the watcher that received it"


def test_uncommitted_messages_of_a_gone_watcher_are_redelivered_and_a_live_one_keeps_its_own(stack: Stack, eas_python: str) -> None:
    """Finding 1, manual commit: pending past the reclaim bound on a gone consumer -> next watcher; a live one keeps it."""
    stack.env["SCALEJOB_WATCH_RECLAIM_S"] = "2"
    api = ApiServer(stack)
    spec = stack.deploy(stack.command_spec(token=TOKEN))
    got = run_eas(eas_python, """
        import websocket
        from eas_prediction.queue_client import DataFrameCodec
        def connect(q, window):
            w = q.watch(0, window, auto_commit=False)
            return websocket.create_connection(w.url, header=w.headers, timeout=8)
        def recv(sock, timeout):
            sock.settimeout(timeout)
            try:
                df = DataFrameCodec.decode(sock.recv())
                return [df.index, df.data.decode()]
            except websocket.WebSocketTimeoutException:
                return None
        q = client(ARGS["svc"] + "/sink")
        q.put("held")
        holder = connect(q, 1)
        held = recv(holder, 8)
        q.put("next")
        b = client(ARGS["svc"] + "/sink")
        bsock = connect(b, 5)
        first = recv(bsock, 8)
        while_alive = recv(bsock, 4)  # twice the reclaim bound: the live holder keeps its message
        holder.abort()  # gone without committing
        redelivered = recv(bsock, 8)
        b.commit([m[0] for m in (first, redelivered) if m])
        out({"held": held, "first": first, "while_alive": while_alive, "redelivered": redelivered,
             "left": b.attributes()["stream.length"]})
    """, host=api.host, token=TOKEN, svc=spec.name)
    assert got["held"] == [1, "held"] and got["first"] == [2, "next"], got
    assert got["while_alive"] is None, f"a connected watcher lost its uncommitted message: {got}"
    assert got["redelivered"] == [1, "held"], f"the gone watcher's message was not redelivered: {got}"
    assert got["left"] == "0"


def test_empty_get_with_client_defaults_answers_before_the_client_times_out(stack: Stack, api: ApiServer, eas_python: str) -> None:
    """Finding 2: default ``_timeout_=5s`` equals the client's 5 s read timeout: answer ``[]`` a margin before."""
    spec = stack.deploy(stack.command_spec(token=TOKEN))
    got = run_eas(eas_python, """
        from eas_prediction import QueueClient
        q = QueueClient(ARGS["host"], ARGS["svc"] + "/sink")
        q.set_token(ARGS["token"])
        q.init()  # client defaults: 5 s timeout, 5 retries
        q.put("x")
        took = {}
        for name, kw in (("index", {"index": 999999}), ("unknown_id", {"request_id": "nope"})):
            t0 = time.monotonic()
            try:
                res = [d.data.decode() for d in q.get(**kw)]
            except Exception as exc:
                res = f"{type(exc).__name__}: {exc}"
            took[name] = [time.monotonic() - t0, res]
        out(took)
    """, host=api.host, token=TOKEN, svc=spec.name, timeout=120)
    assert got["index"][1] == [] and got["index"][0] < 6, got
    assert got["unknown_id"][1] == [] and got["unknown_id"][0] < 1, got


def test_the_client_methods_the_other_tests_leave_out(stack: Stack, api: ApiServer, eas_python: str) -> None:
    """delete, search (found / absent), get with tags and length, watch with index_only and a tag filter."""
    spec = deploy_query(stack)
    got = run_eas(eas_python, """
        q = client(ARGS["svc"] + "/sink")
        idx = [q.put(f"m{i}", tags={"color": "red" if i % 2 else "blue"})[0] for i in range(6)]
        deleted = q.delete([int(idx[0])])
        found, absent = q.search(int(idx[1])), q.search(999999)
        reds = [d.data.decode() for d in q.get(index=0, length=10, auto_delete=False, tags={"color": "red"})]
        w = q.watch(0, 10, index_only=True, auto_commit=True, tags={"color": "blue"})
        seen = []
        for df in w.run():
            seen.append([df.index, df.data.decode(), dict(df.tags)])
            if len(seen) == 2:
                break
        w.close()
        inq = client(ARGS["svc"])
        put_index, rid = inq.put("[{}]")  # no taskType: the service takes queries only
        out({"idx": idx, "deleted": deleted, "found": found, "absent": absent, "reds": reds, "seen": seen,
             "put_index": put_index, "mirror": [d.tags["taskType"] for d in inq.get(request_id=rid, auto_delete=False)]})
    """, host=api.host, token=TOKEN, svc=spec.name)
    assert got["deleted"] == "OK" and got["found"]["IsPending"] is False and got["absent"] == {}
    assert got["reds"] == ["m1", "m3", "m5"]
    assert [s[0] for s in got["seen"]] == [int(got["idx"][2]), int(got["idx"][4])], "m0 was deleted; only blue ones"
    assert all(s[1] == "" and s[2] == {} for s in got["seen"]), "index_only frames carry no data or tags"
    assert got["put_index"] == "1" and got["mirror"] == ["query"]


def deploy_query(stack: Stack):  # noqa: ANN201
    """A query-only service (no worker needed: nothing here waits for a result)."""
    return stack.deploy({"containers": [{"command": "true", "port": free_port()}],
                         "metadata": {"name": stack.service_name("q"), "token": TOKEN, "task_types": ["query"]}})
