"""Kill-to-restart time of a long job whose worker is SIGKILLed, scalejob vs plain Celery.

Each round: two idle workers, one long job (its first run would sleep 300 s), SIGKILL of the
whole process tree of the worker running it, then the time until the job's command starts
again on the other worker (the command writes its own start marks). A fresh worker replaces
the killed one before the next round.

- scalejob, local autoscaler backend (``scalejob autoscale``, min = max = 2, workers forked from
  its template): the backend watches each worker's process (a pidfd) and requeues its requests
  the moment it and every command it started are gone (``autoscale/backends/exits.py``); the
  autoscaler then replaces the worker before the next round.
- scalejob, workers no autoscaler owns (started directly, as on another host), Redis broker and
  RabbitMQ broker: recovery comes from the request lease (``heartbeat_ttl``: its default 5 s, and
  the 2 s floor) and the recovery loop, not from the broker.
- plain Celery acks-late (``benchmarks.plain_app:tuned``, threads pool) on RabbitMQ: the broker
  redelivers as soon as the dead worker's connection closes (fast, but the same setup dies at
  ``consumer_timeout`` on long jobs — see docs/long-running.md).
- plain Celery acks-late + ``task_reject_on_worker_lost`` on Redis: kombu restores the message only
  after ``visibility_timeout`` (kombu's default, 3600 s); reported, not waited for.

Run: ``python -m benchmarks.recovery [--kills 10] [--amqp amqp://guest:guest@127.0.0.1:5672//]``
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
from kombu.transport.redis import Channel as RedisChannel

from benchmarks.common import World, markdown_table, percentile, use_world_in_this_process, world
from tests.helpers import python_argv, wait_for

AMQP = "amqp://guest:guest@127.0.0.1:5672//"


def job(marks: Path, token: str) -> str:
    """A command whose first run hangs and whose second run ends at once; start times in a file."""
    f = marks / token
    return f"echo $(date +%s.%N) >> {f}.starts; if [ -f {f}.first ]; then exit 0; fi; touch {f}.first; sleep 300"


def second_start(marks: Path, token: str, timeout: float) -> float:
    path = marks / f"{token}.starts"

    def read() -> float | None:
        lines = path.read_text().split() if path.exists() else []
        return float(lines[1]) if len(lines) >= 2 else None

    return wait_for(read, timeout, interval=0.02, what=f"job {token} to start again")


def kill_tree(proc: Any) -> None:
    import psutil

    for p in proc.tree():
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def scalejob_rounds(w: World, kills: int) -> list[float]:
    from app.queue.put import put

    spec = w.deploy_command_service("rec")
    marks = w.tmp / "marks"
    marks.mkdir(exist_ok=True)  # called once per lease TTL: tokens are unique
    workers = {n: w.scalejob_worker(spec.name, n) for n in (f"{spec.name}-{i}@bench" for i in range(2))}
    w.wait_scalejob_idle(spec.name, 2)
    times = []
    for i in range(kills):
        token = uuid.uuid4().hex[:8]
        _, rid = put(w.r, spec, "command", job(marks, token).encode())
        from app.queue import records

        holder = wait_for(lambda: (rec := records.get(w.r, rid)) and rec.state == "running" and rec.worker, 30, what="job start")
        wait_for((marks / f"{token}.first").exists, 10, what="first run")
        kill_tree(workers.pop(holder))
        killed = time.time()
        times.append(second_start(marks, token, 60) - killed)
        wait_for(lambda: (rec := records.get(w.r, rid)) and rec.done, 30, what="job end")
        name = f"{spec.name}-{i + 2}@bench"
        workers[name] = w.scalejob_worker(spec.name, name)
        w.wait_scalejob_idle(spec.name, 2)
    for proc in workers.values():  # the next setup starts its own
        w.stop(proc)
    return times


def local_rounds(w: World, kills: int) -> list[float]:
    """Workers of a real ``scalejob autoscale`` (local backend, template forks): SIGKILL of the worker tree."""
    from app.core.specs import parse_spec
    from app.queue import records, services
    from app.queue.put import put
    from app.queue.workers import list_workers

    spec = parse_spec({"metadata": {"name": w.name("reclocal")}, "autoscaler": {"min": 2, "max": 2}})
    services.save(w.r, spec)
    marks = w.tmp / "local-marks"
    marks.mkdir()
    scaler = w._spawn(python_argv("-m", "app.cli", "autoscale"), "autoscaler")
    times = []
    try:
        for _ in range(kills):
            w.wait_scalejob_idle(spec.name, 2)
            token = uuid.uuid4().hex[:8]
            _, rid = put(w.r, spec, "command", job(marks, token).encode())
            holder = wait_for(lambda: (rec := records.get(w.r, rid)) and rec.state == "running" and rec.worker, 30, what="job start")
            wait_for((marks / f"{token}.first").exists, 10, what="first run")
            [pid] = [x.pid for x in list_workers(w.r, spec.name) if x.name == holder]
            main = psutil.Process(pid)
            for p in [main, *main.children(recursive=True)]:  # the whole worker tree, as kill_tree does
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
            killed = time.time()
            times.append(second_start(marks, token, 60) - killed)
            wait_for(lambda: (rec := records.get(w.r, rid)) and rec.done, 30, what="job end")
    finally:
        scaler.signal(signal.SIGTERM)  # warm shutdown of its workers
        scaler.wait(timeout=60)
    return times


def plain_rounds(w: World, kills: int) -> list[float]:
    """Plain Celery acks-late (scalejob's Celery settings, no lease) on the world's broker."""
    from benchmarks import plain_app

    queue = w.name("plainrec")
    marks = w.tmp / "plain-marks"
    marks.mkdir()
    host = socket.gethostname()
    workers = {f"{queue}-{i}": w.plain_worker("tuned", queue, f"{queue}-{i}@%h", pool="threads", same_flags=True) for i in range(2)}
    w.wait_plain_ready([f"{n}@{host}" for n in workers])
    times = []
    for i in range(kills):
        token = uuid.uuid4().hex[:8]
        run = f"rec{token}"
        plain_app.tuned.send_task("bench.timed", args=[run, job(marks, token)], queue=queue)
        wait_for((marks / f"{token}.first").exists, 30, what="first run")
        holder = _holder(workers, token)
        kill_tree(workers.pop(holder))
        killed = time.time()
        times.append(second_start(marks, token, 60) - killed)
        name = f"{queue}-{i + 2}"
        workers[name] = w.plain_worker("tuned", queue, f"{name}@%h", pool="threads", same_flags=True)
        w.wait_plain_ready([f"{name}@{host}"])
    return times


def _holder(workers: dict[str, Any], token: str) -> str:
    """The plain worker whose process tree runs the job (found by the job's command line)."""
    for name, proc in workers.items():
        for p in proc.tree()[1:]:
            try:
                if token in " ".join(p.cmdline()):
                    return name
            except Exception:  # noqa: BLE001 - the process may just have exited
                continue
    raise AssertionError(f"no plain worker runs job {token}")


def summary(times: list[float]) -> tuple[int, float, float, float]:
    return len(times), percentile(times, 50), percentile(times, 95), max(times)


def run(kills: int = 10, amqp: str | None = AMQP) -> dict[str, Any]:
    from app.core.settings import get_settings
    from benchmarks import plain_app

    out: dict[str, Any] = {}
    with world(label="rec") as w:
        out["scalejob, local autoscaler backend, Redis broker"] = summary(local_rounds(w, kills))
        out["scalejob, unowned workers, Redis broker, lease TTL 5 s (default)"] = summary(scalejob_rounds(w, kills))
        os.environ["SCALEJOB_HEARTBEAT_TTL"] = "2"  # the workers' env (World.env reads it); heartbeat derived: 0.5 s
        try:
            out["scalejob, unowned workers, Redis broker, lease TTL 2 s"] = summary(scalejob_rounds(w, kills))
        finally:
            del os.environ["SCALEJOB_HEARTBEAT_TTL"]
        vt_plain = plain_app.defaults.conf.broker_transport_options.get("visibility_timeout", RedisChannel.visibility_timeout)
        out["heartbeat_ttl"] = get_settings().heartbeat_ttl
        out["plain_redis_visibility_timeout"] = vt_plain
        out["scalejob_redis_visibility_timeout"] = get_settings().visibility_timeout
    if amqp:
        with world(label="reca") as w:
            w.broker_url = amqp
            use_world_in_this_process(w.env)
            out["scalejob, local autoscaler backend, RabbitMQ broker"] = summary(local_rounds(w, kills))
            out["scalejob, unowned workers, RabbitMQ broker, lease TTL 5 s (default)"] = summary(scalejob_rounds(w, kills))
            out["plain Celery acks-late + reject_on_worker_lost, RabbitMQ"] = summary(plain_rounds(w, kills))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--amqp", default=AMQP, help="RabbitMQ URL; '' to skip")
    args = ap.parse_args()
    res = run(args.kills, args.amqp or None)
    rows = [[k, *v] for k, v in res.items() if isinstance(v, tuple)]
    rows.append(["plain Celery acks-late + reject_on_worker_lost, Redis (kombu defaults)", "-", f"{res['plain_redis_visibility_timeout']} s",
                 "(visibility_timeout, not waited for)", "-"])
    print(markdown_table(["setup", "kills", "kill→restart p50 (s)", "p95 (s)", "max (s)"], rows))
    print(f"\nscalejob heartbeat_ttl = {res['heartbeat_ttl']} s; scalejob Redis visibility_timeout = {res['scalejob_redis_visibility_timeout']} s")


if __name__ == "__main__":
    main()
