"""Guarantees across machines, on real hosts (network namespaces) with real partitions.

Lease TTL 2 s, heartbeat 0.5 s (``FAST``). Each scenario prints its measured figures (run with
``-s`` to see them; docs/long-running.md quotes them).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psutil
import pytest

from app.eas.transport import HEADER_REQUEST_ID
from tests.apiserver import ApiServer
from tests.autoscaling import Autoscalers, autoscaled_spec
from tests.conftest import Stack
from tests.helpers import ROOT, free_port, wait_for
from tests.hosts.conftest import FAST, Hosts

SLOW_APP = ROOT / "deploy" / "examples" / "slow_app.py"
TTL = float(FAST["SCALEJOB_HEARTBEAT_TTL"])
# A 30 s job that marks where it runs (the network namespace) and prints a line every 0.5 s.
JOB = ('NS=$(readlink /proc/self/ns/net | tr -dc 0-9); echo "$NS $$" >> starts.txt; '
       'for i in $(seq 60); do echo "tick $i $NS"; sleep 0.5; done')


def two_workers(hosts: Hosts, stack: Stack, service: str) -> dict[int, str]:
    names = {i: f"{service}-h{i}@host{i}" for i in (1, 2)}
    for i, name in names.items():
        hosts.worker(i, stack, service, name)
    stack.wait_workers(service, 2, "idle", timeout=60)
    return names


def starts(stack: Stack, service: str) -> list[tuple[str, int]]:
    path = stack.tmp / "data" / "storage" / service / "starts.txt"
    text = path.read_text() if path.exists() else ""
    return [(ns, int(pid)) for ns, pid in re.findall(r"^(\d+) (\d+)$", text, re.M)]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def terminal(stack: Stack, service: str, rid: str) -> list[str]:
    return [m.tags["type"] for m in stack.sink(service) if m.tags.get("requestId") == rid and m.tags.get("type") in ("result", "error")]


@pytest.mark.parametrize("broker", ["redis", "amqp"])
def test_a_cut_off_worker_stops_its_copy_and_the_job_runs_once_more_elsewhere(broker: str, hosts: Hosts, host_stack: Stack) -> None:
    stack = host_stack
    spec = stack.deploy(stack.command_spec())
    names = two_workers(hosts, stack, spec.name)
    rid = stack.put(spec, "command", JOB)
    rec = wait_for(lambda: (r := stack.record(rid)) and r.state == "running" and r, 30, what="the job to start")
    cut = next(i for i, n in names.items() if n == rec.worker)
    other = 3 - cut
    [(first_ns, first_pid)] = wait_for(lambda: starts(stack, spec.name), 10, what="the first copy's start mark")

    t_cut, wall_cut = time.monotonic(), time.time()
    hosts.cut(cut)
    wait_for(lambda: gone(first_pid), 3 * TTL, interval=0.02, what="the cut-off copy's command to stop")
    stopped_after = time.monotonic() - t_cut
    wait_for(lambda: (r := stack.record(rid)) and r.attempts == 2 and r.state == "running" and r.worker == names[other], 30,
             interval=0.05, what="the job to run again on the other host")
    rerun_after = time.monotonic() - t_cut
    time.sleep(max(t_cut + 3 * TTL - time.monotonic(), 0))  # the partition lasts 3x the lease TTL
    hosts.heal(cut)
    t_heal = time.monotonic()
    wait_for(lambda: (w := {w.name: w for w in stack.workers(spec.name)}.get(names[cut])) and w.heartbeat_at > time.time() - TTL,
             10, interval=0.1, what="the healed worker to be back in the registry")
    reconnect_after = time.monotonic() - t_heal

    rec = stack.wait_done(rid, timeout=90)
    assert rec.state == "succeeded" and rec.attempts == 2 and rec.worker == names[other], rec
    assert terminal(stack, spec.name, rid) == ["result"], "exactly one terminal message"
    assert stopped_after <= TTL, f"the cut-off copy ran {stopped_after:.2f}s after the cut (lease TTL {TTL}s)"
    [(ns1, _), (ns2, _)] = starts(stack, spec.name)
    assert ns1 == first_ns and ns2 != first_ns, "the second run was on the other host"
    late = [m for m in stack.sink(spec.name) if m.tags.get("requestId") == rid and m.tags.get("type") == "log"
            and m.data.decode().endswith(first_ns) and float(m.tags["ts"]) > wall_cut + 0.5]
    assert late == [], f"the cut-off copy wrote after the cut: {[m.data for m in late][:3]}"
    print(f"\n[{broker}] cut-off copy stopped {stopped_after:.2f}s after the cut; job running again {rerun_after:.2f}s after; "
          f"healed worker back {reconnect_after:.2f}s after healing")


def test_a_paused_worker_that_wakes_after_its_job_moved_has_its_late_outcome_refused(hosts: Hosts, host_stack: Stack) -> None:
    """A worker frozen (SIGSTOP: a VM pause, a long GC) past its lease while its user app answers a query.

    The job runs again on the other host; when the frozen worker wakes, the answer it then reads
    is a stale outcome (epoch 1 of a request in epoch 2): refused, counted, never in the output.
    """
    from app.queue import records

    stack = host_stack
    port = free_port()
    spec = stack.deploy({"containers": [{"command": f"{sys.executable} {SLOW_APP} --port {port}", "port": port,
                                         "env": [{"name": "SLOW_APP_DELAY", "value": "4"}]}],
                         "metadata": {"name": stack.service_name("q"), "task_types": ["query"]}})
    names = two_workers(hosts, stack, spec.name)
    rid = stack.put(spec, "query", "hello")
    rec = wait_for(lambda: (r := stack.record(rid)) and r.state == "running" and r, 30, what="the query to start")
    frozen = next(p for p in hosts.procs if rec.worker in " ".join(p.popen.args))
    before = records.stale_writes(stack.r)
    frozen.signal(signal.SIGSTOP)
    try:
        wait_for(lambda: (r := stack.record(rid)) and r.attempts == 2 and r.state == "running", 30, interval=0.05, what="the query to move")
    finally:
        frozen.signal(signal.SIGCONT)  # it reads its app's answer and tries to record it
    wait_for(lambda: records.stale_writes(stack.r) > before, 15, interval=0.05, what="the woken worker's stale outcome to be refused")
    api = ApiServer(stack)
    with api.client() as http:
        scrape = http.get("/metrics").text
    assert f"scalejob_stale_writes_total {float(records.stale_writes(stack.r))}" in scrape, "the refusals are a metric too"
    rec = stack.wait_done(rid, timeout=60)
    other = next(n for n in names.values() if n != frozen_name(frozen, names))
    assert rec.state == "succeeded" and rec.attempts == 2 and rec.worker == other, rec
    assert terminal(stack, spec.name, rid) == ["result"], "exactly one terminal message: the second attempt's"
    print(f"\nstale writes refused: {records.stale_writes(stack.r) - before}")


def frozen_name(proc: object, names: dict[int, str]) -> str:
    return next(n for n in names.values() if n in " ".join(proc.popen.args))  # type: ignore[attr-defined]


def test_short_tasks_never_wait_behind_a_long_one_while_the_other_host_is_idle(hosts: Hosts, host_stack: Stack) -> None:
    stack = host_stack
    spec = stack.deploy(stack.command_spec())
    names = two_workers(hosts, stack, spec.name)
    long_id = stack.put(spec, "command", "sleep 8")
    long_rec = wait_for(lambda: (r := stack.record(long_id)) and r.state == "running" and r, 30, what="the long task")
    short_id = stack.put(spec, "command", "true")
    short = stack.wait_done(short_id, timeout=5)
    assert short.state == "succeeded" and short.worker != long_rec.worker and short.worker in names.values()
    assert short.started_at - short.queued_at < 2.0, "the short task started at once on the idle host"


def test_puts_during_a_partition_of_every_worker_host_all_run_once_it_heals(hosts: Hosts, host_stack: Stack) -> None:
    stack = host_stack
    spec = stack.deploy(stack.command_spec(token="tok-" + "x" * 16))
    two_workers(hosts, stack, spec.name)
    api = ApiServer(stack)
    hosts.cut(1)
    hosts.cut(2)
    with api.client(token="tok-" + "x" * 16) as http:
        ids = []
        for i in range(10):
            resp = http.post(f"/api/predict/{spec.name}?taskType=command", content=f"echo {i}")
            assert resp.status_code == 200, resp.text
            ids.append(resp.headers[HEADER_REQUEST_ID])
    assert all(stack.record(x).state == "queued" for x in ids), "accepted, and nothing could run them yet"
    hosts.heal(1)
    hosts.heal(2)
    done = [stack.wait_done(x, timeout=60) for x in ids]
    assert [r.state for r in done] == ["succeeded"] * 10
    results = Counter(m.tags["requestId"] for m in stack.sink(spec.name) if m.tags.get("type") == "result")
    assert all(results[x] == 1 for x in ids), results


@contextmanager
def two_tasks_on_two_hosts(hosts: Hosts, stack: Stack, token: str) -> Iterator[tuple[Any, dict[int, str], ApiServer, Autoscalers, list[str]]]:
    """A service whose two remote workers each run a 4 s task, with the API and an autoscaler (min = max = 2) beside them."""
    spec_json = autoscaled_spec(stack, min=2, max=2)  # the autoscaler keeps the two remote workers
    spec_json["metadata"]["token"] = token
    spec = stack.deploy(spec_json)
    names = two_workers(hosts, stack, spec.name)
    api = ApiServer(stack)
    autoscalers = Autoscalers(stack)
    try:
        autoscalers.wait_leader(autoscalers.start())
        ids = [stack.put(spec, "command", "sleep 4; echo done") for _ in range(2)]
        wait_for(lambda: all((r := stack.record(x)) and r.state == "running" for x in ids), 30, what="both tasks running")
        yield spec, names, api, autoscalers, ids
    finally:
        autoscalers.close()


def deciding_again(autoscalers: Autoscalers, service: str, since: float, within: float) -> None:
    wait_for(lambda: any(d.get("last_at", d["at"]) > since for d in autoscalers.decisions(service)), within,
             interval=0.1, what="the autoscaler to decide again")


def test_a_redis_restart_loses_nothing_and_every_worker_reconnects_within_10s(hosts: Hosts, host_stack: Stack) -> None:
    stack = host_stack
    with two_tasks_on_two_hosts(hosts, stack, "tok-" + "d" * 16) as (spec, names, api, autoscalers, ids):
        hosts.stop_redis()  # SIGKILL; AOF with appendfsync always keeps every write it acknowledged
        hosts.start_redis()
        t_up, wall_up = time.monotonic(), time.time()
        wait_for(lambda: {w.name for w in stack.workers(spec.name) if w.heartbeat_at > wall_up} >= set(names.values()), 10,
                 interval=0.1, what="both workers to heartbeat again")
        deciding_again(autoscalers, spec.name, wall_up, 10 - (time.monotonic() - t_up))
        with api.client(token=None) as http:
            wait_for(lambda: http.get("/healthz").json()["redis"], 10 - (time.monotonic() - t_up), interval=0.1, what="the API's Redis")
        reconnected = time.monotonic() - t_up
    done = [stack.wait_done(x, timeout=60) for x in ids]
    assert [r.state for r in done] == ["succeeded", "succeeded"] and all(r.attempts == 1 for r in done)
    assert all(terminal(stack, spec.name, x) == ["result"] for x in ids)
    later = stack.put(spec, "command", "true")  # and the broker side took them back too
    assert stack.wait_done(later, timeout=20).state == "succeeded"
    print(f"\nworkers, autoscaler and API all back {reconnected:.2f}s after Redis came back")


@pytest.mark.parametrize("broker", ["amqp"])
def test_a_rabbitmq_restart_mid_task_loses_and_duplicates_nothing_and_everything_reconnects_within_10s(
        broker: str, hosts: Hosts, host_stack: Stack) -> None:
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("restarting RabbitMQ needs rabbitmqctl")
    stack = host_stack
    with two_tasks_on_two_hosts(hosts, stack, "tok-" + "r" * 16) as (spec, _, api, autoscalers, ids):
        for step in ("stop_app", "start_app"):  # a real restart of the broker app: connections and exclusive queues go
            subprocess.run(["rabbitmqctl", step], capture_output=True, check=True, timeout=60)
        t_up, wall_up = time.monotonic(), time.time()
        done = [stack.wait_done(x, timeout=60) for x in ids]
        assert [r.state for r in done] == ["succeeded", "succeeded"] and all(r.attempts == 1 for r in done)
        assert all(terminal(stack, spec.name, x) == ["result"] for x in ids)
        with api.client(token="tok-" + "r" * 16) as http:  # the API publishes again ...
            puts = wait_for(lambda: [http.post(f"/api/predict/{spec.name}?taskType=command", content=b"true") for _ in range(4)], 10,
                            what="the API to publish again")
        assert [p.status_code for p in puts] == [200] * 4, [p.text for p in puts]
        later = [p.headers[HEADER_REQUEST_ID] for p in puts]  # ... and the workers consume again
        assert all(stack.wait_done(x, timeout=10 - (time.monotonic() - t_up)).state == "succeeded" for x in later)
        deciding_again(autoscalers, spec.name, wall_up, 10 - (time.monotonic() - t_up))  # it reads the queue depth from RabbitMQ
        print(f"\nafter a RabbitMQ restart: API, workers and autoscaler all back; new tasks done {time.monotonic() - t_up:.2f}s after it was back")
