"""Findings of issue 14 with the real ``eas-prediction`` 0.36 client: stranded watch messages, long-poll timing.

Each test drives the unchanged client (in its own venv, :func:`tests.apiserver.run_eas`) against a
real ``scalejob api``; the client's own test file runs in ``tests/test_eas_suite.py``.
"""

from __future__ import annotations

from tests.apiserver import ApiServer, api, eas_python, run_eas  # noqa: F401
from tests.conftest import Stack

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
