"""Long-running jobs: never two running copies, fast recovery, no orphans — on Redis and RabbitMQ.

The broker timers are made short here (kombu visibility timeout 3 s; RabbitMQ consumer_timeout
5 s) so that what breaks plain Celery after an hour happens within one test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis

from tests.conftest import AMQP_URL, Stack, amqp_reachable
from tests.helpers import wait_for

BROKERS = ["redis", "amqp"]


def point_celery_at(url: str) -> None:
    """Switch this process's sends to ``url`` mid-session (the producer pool is per connection)."""
    from kombu import pools

    from app.core.celery_app import celery_app, celery_config
    from app.core.settings import get_settings

    celery_app.conf.update(celery_config(url, get_settings().visibility_timeout))  # settings may have changed too
    celery_app.pool.force_close_all()
    celery_app._pool = None
    pools.reset()  # kombu caches producer pools per connection, across apps
    celery_app.__dict__.pop("amqp", None)  # its queues, router and producer pool are cached


@pytest.fixture(autouse=True)
def _back_to_session_broker(broker_url: str) -> Iterator[None]:
    yield
    point_celery_at(broker_url)


def use_broker(stack: Stack, broker: str) -> None:
    """Point this test's workers and its own sends at ``broker`` (state stays in Redis)."""
    if broker == "amqp":
        if not amqp_reachable():
            print("SKIP: no RabbitMQ answers on 127.0.0.1:5672")
            pytest.skip("no RabbitMQ answers on 127.0.0.1:5672")
        stack.env["SCALEJOB_BROKER_URL"] = AMQP_URL
        point_celery_at(AMQP_URL)
    elif stack.broker_url.startswith("amqp"):
        pytest.skip("this test is about the Redis transport; the session broker is RabbitMQ")


def rabbitmq_env(key: str) -> str:
    out = subprocess.run(["rabbitmqctl", "eval", f"application:get_env(rabbit, {key})."], capture_output=True, text=True, timeout=30)
    return out.stdout.strip()


def set_rabbitmq_env(key: str, value: str) -> None:
    """``value`` is what ``get_env`` printed (``{ok,N}`` or ``undefined``): restore it as it was."""
    expr = f"application:unset_env(rabbit, {key})." if value == "undefined" else f"application:set_env(rabbit, {key}, {value.strip('{}').split(',', 1)[1]})."
    subprocess.run(["rabbitmqctl", "eval", expr], capture_output=True, timeout=30, check=True)


@pytest.fixture
def short_consumer_timeout() -> Iterator[None]:
    """RabbitMQ closes channels whose delivery is unacked for 5 s (checked every second)."""
    if not amqp_reachable():
        print("SKIP: no RabbitMQ answers on 127.0.0.1:5672")
        pytest.skip("no RabbitMQ answers on 127.0.0.1:5672")
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("RabbitMQ answers but rabbitmqctl is not installed here: cannot lower consumer_timeout")
    saved = {k: rabbitmq_env(k) for k in ("consumer_timeout", "channel_tick_interval")}
    try:
        set_rabbitmq_env("consumer_timeout", "{ok,5000}")
        set_rabbitmq_env("channel_tick_interval", "{ok,1000}")  # read when a channel opens
        yield
    finally:
        for k, v in saved.items():
            set_rabbitmq_env(k, v)


def starts(stack: Stack, spec: object, name: str = "starts.txt") -> list[str]:
    path = stack.tmp / "data" / "storage" / spec.name / name  # type: ignore[attr-defined]
    return path.read_text().splitlines() if path.exists() else []


def results(stack: Stack, service: str) -> list[object]:
    return [m for m in stack.sink(service) if m.tags["type"] == "result"]


def gone(pids: list[int]) -> bool:
    """True when none of ``pids`` is still a live (non-zombie) process."""
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True


def marked(marker: str) -> list[psutil.Process]:
    """Live processes whose command line carries ``marker``."""
    out = []
    for p in psutil.process_iter(["cmdline", "status"]):
        if p.info["status"] != psutil.STATUS_ZOMBIE and marker in " ".join(p.info["cmdline"] or []):
            out.append(p)
    return out


@pytest.mark.parametrize("where", ["env", "spec"])
def test_visibility_timeout_redelivery_never_runs_a_second_copy(stack: Stack, where: str) -> None:
    """kombu hands the unacked message out again after 3 s; the lease drops that copy."""
    use_broker(stack, "redis")
    if where == "env":
        spec, env = stack.deploy(stack.command_spec()), {"SCALEJOB_VISIBILITY_TIMEOUT": "3"}
    else:  # per-service override: metadata.visibility_timeout, global default left at 24 h
        spec, env = stack.deploy(stack.command_spec(visibility_timeout=3)), {}
    a = stack.start_worker(spec.name, env=env)
    b = stack.start_worker(spec.name, env=env)
    stack.wait_workers(spec.name, 2, "idle")
    rid = stack.put(spec, "command", "echo start >> starts.txt; sleep 12; echo end")
    wait_for(lambda: "a duplicate and is dropped" in a.output() + b.output(), timeout=15, what="the redelivered copy to be dropped")
    rec = stack.wait_done(rid, timeout=30)
    assert rec.state == "succeeded" and rec.attempts == 1, rec
    assert starts(stack, spec) == ["start"]
    wait_for(lambda: len(results(stack, spec.name)) == 1, timeout=5, what="one result message")
    broker = redis.Redis.from_url(stack.broker_url)
    time.sleep(4)  # > visibility timeout: nothing left to restore, nothing runs again
    assert broker.hlen(f"unacked:{spec.name}") == 0 and broker.zcard(f"unacked_index:{spec.name}") == 0
    assert broker.llen(f"scalejob.{spec.name}") == 0
    assert starts(stack, spec) == ["start"] and len(results(stack, spec.name)) == 1
    assert a.alive() and b.alive()


def test_amqp_job_longer_than_consumer_timeout_finishes_and_worker_survives(stack: Stack, short_consumer_timeout: None) -> None:
    use_broker(stack, "amqp")
    spec = stack.deploy(stack.command_spec())
    worker = stack.start_worker(spec.name)
    stack.wait_workers(spec.name, 1, "idle")
    rid = stack.put(spec, "command", "echo start >> starts.txt; sleep 12; echo end")
    rec = stack.wait_done(rid, timeout=40)
    assert rec.state == "succeeded" and rec.attempts == 1, rec
    assert starts(stack, spec) == ["start"]
    wait_for(lambda: len(results(stack, spec.name)) == 1, timeout=5, what="one result message")
    assert worker.alive() and "PRECONDITION_FAILED" not in worker.output()
    # the consumer that was paused while the job ran takes work again
    assert stack.wait_done(stack.put(spec, "command", "echo again"), timeout=20).state == "succeeded"


def test_amqp_idle_first_holds_with_ack_on_start(stack: Stack) -> None:
    """Acking at start frees the prefetch slot; the busy worker must still get nothing more."""
    use_broker(stack, "amqp")
    spec = stack.deploy(stack.command_spec())
    stack.start_worker(spec.name, name=f"{spec.name}-a@test")
    stack.start_worker(spec.name, name=f"{spec.name}-b@test")
    stack.wait_workers(spec.name, 2, "idle")
    long_id = stack.put(spec, "command", "sleep 5")
    busy = wait_for(lambda: (rec := stack.record(long_id)).state == "running" and rec.worker, what="long task start")
    time.sleep(1.5)  # let the early ack reach RabbitMQ: a broken gate would now prefetch to `busy`
    t0 = time.time()
    short = [stack.put(spec, "command", "sleep 0.05") for _ in range(4)]
    recs = [stack.wait_done(rid, timeout=20) for rid in short]
    assert all(r.state == "succeeded" for r in recs)
    assert {r.worker for r in recs} == {f"{spec.name}-a@test", f"{spec.name}-b@test"} - {busy}
    assert max(r.finished_at for r in recs) - t0 < 4.0, "a short task waited behind the long one"
    assert stack.wait_done(long_id, timeout=20).state == "succeeded"


def test_amqp_busy_slots_leave_extra_messages_in_the_broker(stack: Stack) -> None:
    """Two slots, three jobs: the third stays ready in RabbitMQ (not prefetched) until a slot frees."""
    use_broker(stack, "amqp")
    spec = stack.deploy(stack.command_spec(**{"rpc.worker_threads": 2}))
    stack.start_worker(spec.name)
    stack.wait_workers(spec.name, 1, "idle")
    ids = [stack.put(spec, "command", cmd) for cmd in ("sleep 8", "sleep 8", "sleep 0.1")]
    wait_for(lambda: [stack.record(i).state for i in ids] == ["running", "running", "queued"], what="two jobs running")
    time.sleep(1.5)  # the early acks are out: a broken gate would prefetch the third job now

    def ready_and_unacked() -> str:
        out = subprocess.run(["rabbitmqctl", "list_queues", "name", "messages_ready", "messages_unacknowledged"],
                             capture_output=True, text=True, timeout=30).stdout
        return next((line.split("\t", 1)[1] for line in out.splitlines() if line.startswith(f"scalejob.{spec.name}\t")), "")

    # the early acks reach RabbitMQ and the third job stays ready (a broken gate prefetches it: "0\t1")
    wait_for(lambda: ready_and_unacked() == "1\t0", timeout=6, what="2 acked jobs and 1 ready message")
    assert all(stack.wait_done(i, timeout=30).state == "succeeded" for i in ids)


def test_amqp_quorum_queues_on_request(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """SCALEJOB_AMQP_QUORUM=1: service queues are quorum queues; ack-on-start and the gate still hold."""
    from app.core.settings import get_settings

    monkeypatch.setenv("SCALEJOB_AMQP_QUORUM", "1")
    get_settings.cache_clear()
    stack.env["SCALEJOB_AMQP_QUORUM"] = "1"
    use_broker(stack, "amqp")
    spec = stack.deploy(stack.command_spec())
    worker = stack.start_worker(spec.name)
    stack.wait_workers(spec.name, 1, "idle")
    ids = [stack.put(spec, "command", "echo run >> starts.txt; sleep 0.3") for _ in range(3)]
    assert all(stack.wait_done(i, timeout=30).state == "succeeded" for i in ids)
    assert starts(stack, spec) == ["run"] * 3 and worker.alive()
    listed = subprocess.run(["rabbitmqctl", "list_queues", "name", "type"], capture_output=True, text=True, timeout=30).stdout
    assert f"scalejob.{spec.name}\tquorum" in listed


# The first run of the job hangs (until killed); the copy that recovery starts finishes quickly.
RECOVERABLE_JOB = (
    "M={m}; echo start $(date +%s.%N) >> starts.txt; "
    "if [ -f first-run ]; then sleep 0.5; echo done; else touch first-run; "
    "sleep 300.$M & setsid sleep 301.$M & sleep 302.$M; fi"
)


def _run_on_a_then_start_b(stack: Stack) -> tuple[object, object, str, str]:
    spec = stack.deploy(stack.command_spec())
    a = stack.start_worker(spec.name, name=f"{spec.name}-a@test")
    stack.wait_workers(spec.name, 1, "idle")
    marker = uuid.uuid4().hex[:6].translate(str.maketrans("abcdef", "123456"))
    rid = stack.put(spec, "command", RECOVERABLE_JOB.format(m=marker))
    wait_for(lambda: len(marked(f".{marker}")) == 3, what="the job's processes on worker a")
    stack.start_worker(spec.name, name=f"{spec.name}-b@test")
    stack.wait_workers(spec.name, 1, "idle")  # b; a is busy with the job
    return spec, a, rid, marker


def _assert_recovered_on_b(stack: Stack, spec: object, rid: str, killed_at: float) -> None:
    rec = stack.wait_done(rid, timeout=40)
    assert rec.state == "succeeded" and rec.worker == f"{spec.name}-b@test" and rec.attempts == 2, rec  # type: ignore[attr-defined]
    second_start = float(starts(stack, spec)[1].split()[1])
    assert second_start - killed_at <= 15.0, f"kill to restart took {second_start - killed_at:.1f}s"
    wait_for(lambda: len(results(stack, spec.name)) == 1, timeout=5, what="one result message")  # type: ignore[attr-defined]


@pytest.mark.parametrize("broker", BROKERS)
def test_sigkill_of_the_whole_worker_tree_restarts_the_job_on_another_worker(stack: Stack, broker: str) -> None:
    use_broker(stack, broker)
    spec, a, rid, marker = _run_on_a_then_start_b(stack)
    tree = a.tree()  # main process, reaper, shell, sleeps (the setsid one too)
    assert len(tree) >= 5
    for p in tree:
        try:
            p.kill()
        except psutil.NoSuchProcess:  # the reaper may already have ended it
            pass
    killed_at = time.time()
    _assert_recovered_on_b(stack, spec, rid, killed_at)
    assert gone([p.pid for p in tree]) and marked(f".{marker}") == []


def test_sigkill_of_the_worker_main_process_alone_leaves_no_orphan(stack: Stack) -> None:
    spec, a, rid, marker = _run_on_a_then_start_b(stack)
    children = [p.pid for p in a.tree()[1:]]
    assert len(children) >= 4  # reaper, shell, sleep, setsid sleep
    a.signal(9)
    killed_at = time.time()
    wait_for(lambda: gone(children) and marked(f".{marker}") == [], timeout=5, what="the killed worker's command processes to die")
    _assert_recovered_on_b(stack, spec, rid, killed_at)


def test_max_runtime_ends_the_whole_group_and_fails_naming_the_limit(stack: Stack) -> None:
    spec = stack.deploy(stack.command_spec(max_runtime=2))
    worker = stack.start_worker(spec.name, env={"SCALEJOB_STOP_GRACE": "1"})
    marker = uuid.uuid4().hex[:6].translate(str.maketrans("abcdef", "123456"))
    # TERM is ignored by the shell and inherited by its children: only the SIGKILL after the grace ends them
    cmd = f"M={marker}; trap '' TERM; sleep 300.$M & setsid sleep 301.$M & sleep 302.$M"
    rid = stack.put(spec, "command", cmd)
    wait_for(lambda: len(marked(f".{marker}")) == 3, what="the command's processes")
    rec = stack.wait_done(rid, timeout=30)
    assert rec.state == "failed" and "max_runtime of 2s" in rec.error, rec
    assert rec.finished_at - rec.started_at < 10
    wait_for(lambda: marked(f".{marker}") == [], timeout=5, what="every process of the command to be gone")
    assert worker.alive()
    assert [m.tags["state"] for m in stack.sink(spec.name) if m.tags["type"] in ("result", "error")] == ["failed"]


def test_reaper_passes_the_exit_code_through(tmp_path: Path) -> None:
    from workers.command import run_command

    out = run_command("exit 7", tmp_path, dict(os.environ), lambda _l: None, lambda _p: None, lambda: None)
    assert out.exit_code == 7 and out.stopped_reason is None
