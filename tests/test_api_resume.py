"""A watching EAS client rides through an API server crash and restart: no gap, no duplicate."""

from __future__ import annotations

import json
import threading
import time

from app.queue import streams as queues
from tests.apiserver import ApiServer, api, eas_python, spawn_eas  # noqa: F401
from tests.conftest import Stack
from tests.helpers import wait_for

TOKEN = "svc-token-resume-0123"
N = 600


def test_watch_resumes_after_the_api_server_restarts_mid_stream(stack: Stack, api: ApiServer, eas_python: str) -> None:
    spec = stack.deploy(stack.command_spec(token=TOKEN))
    log = stack.tmp / "watcher.log"
    watcher = spawn_eas(eas_python, """
        q = client(ARGS["svc"] + "/sink", uid="resumer")
        def commit(i):
            while True:   # the server may be down right now: a commit must still land
                try:
                    return q.commit(i)
                except Exception:
                    time.sleep(0.2)
        got = []
        w = q.watch(0, 20, auto_commit=False)
        for x in w.run():
            got.append(int(x.data.decode()))
            commit(x.index)
            print("GOT", len(got), flush=True)
            if len(got) == ARGS["n"]:
                break
        out({"got": got})
    """, log, host=api.host, token=TOKEN, svc=spec.name, n=N)
    out = queues.output_queue(stack.r, spec.name)

    def produce() -> None:
        for i in range(N):
            out.append(str(i).encode(), {"requestId": f"r{i}", "type": "result"})
            time.sleep(0.004)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    wait_for(lambda: "GOT 150\n" in log.read_text(), 60, what="150 messages before the crash")
    api.restart()  # SIGKILL, then a new server on the same port
    producer.join(timeout=60)
    assert watcher.wait(timeout=90) == 0, log.read_text()[-2000:]
    got = json.loads([line for line in log.read_text().splitlines() if line.startswith("RESULT ")][-1][7:])["got"]
    assert len(got) == N and sorted(got) == list(range(N)), "gap or duplicate across the restart"
    assert len(api.logs) == 2 and stack.r.xlen(out.stream) == 0
