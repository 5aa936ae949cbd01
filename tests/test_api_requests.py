"""Request records over HTTP: live logs (SSE and watch), progress both ways, cancel."""

from __future__ import annotations

import json
import sys
import threading
import time

import httpx
import psutil

from app.eas.client import _sse_events
from tests.apiserver import ApiServer, api  # noqa: F401
from tests.conftest import Stack
from tests.helpers import ROOT, free_port, wait_for
from workers.query import result_body

TOKEN = "svc-token-req-012345"
PROGRESS_APP = ROOT / "tests" / "apps" / "progress_app.py"


class SSE(threading.Thread):
    """Follows ``/api/requests/{id}/events`` in the background, stamping each event's arrival."""

    def __init__(self, api: ApiServer, rid: str) -> None:
        super().__init__(daemon=True)
        self.api, self.rid, self.events = api, rid, []  # type: ignore[var-annotated]
        self.start()

    def run(self) -> None:
        with httpx.Client(timeout=60) as http, \
                http.stream("GET", f"{self.api.url}/api/requests/{self.rid}/events", headers={"Authorization": TOKEN}) as resp:
                assert resp.status_code == 200
                for kind, data in _sse_events(resp.iter_lines()):
                    self.events.append((time.time(), kind, data))

    def of(self, kind: str) -> list[str]:
        return [d for _, k, d in self.events if k == kind]


def put(api: ApiServer, service: str, payload: str, task_type: str = "command") -> str:
    with api.client(TOKEN) as http:
        resp = http.post(f"/api/predict/{service}", params={"taskType": task_type}, content=payload.encode())
        assert resp.status_code == 200, resp.text
        return resp.headers["X-Eas-Queueservice-Request-Id"]


def test_live_log_lines_arrive_over_sse_and_watch_before_the_command_exits(stack: Stack, api: ApiServer) -> None:
    from app.eas.client import QueueClient

    spec = stack.deploy(stack.command_spec(token=TOKEN))
    stack.start_worker(spec.name)
    stack.wait_workers(spec.name, 1, "idle")
    sink = QueueClient(api.host, f"{spec.name}/sink")
    sink.set_token(TOKEN)
    sink.init()
    watched: list[tuple[float, str, str]] = []
    watcher = sink.watch(0, 10, auto_commit=True)

    def follow() -> None:
        for df in watcher.run():
            watched.append((time.time(), df.tags["type"], df.data.decode()))
            if df.tags["type"] in ("result", "error"):
                return

    t = threading.Thread(target=follow, daemon=True)
    t.start()
    rid = put(api, spec.name, "echo first-line; echo 'progress: 40%'; sleep 2; echo last-line")
    sse = SSE(api, rid)
    first = wait_for(lambda: [at for at, _, d in sse.events if d.endswith("first-line")], 20, what="first log line over SSE")[0]
    assert stack.record(rid).state == "running", "the first line must arrive while the command still runs"
    wait_for(lambda: any(d.endswith("first-line") for _, _, d in watched), 10, what="first log line over watch")
    assert stack.record(rid).state == "running"
    sse.join(timeout=30)
    t.join(timeout=30)
    rec = stack.record(rid)
    assert rec.state == "succeeded" and first < rec.finished_at - 1.0
    assert [d.split(" ", 1)[1] for d in sse.of("log")] == ["first-line", "progress: 40%", "last-line"]
    assert sse.of("progress") == ["40"] and json.loads(sse.of("result")[0])["exit_code"] == 0
    assert [k for _, k, _ in watched if k != "progress"] == ["log", "log", "log", "result"]
    watcher.close()


def test_command_progress_from_pattern_tqdm_and_progress_file_goes_0_to_100(stack: Stack, api: ApiServer) -> None:
    spec = stack.deploy(stack.command_spec(token=TOKEN))
    rid = put(api, spec.name, "echo 'progress: 10%'; sleep 0.4; echo ' 35%|###    | 35/100'; sleep 0.4; "
                              "echo 70 > $SCALEJOB_PROGRESS_FILE; sleep 0.8; echo done")
    with api.client(TOKEN) as http:
        queued = http.get(f"/api/requests/{rid}").json()
    assert queued["state"] == "queued" and queued["progress"] == 0 and queued["position"] == 0
    sse = SSE(api, rid)
    stack.start_worker(spec.name)
    sse.join(timeout=30)
    assert [float(p) for p in sse.of("progress")] == [10, 35, 70]
    with api.client(TOKEN) as http:
        done = http.get(f"/api/requests/{rid}").json()
    assert done["state"] == "succeeded" and done["progress"] == 100 and done["worker"] and done["started_at"] <= done["finished_at"]


def test_query_app_reports_progress_through_the_worker_endpoint(stack: Stack, api: ApiServer) -> None:
    port = free_port()
    spec = stack.deploy({"containers": [{"command": f"{sys.executable} {PROGRESS_APP} --port {port}", "port": port}],
                         "metadata": {"name": stack.service_name("qp"), "token": TOKEN}})
    stack.start_worker(spec.name)
    rid = put(api, spec.name, "{}", task_type="query")
    sse = SSE(api, rid)
    sse.join(timeout=30)
    rec = stack.wait_done(rid)
    body = json.loads(result_body(rec.result))
    assert body["codes"] == [204, 204] and body["progress_url"].startswith("http://127.0.0.1:")
    assert [float(p) for p in sse.of("progress")] == [30, 60] and rec.progress == 100
    with httpx.Client() as http:  # the endpoint forgets a request once it finished
        assert http.post(body["progress_url"], content=b"90").status_code == 404


def test_cancel_a_waiting_request_it_never_runs(stack: Stack, api: ApiServer) -> None:
    spec = stack.deploy(stack.command_spec(token=TOKEN))
    rid = put(api, spec.name, "touch ran.txt")
    with api.client(TOKEN) as http:
        resp = http.delete(f"/api/requests/{rid}")
        assert resp.status_code == 200 and resp.json()["state"] == "cancelled"
        assert http.get(f"/api/predict/{spec.name}", params={"_attrs_": "true"}).json()["stream.length"] == "0"
    stack.start_worker(spec.name)
    later = put(api, spec.name, "echo later")
    assert stack.wait_done(later).state == "succeeded"
    assert stack.record(rid).state == "cancelled"
    assert not (stack.tmp / "data" / "storage" / spec.name / "ran.txt").exists()


def test_cancel_a_running_command_ends_its_processes(stack: Stack, api: ApiServer) -> None:
    spec = stack.deploy(stack.command_spec(token=TOKEN))
    stack.start_worker(spec.name)
    rid = put(api, spec.name, "echo $$ > shell.pid; sleep 60")
    pidfile = stack.tmp / "data" / "storage" / spec.name / "shell.pid"
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 30, what="command start")
    shell = psutil.Process(int(pidfile.read_text()))
    procs = [shell, *wait_for(lambda: shell.children(recursive=True), 10, what="sleep child")]
    with api.client(TOKEN) as http:
        assert http.delete(f"/api/requests/{rid}").json()["cancel_requested"] is True
    rec = stack.wait_done(rid, timeout=30)
    assert rec.state == "cancelled" and rec.error == "cancelled by user"
    _, alive = psutil.wait_procs(procs, timeout=10)
    assert not alive, f"still running after cancel: {alive}"


def test_deleting_from_the_input_queue_cancels_those_requests(stack: Stack, api: ApiServer) -> None:
    spec = stack.deploy(stack.command_spec(token=TOKEN))
    rids = [put(api, spec.name, f"echo {i} > ran-{i}.txt") for i in range(3)]
    with api.client(TOKEN) as http:
        index = stack.record(rids[1]).index
        assert http.delete(f"/api/predict/{spec.name}", params={"_indexes_": str(index)}).text == "OK"
    stack.start_worker(spec.name)
    assert [stack.wait_done(rid).state for rid in rids] == ["succeeded", "cancelled", "succeeded"]
    assert not (stack.tmp / "data" / "storage" / spec.name / "ran-1.txt").exists()


def test_cancel_a_running_query_abandons_it_at_once(stack: Stack, api: ApiServer) -> None:
    port = free_port()
    spec = stack.deploy({"containers": [{"command": f"{sys.executable} {ROOT / 'deploy' / 'examples' / 'slow_app.py'} --port {port}",
                                         "port": port, "headers": {"X-Delay": "3"}}],
                         "metadata": {"name": stack.service_name("qc"), "token": TOKEN}})
    stack.start_worker(spec.name)
    rid = put(api, spec.name, "slow", task_type="query")
    wait_for(lambda: stack.record(rid).state == "running", 30, what="query start")
    with api.client(TOKEN) as http:
        assert http.delete(f"/api/requests/{rid}").json()["state"] == "cancelled"
    # the worker gets the app's late answer and lets go of the task: it must not overwrite the cancel
    wait_for(lambda: (ws := stack.workers(spec.name)) and not any(w.running for w in ws), 30, what="worker done with the query")
    rec = stack.record(rid)
    assert rec.state == "cancelled" and rec.result is None
    assert [m.tags["type"] for m in stack.sink(spec.name) if m.tags["requestId"] == rid] == ["error"]


def test_a_chatty_command_is_capped_in_the_output_queue(stack: Stack, api: ApiServer) -> None:
    spec = stack.deploy({**stack.command_spec(token=TOKEN), "scalable_job": {"log_lines_per_second": 20}})
    stack.start_worker(spec.name)
    rec = stack.wait_done(put(api, spec.name, "i=0; while [ $i -lt 2000 ]; do echo line $i; i=$((i+1)); done"))
    logs = [m for m in stack.sink(spec.name) if m.tags["type"] == "log"]
    assert rec.state == "succeeded" and rec.result["log_lines_dropped"] > 1000
    assert 20 <= len(logs) < 200 and len(logs) + rec.result["log_lines_dropped"] == 2000


def test_position_counts_the_requests_waiting_ahead(stack: Stack, api: ApiServer) -> None:
    spec = stack.deploy(stack.command_spec(token=TOKEN))
    rids = [put(api, spec.name, "true") for _ in range(4)]
    with api.client(TOKEN) as http:
        assert [http.get(f"/api/requests/{rid}").json()["position"] for rid in rids] == [0, 1, 2, 3]
        http.delete(f"/api/requests/{rids[1]}")
        assert http.get(f"/api/requests/{rids[3]}").json()["position"] == 2
