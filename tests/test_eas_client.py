"""The real ``eas-prediction`` QueueClient (0.36, unchanged) against a real ``scalejob api``."""

from __future__ import annotations

import json

from tests.apiserver import ApiServer, api, eas_python, run_eas, spawn_eas  # noqa: F401
from tests.conftest import Stack
from tests.helpers import wait_for

TOKEN = "svc-token-0123456789"


def deploy(stack: Stack, **metadata: object):  # noqa: ANN201
    return stack.deploy(stack.command_spec(token=TOKEN, **metadata))


def test_put_then_get_by_index_and_by_request_id_on_the_sink(stack: Stack, api: ApiServer, eas_python: str) -> None:
    spec = deploy(stack)
    got = run_eas(eas_python, """
        q = client(ARGS["svc"] + "/sink")
        i1, r1 = q.put("abc")
        i2, r2 = q.put(b"\\x00\\xffbin", tags={"color": "red"})
        by_index = q.get(index=i1, auto_delete=False)
        by_id = q.get(request_id=r2)
        again = q.get(request_id=r2, timeout="0s")
        out({"i1": i1, "i2": i2, "r2": r2,
             "by_index": [(d.index, d.data.decode(), dict(d.tags)) for d in by_index],
             "by_id": [(d.index, d.data.hex(), dict(d.tags)) for d in by_id],
             "again": len(again)})
    """, host=api.host, token=TOKEN, svc=spec.name)
    assert got["i1"] == "1" and got["i2"] == "2"
    assert got["by_index"][0][:2] == [1, "abc"]
    [(index, data, tags)] = got["by_id"]
    assert index == 2 and bytes.fromhex(data) == b"\x00\xffbin" and tags["color"] == "red" and tags["requestId"] == got["r2"]
    assert got["again"] == 0, "get auto-deletes by default, as EAS does"


def test_truncate_and_attributes(stack: Stack, api: ApiServer, eas_python: str) -> None:
    spec = deploy(stack)
    got = run_eas(eas_python, """
        q = client(ARGS["svc"] + "/sink")
        last = None
        for x in range(10):
            last, _ = q.put("abc")
        before = q.attributes()
        q.truncate(int(last) + 1)
        after = q.attributes()
        out({"last": last, "before": before, "after": after})
    """, host=api.host, token=TOKEN, svc=spec.name)
    assert int(got["before"]["stream.length"]) == 10 and got["before"]["stream.lastEntry"] == got["last"]
    assert int(got["after"]["stream.length"]) == 0


def test_watch_with_auto_commit_then_manual_commit(stack: Stack, api: ApiServer, eas_python: str) -> None:
    spec = deploy(stack)
    got = run_eas(eas_python, """
        q = client(ARGS["svc"] + "/sink")
        for x in range(10):
            q.put(str(x))
        seen = []
        w = q.watch(0, 5, auto_commit=True)
        for x in w.run():
            seen.append(int(x.data.decode()))
            if len(seen) == 10:
                break
        w.close()
        time.sleep(0.5)
        auto_len = q.attributes()["stream.length"]
        for x in range(10, 20):
            q.put(str(x))
        manual = []
        w = q.watch(0, 5, auto_commit=False)
        for x in w.run():
            manual.append(int(x.data.decode()))
            q.commit(x.index)
            if len(manual) == 10:
                break
        w.close()
        out({"seen": seen, "auto_len": auto_len, "manual": manual, "manual_len": q.attributes()["stream.length"]})
    """, host=api.host, token=TOKEN, svc=spec.name)
    assert got["seen"] == list(range(10)) and int(got["auto_len"]) == 0
    assert got["manual"] == list(range(10, 20)) and int(got["manual_len"]) == 0


def test_watch_never_has_more_than_window_uncommitted(stack: Stack, api: ApiServer, eas_python: str) -> None:
    spec = deploy(stack)
    got = run_eas(eas_python, """
        q = client(ARGS["svc"] + "/sink")
        for x in range(8):
            q.put(str(x))
        w = q.watch(0, 3, auto_commit=False)
        got = []
        for x in w.run():
            got.append(x.index)
            if len(got) == 3:
                break
        # nothing committed: the server must hold the 4th back
        w.queue.watch_sock.settimeout(1.5)
        try:
            w.queue.watch_sock.recv(); extra = True
        except Exception:
            extra = False
        search = q.search(got[0])
        out({"got": got, "extra": extra, "search": search})
    """, host=api.host, token=TOKEN, svc=spec.name)
    assert got["got"] == [1, 2, 3] and got["extra"] is False
    assert got["search"]["IsPending"] is True


def test_2000_puts_while_watching_none_lost(stack: Stack, api: ApiServer, eas_python: str) -> None:
    spec = deploy(stack)
    log = stack.tmp / "watcher.log"
    watcher = spawn_eas(eas_python, """
        q = client(ARGS["svc"] + "/sink", uid="w1")
        w = q.watch(0, 100, auto_commit=True)
        print("WATCHING", flush=True)
        got = []
        for x in w.run():
            got.append(int(x.data.decode()))
            if len(got) == 2000:
                break
        out({"got": got})
    """, log, host=api.host, token=TOKEN, svc=spec.name)
    wait_for(lambda: "WATCHING" in log.read_text(), 30, what="watcher connected")
    run_eas(eas_python, """
        from concurrent.futures import ThreadPoolExecutor
        q = client(ARGS["svc"] + "/sink")
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: q.put(str(i)), range(2000)))
        out({})
    """, host=api.host, token=TOKEN, svc=spec.name)
    assert watcher.wait(timeout=120) == 0, log.read_text()[-2000:]
    got = json.loads([line for line in log.read_text().splitlines() if line.startswith("RESULT ")][-1][7:])["got"]
    assert sorted(got) == list(range(2000))
